"""Live feeds for browsers: supervisors see every call, a collector sees only their own.

Besides the bus's events (``GET /api/events/schema``) a feed may send ``{"type": "events_missed", "missed": n,
"ts": ...}``: this browser was too slow and the bus dropped ``n`` events meant for it. The page says so and
back-fills from REST (the console: ``/api/calls``, ``/api/alerts``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from compliance_monitor.api.auth import accept_protocol, authorize_ws
from compliance_monitor.api.deps import get_monitor
from compliance_monitor.bus.memory import EventFilter
from compliance_monitor.ingest.base import CloseCode

router = APIRouter()


@router.websocket("/ws/console")
async def console_feed(ws: WebSocket) -> None:
    if await authorize_ws(ws, "/ws/console") is None:
        await ws.close(CloseCode.POLICY_VIOLATION, "supervisor or auditor login required")
        return
    await _stream(ws, lambda event: True)


@router.websocket("/ws/agents/{agent_id}")
async def agent_feed(ws: WebSocket, agent_id: str) -> None:
    principal = await authorize_ws(ws, "/ws/agents/{agent_id}")
    own = principal is not None and principal.role == "collector" and principal.agent_id == agent_id
    if principal is None or not (own or principal.can("supervisor")):
        await ws.close(CloseCode.POLICY_VIOLATION, "a collector may only follow their own calls")
        return
    await _stream(ws, lambda event: event.agent_id == agent_id)


async def _stream(ws: WebSocket, accept: EventFilter) -> None:
    """One task sends bus events, one reads the socket (to notice the close); either ends both."""
    bus = get_monitor(ws).services.bus
    await ws.accept(subprotocol=accept_protocol(ws))
    subscription = bus.subscribe(accept)

    async def send() -> None:
        told = 0  # events dropped for this subscriber that the browser has been told about
        async for event in subscription:
            if subscription.dropped > told:
                missed, told = subscription.dropped - told, subscription.dropped
                notice = {"type": "events_missed", "call_id": "", "missed": missed, "ts": time.time()}
                await ws.send_text(json.dumps(notice))
            await ws.send_text(event.model_dump_json())

    async def receive() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await ws.receive_text()  # clients may send pings; nothing else is expected

    tasks = [asyncio.create_task(send()), asyncio.create_task(receive())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        subscription.close()
