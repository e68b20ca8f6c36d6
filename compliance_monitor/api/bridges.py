"""Bridge websocket endpoints: a websocket ``Transport`` for the shared connection loop.

Everything protocol-independent (deadlines, limits, close codes, counters, registering and always
releasing the call) lives in ``ingest/connection.py`` and ``monitor.Monitor.live_call``, so a new
bridge (AudioSocket: telephony/audiosocket.py) implements a transport, a parser and its CallControl.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from compliance_monitor.api.auth import authorize_ws, bridge_allowed
from compliance_monitor.api.deps import get_monitor
from compliance_monitor.ingest.base import CloseCode, ProtocolError, StreamLimits
from compliance_monitor.ingest.connection import Message, Parser, serve_connection
from compliance_monitor.ingest.freeswitch import SUBPROTOCOL, AudioForkParser
from compliance_monitor.ingest.pcm import PcmStreamParser
from compliance_monitor.ingest.twilio import TwilioStreamParser
from compliance_monitor.messages import ControlResult, Outcome
from compliance_monitor.telephony.esl import EslClient
from compliance_monitor.telephony.twilio_api import TwilioApi

log = logging.getLogger(__name__)
router = APIRouter()

# What sending to a peer that has just gone raises (starlette after a close; uvicorn's ClientDisconnected).
_PEER_GONE = (WebSocketDisconnect, RuntimeError, OSError)


class WebSocketBridge:
    """The websocket side of one bridge connection: its transport, and its ``CallControl``.

    PCM bridges (our own protocol) get ``{"event": "halt"}``, ``{"event": "warn_agent"}`` and
    ``{"event": "error"}`` messages: the client owns the phone call and acts on them.
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

    async def hangup(self, reason: str) -> ControlResult:
        if not await self._send({"event": "halt", "reason": reason}):
            return ControlResult(Outcome.FAILED, "the bridge is not connected")
        await self.close(CloseCode.NORMAL, "halted")
        return ControlResult(Outcome.DONE, "halt sent to the bridge")

    async def warn_agent(self, prompt: str) -> ControlResult:
        if not await self._send({"event": "warn_agent", "prompt": prompt}):
            return ControlResult(Outcome.FAILED, "the bridge is not connected")
        return ControlResult(Outcome.DONE, "prompt sent to the bridge")

    async def lost(self, reason: str) -> None:
        await self.fail(ProtocolError("monitoring_lost", reason, CloseCode.INTERNAL_ERROR))

    async def fail(self, error: ProtocolError) -> None:
        await self._send({"event": "error", "code": error.code, "message": error.message})
        await self.close(error.close_code, error.code)

    async def close(self, code: int, reason: str = "") -> None:
        if _open(self.ws):
            with contextlib.suppress(*_PEER_GONE):
                await self.ws.close(code, reason[:120])

    async def _send(self, message: dict[str, str]) -> bool:
        """PCM bridges only (Twilio would refuse unknown events); False when the peer is gone."""
        if not _open(self.ws):
            return False
        if self.bridge == "pcm":
            try:
                await self.ws.send_text(json.dumps(message, ensure_ascii=False))
            except _PEER_GONE:
                return False
        return True


class TwilioBridge(WebSocketBridge):
    """A Twilio media stream. The stream cannot end the call: a halt goes through Twilio's REST API
    (Calls/{CallSid} Status=completed), then the stream is closed. A plain stream cannot whisper to the
    collector either (that takes a conference with ``coaching``): ``warn_agent`` is not supported."""

    def __init__(self, ws: WebSocket, parser: TwilioStreamParser, api: TwilioApi) -> None:
        super().__init__(ws, parser.bridge)
        self.parser = parser
        self.api = api

    async def hangup(self, reason: str) -> ControlResult:
        if self.parser.call_id is None:
            return ControlResult(Outcome.FAILED, "no callSid yet")
        result = await self.api.complete_call(self.parser.call_id)
        if result.outcome is Outcome.DONE:
            await self.close(CloseCode.NORMAL, "halted")
        return result

    async def warn_agent(self, prompt: str) -> ControlResult:
        return ControlResult(
            Outcome.NOT_SUPPORTED, "a Twilio media stream cannot play audio to the collector alone (on-screen only)"
        )


class FreeSwitchBridge(WebSocketBridge):
    """A mod_audio_fork stream: halts with ESL ``uuid_kill`` on the forked channel, warns with
    ``uuid_broadcast <agent_uuid> <esl.warn_sound> aleg`` (only the collector's leg hears it)."""

    def __init__(self, ws: WebSocket, parser: AudioForkParser, esl: EslClient) -> None:
        super().__init__(ws, parser.bridge)
        self.parser = parser
        self.esl = esl

    async def hangup(self, reason: str) -> ControlResult:
        if self.parser.fs_uuid is None:
            return ControlResult(Outcome.FAILED, "no channel uuid yet")
        result = await self.esl.kill(self.parser.fs_uuid)
        if result.outcome is Outcome.DONE:
            await self.close(CloseCode.NORMAL, "halted")
        return result

    async def warn_agent(self, prompt: str) -> ControlResult:
        if self.parser.agent_uuid is None:
            return ControlResult(Outcome.NOT_SUPPORTED, "the metadata named no agent_uuid to whisper to")
        return await self.esl.whisper(self.parser.agent_uuid, self.esl.settings.warn_sound)


def _open(ws: WebSocket) -> bool:
    """Neither side has closed: we may still send."""
    return ws.application_state is WebSocketState.CONNECTED and ws.client_state is WebSocketState.CONNECTED


@router.websocket("/bridge/twilio")
async def twilio_bridge(ws: WebSocket) -> None:
    settings = get_monitor(ws).services.settings
    api = TwilioApi(settings.twilio)
    parser = TwilioStreamParser(settings.ingest.max_sequence_gap, StreamLimits.from_settings(settings.ingest))
    if settings.twilio.auth_token is not None:
        # Twilio signs the upgrade; a valid signature is the authentication (Twilio sends no bearer token).
        url = twilio_url(ws, settings.twilio.public_url)
        if not api.signature_valid(url, ws.headers.get("x-twilio-signature")):
            await _refuse(ws, parser.bridge, "bad_signature", "invalid X-Twilio-Signature")
            return
        await _accept_and_serve(ws, parser, TwilioBridge(ws, parser, api))
        return
    await serve_bridge(ws, parser, TwilioBridge(ws, parser, api))


def twilio_url(ws: WebSocket, public_url: str | None) -> str:
    """The URL Twilio signed: the wss URL it was given, query included (behind a proxy: ``twilio.public_url``)."""
    query = ws.url.query
    if public_url:
        base = public_url
    else:
        proto = ws.headers.get("x-forwarded-proto", ws.url.scheme)
        scheme = "wss" if proto in ("https", "wss") else "ws"
        host = ws.headers.get("x-forwarded-host") or ws.headers.get("host") or ws.url.netloc
        base = f"{scheme}://{host}{ws.url.path}"
    return f"{base}?{query}" if query else base


@router.websocket("/bridge/freeswitch")
async def freeswitch_bridge(ws: WebSocket) -> None:
    """mod_audio_fork: ``ws://user:token@host/bridge/freeswitch?mix=stereo&rate=8k`` (Basic auth or bearer)."""
    settings = get_monitor(ws).services.settings
    query = ws.query_params
    parser = AudioForkParser(
        query.get("mix", "mono"), query.get("rate", "8000"), StreamLimits.from_settings(settings.ingest)
    )
    if not (await _is_bridge(ws) or _basic_password_allowed(ws, settings)):
        await _refuse(ws, parser.bridge, "unauthorized", "bridge token required")
        return
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",")]
    bridge = FreeSwitchBridge(ws, parser, EslClient(settings.esl))
    await _accept_and_serve(ws, parser, bridge, SUBPROTOCOL if SUBPROTOCOL in offered else None)


def _basic_password_allowed(ws: WebSocket, settings: Any) -> bool:
    """mod_audio_fork's MOD_AUDIO_BASIC_AUTH_*: HTTP Basic whose password is the bridge token."""
    header = ws.headers.get("authorization", "")
    expected = settings.auth.bridge_token
    if expected is None or not header.lower().startswith("basic "):
        return False
    try:
        password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")[2]
    except (ValueError, UnicodeDecodeError):
        return False
    return hmac.compare_digest(password.encode(), expected.get_secret_value().encode())


@router.websocket("/bridge/pcm")
async def pcm_bridge(ws: WebSocket) -> None:
    await serve_bridge(ws, PcmStreamParser(StreamLimits.from_settings(get_monitor(ws).services.settings.ingest)))


async def _is_bridge(ws: WebSocket) -> bool:
    principal = await authorize_ws(ws, ws.scope["route"].path if "route" in ws.scope else ws.url.path)
    # A configured bridge token is required even while auth is otherwise off (as before issue 18).
    if principal is not None and principal.via == "auth-off" and get_monitor(ws).services.settings.auth.bridge_token:
        principal = None
    return bridge_allowed(principal)


async def serve_bridge(ws: WebSocket, parser: Parser, bridge: WebSocketBridge | None = None) -> None:
    if not await _is_bridge(ws):
        await _refuse(ws, parser.bridge, "unauthorized", "bridge token required")
        return
    await _accept_and_serve(ws, parser, bridge or WebSocketBridge(ws, parser.bridge))


async def _accept_and_serve(
    ws: WebSocket, parser: Parser, bridge: WebSocketBridge, subprotocol: str | None = None
) -> None:
    await ws.accept(subprotocol=subprotocol)
    await serve_connection(get_monitor(ws), bridge, parser, bridge)


async def _refuse(ws: WebSocket, bridge: str, code: str, reason: str) -> None:
    stats = get_monitor(ws).bridge_stats
    stats.connections += 1
    stats.rejected[code] += 1
    stats.close_codes[CloseCode.POLICY_VIOLATION] += 1
    log.warning("bridge %s: connection refused: %s", bridge, reason)
    await ws.close(CloseCode.POLICY_VIOLATION, reason)
