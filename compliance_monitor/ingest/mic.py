"""Microphone source: capture a local input device with sounddevice and stream it to the PCM bridge.

For trying the monitor live (a collector's headset, a desk phone's line-out into a sound card).
The PortAudio callback runs on its own thread; frames cross to the event loop through a bounded
queue, and a full queue drops the oldest audio (counted) rather than blocking the audio thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass

import numpy as np
import websockets

log = logging.getLogger(__name__)

RATE = 16_000
BLOCK = 320  # 20 ms


@dataclass
class MicStats:
    frames_sent: int = 0
    frames_dropped: int = 0


def _sounddevice():  # type: ignore[no-untyped-def]
    try:
        import sounddevice
    except OSError as exc:  # PortAudio missing: sounddevice raises at import
        raise RuntimeError("microphone capture needs PortAudio: apt-get install libportaudio2") from exc
    return sounddevice


async def stream_microphone(
    url: str,
    *,
    device: str | int | None = None,
    call_id: str | None = None,
    agent_id: str = "A1001",
    speaker: str = "agent",
    seconds: float | None = None,
) -> MicStats:
    sd = _sounddevice()
    loop = asyncio.get_running_loop()
    frames: asyncio.Queue[bytes] = asyncio.Queue(maxsize=250)
    stats = MicStats()

    def offer(data: bytes) -> None:
        if frames.full():
            frames.get_nowait()
            stats.frames_dropped += 1
        frames.put_nowait(data)

    def callback(indata: np.ndarray, n: int, time_info: object, status: object) -> None:
        if status:
            log.warning("microphone: %s", status)
        loop.call_soon_threadsafe(offer, indata[:, 0].astype("<i2").tobytes())

    start = {
        "event": "start",
        "call_id": call_id or f"mic-{uuid.uuid4().hex[:12]}",
        "agent_id": agent_id,
        "sample_rate": RATE,
        "channels": 1,
        "encoding": "s16le",
        "channel_map": [speaker],
    }
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps(start))
        with sd.InputStream(
            samplerate=RATE, blocksize=BLOCK, channels=1, dtype="int16", device=device, callback=callback
        ):
            limit = None if seconds is None else int(seconds * RATE / BLOCK)
            while limit is None or stats.frames_sent < limit:
                await ws.send(await frames.get())
                stats.frames_sent += 1
        await ws.send(json.dumps({"event": "stop"}))
    return stats
