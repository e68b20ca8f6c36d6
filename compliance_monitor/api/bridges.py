"""Bridge websocket endpoints: the connection loop shared by every protocol adapter."""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from compliance_monitor.api.auth import bridge_allowed
from compliance_monitor.api.deps import get_monitor
from compliance_monitor.ingest.base import CloseCode, ProtocolError
from compliance_monitor.ingest.pcm import PcmStreamParser
from compliance_monitor.ingest.twilio import TwilioStreamParser
from compliance_monitor.messages import AudioChunk, CallEnded, CallStarted
from compliance_monitor.pipeline import CallSession

log = logging.getLogger(__name__)
router = APIRouter()

Parser = TwilioStreamParser | PcmStreamParser


class WebSocketCallControl:
    """Halting a call whose audio arrives on this websocket.

    PCM bridges get ``{"event": "halt"}`` and then the close. A Twilio media stream cannot end the
    phone call itself (that is Twilio's REST API: Calls/{CallSid} Status=completed); closing the
    stream is what this endpoint can do, and the halt is archived for the telephony side.
    """

    def __init__(self, ws: WebSocket, bridge: str) -> None:
        self.ws = ws
        self.bridge = bridge
        self.session: CallSession | None = None

    async def halt(self, reason: str) -> bool:
        if not _open(self.ws):
            return False
        if self.bridge == "pcm":
            await self.ws.send_text(json.dumps({"event": "halt", "reason": reason}, ensure_ascii=False))
        await self.ws.close(CloseCode.NORMAL, "halted")
        if self.session:
            self.session.end_input("halted")
        return True

    async def fail(self, error: ProtocolError) -> None:
        if not _open(self.ws):
            return
        if self.bridge == "pcm":
            await self.ws.send_text(json.dumps({"event": "error", "code": error.code, "message": error.message}))
        await self.ws.close(error.close_code, error.code[:120])


def _open(ws: WebSocket) -> bool:
    """Neither side has closed: we may still send."""
    return ws.application_state is WebSocketState.CONNECTED and ws.client_state is WebSocketState.CONNECTED


@router.websocket("/bridge/twilio")
async def twilio_bridge(ws: WebSocket) -> None:
    monitor = get_monitor(ws)
    await serve_bridge(ws, TwilioStreamParser(monitor.services.settings.ingest.max_sequence_gap))


@router.websocket("/bridge/pcm")
async def pcm_bridge(ws: WebSocket) -> None:
    await serve_bridge(ws, PcmStreamParser())


async def serve_bridge(ws: WebSocket, parser: Parser) -> None:
    monitor = get_monitor(ws)
    settings = monitor.services.settings
    if not bridge_allowed(ws, settings):
        await ws.close(CloseCode.POLICY_VIOLATION, "bridge token required")
        return
    await ws.accept()
    control = WebSocketCallControl(ws, parser.bridge)
    session: CallSession | None = None
    reason = "hangup"
    try:
        while not parser.ended:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            text, data = message.get("text"), message.get("bytes")
            size = len(data) if data is not None else len(text.encode()) if text is not None else 0
            if size > settings.ingest.max_message_bytes:
                raise ProtocolError(
                    "message_too_big", f"{size} bytes > {settings.ingest.max_message_bytes}", CloseCode.MESSAGE_TOO_BIG
                )
            for item in parser.feed_text(text) if text is not None else parser.feed_bytes(data or b""):
                if isinstance(item, CallStarted):
                    session = control.session = await monitor.open_call(item, control)
                elif isinstance(item, AudioChunk) and session is not None:
                    await session.push(item)
                elif isinstance(item, CallEnded):
                    reason = item.reason
    except ProtocolError as error:
        reason = f"protocol_error:{error.code}"
        log.warning("bridge %s call %s: %s", parser.bridge, parser.call_id or "-", error)
        await control.fail(error)
    except WebSocketDisconnect:
        reason = "hangup"
    finally:
        if session is not None:
            session.end_input(reason)  # audio already accepted is still transcribed and checked
        if _open(ws):
            await ws.close(CloseCode.NORMAL)
