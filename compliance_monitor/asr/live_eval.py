"""The live path measured as a user meets it: each clip streamed over a real bridge into a running monitor.

Telephone band = the Twilio bridge (8 kHz μ-law, one track), clean = the PCM bridge (16 kHz s16le), both at
``speed`` × real time with the served settings; the console websocket is read like a browser would and each
call's final transcripts are joined in order. Besides CER this counts what a supervisor would miss:

- lost: a clip whose finals hold under half of the reference's characters (nothing heard, or most of it dropped);
- withdrawn: findings raised on a partial that the final did not bear out;
- decode time per final segment: from the segment's end (VAD) to its final transcript (queue wait + decode).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets

from compliance_monitor.asr.scoring import Clip, Scored, score
from compliance_monitor.ingest.replay import replay_audio

BRIDGE_FOR = {"telephone": "twilio", "clean": "pcm"}  # the bridge that delivers each condition
TAIL_SILENCE_S = 1.0  # the caller stays on the line a moment after the last word
END_WAIT_S = 60.0


@dataclass
class Heard:
    """What the console showed for one streamed clip."""

    finals: list[dict[str, Any]] = field(default_factory=list)
    withdrawn: int = 0
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def text(self) -> str:
        return "".join(f["text"] for f in sorted(self.finals, key=lambda f: (f["t0"], f["segment_no"])))

    @property
    def latencies(self) -> list[float]:
        return [f["asr_s"] for f in self.finals if f.get("asr_s") is not None]


async def stream_clips(
    clips: list[Clip],
    ws_base: str,
    conditions: list[str],
    *,
    speed: float = 1.0,
    concurrency: int = 2,
) -> list[Scored]:
    """Every clip × condition as its own call, ``concurrency`` calls at once; finals read off the console."""
    run_id = uuid.uuid4().hex[:6]
    jobs = [(clip, cond, f"asr-{run_id}-{i}-{cond}") for i, clip in enumerate(clips) for cond in conditions]
    heard: dict[str, Heard] = {call_id: Heard() for *_, call_id in jobs}
    slots = asyncio.Semaphore(max(1, concurrency))

    async with websockets.connect(f"{ws_base}/ws/console", max_size=2**22) as console:

        async def listen() -> None:
            async for message in console:
                _note(heard, json.loads(message))

        async def stream(clip: Clip, condition: str, call_id: str) -> None:
            async with slots:
                bridge = BRIDGE_FOR[condition]
                await replay_audio(
                    clip.audio[:, None],
                    16_000,
                    f"{ws_base}/bridge/{bridge}",
                    bridge=bridge,
                    speed=speed,
                    call_id=call_id,
                    agent_id="asr-eval",
                    tail_silence_s=TAIL_SILENCE_S,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(heard[call_id].ended.wait(), END_WAIT_S)

        listener = asyncio.create_task(listen())
        try:
            await asyncio.gather(*(stream(*job) for job in jobs))
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    return [
        score(clip, cond, "live", heard[c].text, decode_s=heard[c].latencies, withdrawn=heard[c].withdrawn)
        for clip, cond, c in jobs
    ]


def _note(heard: dict[str, Heard], event: dict[str, Any]) -> None:
    call = heard.get(event.get("call_id", ""))
    if call is None:
        return
    kind = event["type"]
    if kind == "transcript" and event["final"] and event["text"]:
        call.finals.append(event)
    elif kind == "finding_withdrawn":
        call.withdrawn += 1
    elif kind == "call_ended":
        call.ended.set()


def offline_decode(model: Any, clip: Clip, audio: np.ndarray, condition: str, beam: int) -> Scored:
    """The baseline: one stock ``WhisperModel.transcribe`` of the whole clip (30 s windows, its own fallbacks)."""
    started = time.perf_counter()
    segments, _ = model.transcribe(audio, language="zh", beam_size=beam)
    text = "".join(s.text for s in segments)  # the generator decodes as it is consumed
    took = time.perf_counter() - started
    return score(clip, condition, "offline", text, f"stock transcribe beam={beam}", decode_s=[took])
