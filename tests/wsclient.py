"""A real websocket client for the console feeds, used by the end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import websockets

Event = dict[str, Any]


class FeedRecorder:
    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[Event] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._ws: websockets.ClientConnection | None = None

    async def _read(self) -> None:
        assert self._ws is not None
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in self._ws:
                async with self._changed:
                    self.events.append(json.loads(message))
                    self._changed.notify_all()

    def for_call(self, call_id: str, type_: str | None = None) -> list[Event]:
        return [e for e in self.events if e["call_id"] == call_id and (type_ is None or e["type"] == type_)]

    async def wait_for(self, predicate: Callable[[list[Event]], bool], within_s: float = 60) -> list[Event]:
        async def until() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self.events))

        await asyncio.wait_for(until(), within_s)
        return self.events

    async def wait_call_ended(self, call_id: str, within_s: float = 90) -> list[Event]:
        await self.wait_for(lambda ev: any(e["type"] == "call_ended" and e["call_id"] == call_id for e in ev), within_s)
        return self.for_call(call_id)


@contextlib.asynccontextmanager
async def record_feed(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[FeedRecorder]:
    recorder = FeedRecorder(url)
    async with websockets.connect(url, additional_headers=headers or {}) as ws:
        recorder._ws = ws
        recorder._task = asyncio.create_task(recorder._read())
        try:
            yield recorder
        finally:
            recorder._task.cancel()
            await asyncio.gather(recorder._task, return_exceptions=True)
