"""One Whisper model shared by every live call, with a fair, batching scheduler.

Finals (a VAD end-point: what rules and the archive see) always go before partials (display only).
Each speaker stream has at most one pending partial: a newer one replaces it, so a slow machine
sheds partials instead of falling behind. Batches are built from different streams, and the
model runs in one worker thread (CTranslate2 releases the GIL), never on the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from compliance_monitor.asr.decoder import DecodeRequest, DecodeResult, WhisperDecoder
from compliance_monitor.config import AsrSettings

log = logging.getLogger(__name__)

StreamKey = tuple[str, str]  # (call_id, speaker)
SLOW_BATCH_S = 1.5


@dataclass(slots=True)
class _Job:
    stream: StreamKey
    request: DecodeRequest
    final: bool
    audio_s: float
    future: asyncio.Future[DecodeResult | None]
    enqueued: float = field(default_factory=time.monotonic)
    order: int = 0


@dataclass(slots=True)
class AsrStats:
    batches: int = 0
    finals: int = 0
    partials: int = 0
    partials_superseded: int = 0
    audio_s: float = 0.0  # seconds of audio decoded
    busy_s: float = 0.0  # seconds the model was running
    max_final_wait_s: float = 0.0
    lag_warnings: int = 0
    # Finals the guards rejected after the retry, by reason: speech that reached no transcript unless rescued.
    finals_rejected: Counter[str] = field(default_factory=Counter)
    finals_retried: int = 0  # finals decoded twice (full window, no prompt): meant to stay the exception
    finals_fast: int = 0  # finals read in the short window because finals were backing up
    finals_rescued: Counter[str] = field(default_factory=Counter)  # rejected, kept anyway (best hypothesis)
    final_decode_s: deque[float] = field(default_factory=lambda: deque(maxlen=2000))  # per batch holding finals

    @property
    def rtf(self) -> float:
        return self.busy_s / self.audio_s if self.audio_s else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "batches": self.batches,
            "finals": self.finals,
            "partials": self.partials,
            "partials_superseded": self.partials_superseded,
            "audio_s": round(self.audio_s, 2),
            "busy_s": round(self.busy_s, 2),
            "rtf": round(self.rtf, 3),
            "max_final_wait_s": round(self.max_final_wait_s, 3),
            "lag_warnings": self.lag_warnings,
            "finals_rejected": dict(self.finals_rejected),
            "finals_retried": self.finals_retried,
            "finals_fast": self.finals_fast,
            "finals_rescued": dict(self.finals_rescued),
            "final_decode_s": percentiles(self.final_decode_s),
        }


def percentiles(values: Iterable[float]) -> dict[str, float | None]:
    """p50 / p95 / max of a sample (None when empty): the live stats and the eval reports print the same."""
    arr = np.fromiter(values, dtype=float)
    if not len(arr):
        return {"p50": None, "p95": None, "max": None}
    return {
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p95": round(float(np.percentile(arr, 95)), 3),
        "max": round(float(arr.max()), 3),
    }


class AsrScheduler:
    def __init__(self, settings: AsrSettings, decoder_factory: Callable[[], WhisperDecoder]) -> None:
        self.settings = settings
        self._decoder_factory = decoder_factory
        self._decoder: WhisperDecoder | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr")
        self._finals: deque[_Job] = deque()
        self._partials: dict[StreamKey, _Job] = {}
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._order = itertools.count()
        self.stats = AsrStats()

    @property
    def device(self) -> str:
        return self._decoder.device if self._decoder else "unloaded"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._decoder = await loop.run_in_executor(self._executor, self._load)
        self._worker = asyncio.create_task(self._run(), name="asr-scheduler")

    def _load(self) -> WhisperDecoder:
        decoder = self._decoder_factory()
        decoder.warm_up()
        return decoder

    async def aclose(self) -> None:
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for job in [*self._finals, *self._partials.values()]:
            if not job.future.done():
                job.future.cancel()
        self._finals.clear()
        self._partials.clear()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def submit(self, stream: StreamKey, request: DecodeRequest, *, final: bool) -> asyncio.Future[DecodeResult | None]:
        """Queue a decode; the future gives None if a newer partial superseded this one."""
        future: asyncio.Future[DecodeResult | None] = asyncio.get_running_loop().create_future()
        job = _Job(stream, request, final, len(request.audio) / 16_000, future, order=next(self._order))
        if final:
            self.drop_partial(stream)  # the final covers the same audio and more
            self._finals.append(job)
        else:
            self.drop_partial(stream)
            self._partials[stream] = job
        self._wake.set()
        return future

    def drop_partial(self, stream: StreamKey) -> None:
        old = self._partials.pop(stream, None)
        if old and not old.future.done():
            old.future.set_result(None)
            self.stats.partials_superseded += 1

    def _next_batch(self) -> list[_Job]:
        limit = max(1, self.settings.max_batch)
        batch: list[_Job] = []
        while self._finals and len(batch) < limit:
            job = self._finals.popleft()
            if not job.future.done():  # the call may have been cancelled meanwhile
                batch.append(job)
        if batch:
            return self._keep_up(batch)
        # Partials: oldest first, one per stream by construction.
        for job in sorted(self._partials.values(), key=lambda j: j.order)[:limit]:
            del self._partials[job.stream]
            if not job.future.done():
                batch.append(job)
        return batch

    def _keep_up(self, batch: list[_Job]) -> list[_Job]:
        """Finals read in the 30 s window cost 3-4x a short one. When they back up (the oldest has waited past
        ``asr.fast_finals_after_s``, or more are queued behind this batch) they take the short window until the
        queue drains: a little accuracy is shed before latency is. Counted as ``finals_fast``."""
        oldest = time.monotonic() - min(j.enqueued for j in batch)
        if oldest <= self.settings.fast_finals_after_s and not self._finals:
            return batch
        fast = self.settings.encoder_window_frames
        for job in batch:
            if job.request.min_window != fast:
                job.request = replace(job.request, min_window=fast)
                self.stats.finals_fast += 1
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._decoder is not None
        while True:
            batch = self._next_batch()
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            started = time.monotonic()
            self._note_wait(batch, started)
            try:
                results = await loop.run_in_executor(self._executor, self._decoder.decode, [j.request for j in batch])
            except Exception as exc:  # a decode failure fails these jobs, not the scheduler
                log.exception("ASR batch of %d failed", len(batch))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            busy = time.monotonic() - started
            if busy > SLOW_BATCH_S:
                log.warning("ASR batch of %d (%.1fs audio) took %.2fs", len(batch), sum(j.audio_s for j in batch), busy)
            self._note_done(batch, results, busy)
            for job, result in zip(batch, results, strict=True):
                if not job.future.done():
                    job.future.set_result(result)

    def _note_wait(self, batch: list[_Job], now: float) -> None:
        finals_wait = [now - j.enqueued for j in batch if j.final]
        if not finals_wait:
            return
        worst = max(finals_wait)
        self.stats.max_final_wait_s = max(self.stats.max_final_wait_s, worst)
        if worst > self.settings.lag_warning_s:
            self.stats.lag_warnings += 1
            log.warning(
                "ASR is slower than real time: a final waited %.1fs in the queue (%d finals queued, "
                "%d live streams with partials)",
                worst,
                len(self._finals),
                len(self._partials),
            )

    def _note_done(self, batch: list[_Job], results: list[DecodeResult], busy: float) -> None:
        stats = self.stats
        stats.batches += 1
        stats.busy_s += busy
        if any(j.final for j in batch):
            stats.final_decode_s.append(busy)
        for job, result in zip(batch, results, strict=True):
            stats.audio_s += job.audio_s
            if not job.final:
                stats.partials += 1
                continue
            stats.finals += 1
            stats.finals_retried += bool(result.retries)
            if result.rejected:
                stats.finals_rejected[result.rejected] += 1
            if result.rescued:
                stats.finals_rescued[result.rescued] += 1
