"""A console too slow for the bus is told how many events it missed (then back-fills from REST)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from compliance_monitor.api.console import _stream
from compliance_monitor.bus.memory import InMemoryBus
from compliance_monitor.messages import CallStartedEvent, Speaker, TranscriptEvent

pytestmark = pytest.mark.unit


class SlowSocket:
    """Holds its first send until released, as a browser on a bad link would."""

    def __init__(self, bus: InMemoryBus) -> None:
        self.app = SimpleNamespace(state=SimpleNamespace(monitor=SimpleNamespace(services=SimpleNamespace(bus=bus))))
        self.scope: dict[str, Any] = {"subprotocols": []}
        self.sent: list[dict[str, Any]] = []
        self.release = asyncio.Event()
        self.subscribed = asyncio.Event()
        self.held = asyncio.Event()  # the first send is waiting
        self.enough = asyncio.Event()  # seven messages arrived

    async def accept(self, subprotocol: str | None = None) -> None:
        self.subscribed.set()

    async def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))
        if len(self.sent) == 1:
            self.held.set()
            await self.release.wait()
        if len(self.sent) >= 7:
            self.enough.set()

    async def receive_text(self) -> str:
        await asyncio.Event().wait()  # the browser never writes
        return ""


def _said(n: int) -> TranscriptEvent:
    return TranscriptEvent(call_id="c1", speaker=Speaker.AGENT, segment_no=n, text="好", t0=n, t1=n + 1, final=True)


async def test_a_slow_console_is_told_how_many_events_it_missed() -> None:
    bus = InMemoryBus(subscriber_queue_size=5)
    ws = SlowSocket(bus)
    feed = asyncio.create_task(_stream(ws, lambda event: True))  # type: ignore[arg-type]
    await ws.subscribed.wait()
    await asyncio.sleep(0)
    await bus.publish(CallStartedEvent(call_id="c1", bridge="pcm", speakers=[Speaker.AGENT]))
    await ws.held.wait()  # the sender holds the start event; the queue (5) fills behind it
    for n in range(12):
        await bus.publish(_said(n))
    ws.release.set()
    await asyncio.wait_for(ws.enough.wait(), 10)
    feed.cancel()
    await asyncio.gather(feed, return_exceptions=True)

    kinds = [e["type"] for e in ws.sent]
    assert kinds[:2] == ["call_started", "events_missed"]
    assert ws.sent[1]["missed"] == 7  # 12 published into a queue of 5
    assert [e["segment_no"] for e in ws.sent[2:]] == [7, 8, 9, 10, 11]
