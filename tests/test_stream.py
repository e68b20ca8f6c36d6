"""Per-speaker streaming recognition with the real VAD and a fake decoder: what audio each decode gets."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from compliance_monitor.asr.scheduler import AsrScheduler
from compliance_monitor.asr.stream import SpeakerTranscriber
from compliance_monitor.config import AsrSettings, VadSettings
from compliance_monitor.messages import AudioChunk, Speaker, Transcript
from tests.conftest import load_audio
from tests.fakes import FakeDecoder

pytestmark = pytest.mark.unit


async def transcribe(audio: np.ndarray, chunk_s: float, gap_at: float | None = None) -> list[Transcript]:
    decoder = FakeDecoder()
    scheduler = AsrScheduler(AsrSettings(), lambda: decoder)  # type: ignore[arg-type, return-value]
    await scheduler.start()
    out: asyncio.Queue[Transcript | None] = asyncio.Queue()
    tr = SpeakerTranscriber("c", Speaker.AGENT, scheduler, VadSettings(), AsrSettings(), out)
    step = int(chunk_s * 16_000)
    chunks = [AudioChunk("c", Speaker.AGENT, audio[i : i + step], i / 16_000) for i in range(0, len(audio), step)]
    if gap_at is not None:  # drop the frames in the first second after gap_at: a hole in the stream
        chunks = [c for c in chunks if not gap_at <= c.t < gap_at + 1.0]
    for chunk in chunks:
        await tr.push([chunk])
    await tr.finish()
    await scheduler.aclose()
    results = []
    while not out.empty():
        item = out.get_nowait()
        assert item is not None
        results.append(item)
    return results


@pytest.mark.parametrize("chunk_s", [0.02, 0.2, 10.0])
async def test_final_covers_the_whole_utterance_whatever_the_chunking(chunk_s: float) -> None:
    speech = load_audio("BAC009S0764W0121.wav")
    audio = np.concatenate([np.zeros(16_000, np.float32), speech, np.zeros(16_000, np.float32)])
    finals = [t for t in await transcribe(audio, chunk_s) if t.final]
    assert len(finals) == 1
    decoded = int(finals[0].text.removeprefix("len="))
    # the utterance (≈ 3.9 s of speech) plus padding, not a truncated tail
    assert 3.6 <= decoded / 16_000 <= 5.0, decoded / 16_000
    assert 0.7 <= finals[0].t0 <= 1.4


async def test_partials_arrive_while_speaking_and_before_the_final() -> None:
    speech = load_audio("BAC009S0764W0121.wav")
    results = await transcribe(np.concatenate([speech, np.zeros(16_000, np.float32)]), 0.02)
    kinds = [t.final for t in results]
    assert kinds[-1] is True and kinds.count(False) >= 2  # ~1 partial per second of speech
    partial_ends = [t.t1 for t in results if not t.final]
    assert partial_ends == sorted(partial_ends)


async def test_a_hole_in_the_stream_keeps_timestamps_in_stream_time() -> None:
    speech = load_audio("BAC009S0764W0121.wav")
    audio = np.concatenate([np.zeros(16_000 * 3, np.float32), speech, np.zeros(16_000, np.float32)])
    finals = [t for t in await transcribe(audio, 0.02, gap_at=0.5) if t.final]
    # speech starts ~3.55 s, minus the 0.2 s pad; without the silence fill it would be 1 s earlier
    assert len(finals) == 1 and 3.2 <= finals[0].t0 <= 3.5


class RejectsFinals(FakeDecoder):
    """Partials read fine; every final is rejected by the guards (as a prompt echo was on a real recording)."""

    def decode(self, requests):  # type: ignore[no-untyped-def]
        from compliance_monitor.asr.decoder import DecodeResult

        read = super().decode(requests)
        return [
            DecodeResult("", -0.4, 0.1, 1.0, "prompt_echo", "电:贷款逾期、欠款、") if r.fallback else res
            for r, res in zip(requests, read, strict=True)
        ]


class FailsFinals(FakeDecoder):
    """Partials read fine; every batch holding a final raises (a broken model, out of memory…)."""

    def decode(self, requests):  # type: ignore[no-untyped-def]
        if any(r.fallback for r in requests):
            raise RuntimeError("decoder exploded")
        return super().decode(requests)


@pytest.mark.parametrize(("decoder", "reason"), [(RejectsFinals, "prompt_echo"), (FailsFinals, "error")])
async def test_a_final_that_fails_keeps_its_last_partial_and_says_so(decoder: type[FakeDecoder], reason: str) -> None:
    fake = decoder()
    scheduler = AsrScheduler(AsrSettings(), lambda: fake)  # type: ignore[arg-type, return-value]
    await scheduler.start()
    out: asyncio.Queue[Transcript | None] = asyncio.Queue()
    tr = SpeakerTranscriber("c", Speaker.AGENT, scheduler, VadSettings(), AsrSettings(), out)
    audio = np.concatenate([load_audio("BAC009S0764W0121.wav"), np.zeros(16_000, np.float32)])
    for i in range(0, len(audio), 320):
        await tr.push([AudioChunk("c", Speaker.AGENT, audio[i : i + 320], i / 16_000)])
    await tr.finish()
    await scheduler.aclose()
    results = [out.get_nowait() for _ in range(out.qsize())]
    partials = [t for t in results if t is not None and not t.final]
    (final,) = [t for t in results if t is not None and t.final]  # a final always comes: never left dangling
    assert partials and final.text == partials[-1].text  # and it is not nothing
    assert scheduler.stats.finals_rejected == {reason: 1}
    assert scheduler.stats.finals_rescued == {"partial": 1}
