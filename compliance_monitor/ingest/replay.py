"""Bridge client: stream a wav file into the monitor exactly as a telephony bridge would.

Stereo files map channel 0 → agent and channel 1 → customer. Twilio mode sends both tracks as
interleaved ``media`` messages (outbound = agent, inbound = customer), 20 ms of 8 kHz μ-law each;
PCM mode sends a JSON start and then interleaved s16le frames. Paced at real time unless told
otherwise (``speed`` > 1 plays faster, 0 = as fast as possible).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import websockets

from compliance_monitor.audio.g711 import ulaw_encode
from compliance_monitor.audio.resample import float_to_pcm16, resample
from compliance_monitor.audio.wavfile import read_wav

FRAME_S = 0.02


@dataclass
class ReplayResult:
    call_id: str
    frames_sent: int = 0
    audio_s: float = 0.0
    closed_code: int | None = None
    server_messages: list[dict[str, object]] = field(default_factory=list)
    ended_at: float = 0.0  # time.time() when the last frame was sent


async def _paced(n_frames: int, speed: float) -> AsyncIterator[int]:
    start = time.monotonic()
    for i in range(n_frames):
        if speed > 0:
            delay = start + i * FRAME_S / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        yield i


async def replay(
    path: Path,
    url: str,
    *,
    bridge: str = "twilio",
    speed: float = 1.0,
    call_id: str | None = None,
    agent_id: str = "A1001",
    token: str | None = None,
    tail_silence_s: float = 0.0,
) -> ReplayResult:
    audio, rate = read_wav(path)
    return await replay_audio(
        audio,
        rate,
        url,
        bridge=bridge,
        speed=speed,
        call_id=call_id,
        agent_id=agent_id,
        token=token,
        tail_silence_s=tail_silence_s,
    )


async def replay_audio(
    audio: np.ndarray,
    rate: int,
    url: str,
    *,
    bridge: str = "twilio",
    speed: float = 1.0,
    call_id: str | None = None,
    agent_id: str = "A1001",
    token: str | None = None,
    tail_silence_s: float = 0.0,
) -> ReplayResult:
    """As ``replay``, for audio already in memory: float32 (frames, channels) at ``rate``."""
    if tail_silence_s > 0:
        audio = np.concatenate([audio, np.zeros((int(tail_silence_s * rate), audio.shape[1]), np.float32)])
    call_id = call_id or f"CA{uuid.uuid4().hex}"
    result = ReplayResult(call_id)
    async with websockets.connect(url, max_size=2**20, additional_headers=_bearer(token)) as ws:
        listener = asyncio.create_task(_listen(ws, result))
        try:
            if bridge == "twilio":
                await _send_twilio(ws, audio, rate, call_id, agent_id, speed, result)
            elif bridge == "pcm":
                await _send_pcm(ws, audio, rate, call_id, agent_id, speed, result)
            else:
                raise ValueError(f"unknown bridge {bridge!r}: twilio or pcm")
        except websockets.ConnectionClosed:
            pass  # the server halted or rejected the call; the close code says which
        result.ended_at = time.time()
        await asyncio.wait_for(listener, timeout=10)
    return result


async def _listen(ws: websockets.ClientConnection, result: ReplayResult) -> None:
    try:
        async for message in ws:
            if isinstance(message, str):
                result.server_messages.append(json.loads(message))
    except websockets.ConnectionClosed:
        pass
    result.closed_code = ws.close_code


async def _send_twilio(
    ws: websockets.ClientConnection,
    audio: np.ndarray,
    rate: int,
    call_id: str,
    agent_id: str,
    speed: float,
    result: ReplayResult,
) -> None:
    stereo = audio.shape[1] >= 2
    tracks = {"outbound": audio[:, 0], "inbound": audio[:, 1]} if stereo else {"inbound": audio[:, 0]}
    mulaw = {t: ulaw_encode(float_to_pcm16(resample(a, rate, 8000))) for t, a in tracks.items()}
    stream_sid = f"MZ{uuid.uuid4().hex}"
    seq = 1
    agent_track = "outbound" if stereo else "inbound"

    async def send(obj: dict[str, object]) -> None:
        nonlocal seq
        await ws.send(json.dumps({**obj, "sequenceNumber": str(seq)}))
        seq += 1

    await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await send(
        {
            "event": "start",
            "streamSid": stream_sid,
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": stream_sid,
                "callSid": call_id,
                "tracks": list(mulaw),
                "customParameters": {"agent_id": agent_id, "agent_track": agent_track},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )
    n = max(len(b) for b in mulaw.values()) // 160
    async for i in _paced(n, speed):
        for track, data in mulaw.items():
            payload = data[i * 160 : (i + 1) * 160]
            await send(
                {
                    "event": "media",
                    "streamSid": stream_sid,
                    "media": {
                        "track": track,
                        "chunk": str(i + 1),
                        "timestamp": str(i * 20),
                        "payload": base64.b64encode(payload).decode(),
                    },
                }
            )
            result.frames_sent += 1
        result.audio_s = (i + 1) * FRAME_S
    await send({"event": "stop", "streamSid": stream_sid, "stop": {"accountSid": "AC" + "0" * 32, "callSid": call_id}})


async def _send_pcm(
    ws: websockets.ClientConnection,
    audio: np.ndarray,
    rate: int,
    call_id: str,
    agent_id: str,
    speed: float,
    result: ReplayResult,
) -> None:
    channels = min(2, audio.shape[1])
    await ws.send(
        json.dumps(
            {
                "event": "start",
                "call_id": call_id,
                "agent_id": agent_id,
                "sample_rate": rate,
                "channels": channels,
                "encoding": "s16le",
                "channel_map": ["agent", "customer"][:channels],
            }
        )
    )
    pcm = float_to_pcm16(audio[:, :channels])
    per_frame = int(rate * FRAME_S)
    n = -(-len(pcm) // per_frame)
    async for i in _paced(n, speed):
        await ws.send(pcm[i * per_frame : (i + 1) * per_frame].astype("<i2").tobytes())
        result.frames_sent += 1
        result.audio_s = min(len(pcm), (i + 1) * per_frame) / rate
    await ws.send(json.dumps({"event": "stop"}))


def console_url(bridge_url: str) -> str:
    """The supervisor feed of the monitor a bridge URL points at: ws://h:p/bridge/twilio → ws://h:p/ws/console."""
    base = bridge_url.split("?", 1)[0]
    head, sep, _ = base.rpartition("/bridge/")
    if not sep:
        raise ValueError(f"not a bridge URL (…/bridge/twilio or …/bridge/pcm): {bridge_url}")
    return f"{head}/ws/console"


WATCHED = ("finding", "finding_withdrawn", "action", "call_ended")


def _bearer(token: str | None) -> dict[str, str]:
    """Credentials go in the Authorization header, never in the URL (where access logs keep them)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


async def watch_call(
    url: str,
    call_id: str,
    on_event: Callable[[dict[str, Any]], None],
    *,
    token: str | None = None,
    connected: asyncio.Event | None = None,
) -> int | None:
    """Pass each finding, withdrawal and action of ``call_id`` on the console feed at ``url`` to ``on_event``;
    return after the call's ``call_ended`` (None), or the close code when the feed closes first (e.g. 1008: a
    supervisor token is required). ``connected`` is set once subscribed. Cancel it to stop watching earlier."""
    async with websockets.connect(url, max_size=2**22, additional_headers=_bearer(token)) as ws:
        if connected is not None:
            connected.set()
        try:
            async for message in ws:
                event = json.loads(message)
                if event.get("call_id") != call_id or event.get("type") not in WATCHED:
                    continue
                on_event(event)
                if event["type"] == "call_ended":
                    return None
        except websockets.ConnectionClosed:
            pass
        return ws.close_code


def describe_event(event: dict[str, Any]) -> str:
    """One line for a person reading a terminal: what was found, where, and under which rule and source."""
    kind = event.get("type")
    if kind == "finding":
        line = (
            f"  finding  {event['t0']:7.1f}s {event['speaker']:<8} {event['category']}/{event['severity']}"
            f"  {event['rule_id']} ({event['source']})"
        )
        if event.get("matched_text"):
            line += f"  「{event['matched_text']}」"
        line += f"\n           {event['explanation']}"
        if event.get("rule_source"):
            line += f"\n           依据: {event['rule_source']}"
        return line
    if kind == "finding_withdrawn":
        return f"  withdrawn finding {event['finding_id']}: {event['reason']}"
    if kind == "action":
        return f"  action   {event['action']}: {event['reason']}"
    if kind == "call_ended":
        return f"  call ended: {event['reason']}"
    return f"  {kind}"
