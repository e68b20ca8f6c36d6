"""Bridge websocket endpoints: a websocket ``Transport`` for the shared connection loop.

Everything protocol-independent (deadlines, limits, close codes, counters, registering and always
releasing the call) lives in ``ingest/connection.py`` and ``monitor.Monitor.live_call``, so a new
bridge (issue 17: AudioSocket, FreeSWITCH) implements a transport and a parser and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from compliance_monitor.api.auth import bridge_allowed
from compliance_monitor.api.deps import get_monitor
from compliance_monitor.ingest.base import CloseCode, ProtocolError, StreamLimits
from compliance_monitor.ingest.connection import Message, Parser, serve_connection
from compliance_monitor.ingest.pcm import PcmStreamParser
from compliance_monitor.ingest.twilio import TwilioStreamParser

log = logging.getLogger(__name__)
router = APIRouter()

# What sending to a peer that has just gone raises (starlette after a close; uvicorn's ClientDisconnected).
_PEER_GONE = (WebSocketDisconnect, RuntimeError, OSError)


class WebSocketBridge:
    """The websocket side of one bridge connection: its transport, and halting its call.

    PCM bridges get ``{"event": "halt"}`` / ``{"event": "error"}`` before the close. A Twilio media
    stream cannot end the phone call itself (that is Twilio's REST API: Calls/{CallSid}
    Status=completed); closing the stream is what this endpoint can do, and the halt is archived.
    """

    def __init__(self, ws: WebSocket, bridge: str) -> None:
        self.ws = ws
        self.bridge = bridge

    async def receive(self) -> Message | None:
        if not _open(self.ws):
            return None
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        return text if text is not None else message.get("bytes") or b""

    async def halt(self, reason: str) -> bool:
        if not _open(self.ws):
            return False
        if self.bridge == "pcm":
            with contextlib.suppress(*_PEER_GONE):  # the peer may be gone mid-send; the close below still runs
                await self.ws.send_text(json.dumps({"event": "halt", "reason": reason}, ensure_ascii=False))
        await self.close(CloseCode.NORMAL, "halted")
        return True

    async def fail(self, error: ProtocolError) -> None:
        if self.bridge == "pcm" and _open(self.ws):
            with contextlib.suppress(*_PEER_GONE):  # the peer may be gone mid-send; the close below says it
                await self.ws.send_text(json.dumps({"event": "error", "code": error.code, "message": error.message}))
        await self.close(error.close_code, error.code)

    async def close(self, code: int, reason: str = "") -> None:
        if _open(self.ws):
            with contextlib.suppress(*_PEER_GONE):
                await self.ws.close(code, reason[:120])


def _open(ws: WebSocket) -> bool:
    """Neither side has closed: we may still send."""
    return ws.application_state is WebSocketState.CONNECTED and ws.client_state is WebSocketState.CONNECTED


@router.websocket("/bridge/twilio")
async def twilio_bridge(ws: WebSocket) -> None:
    ingest = get_monitor(ws).services.settings.ingest
    await serve_bridge(ws, TwilioStreamParser(ingest.max_sequence_gap, StreamLimits.from_settings(ingest)))


@router.websocket("/bridge/pcm")
async def pcm_bridge(ws: WebSocket) -> None:
    await serve_bridge(ws, PcmStreamParser(StreamLimits.from_settings(get_monitor(ws).services.settings.ingest)))


async def serve_bridge(ws: WebSocket, parser: Parser) -> None:
    monitor = get_monitor(ws)
    if not bridge_allowed(ws, monitor.services.settings):
        stats = monitor.bridge_stats
        stats.connections += 1
        stats.rejected["unauthorized"] += 1
        stats.close_codes[CloseCode.POLICY_VIOLATION] += 1
        log.warning("bridge %s: connection without a valid bridge token refused", parser.bridge)
        await ws.close(CloseCode.POLICY_VIOLATION, "bridge token required")
        return
    await ws.accept()
    bridge = WebSocketBridge(ws, parser.bridge)
    await serve_connection(monitor, bridge, parser, bridge)
