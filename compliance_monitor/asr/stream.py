"""Streaming recognition for one speaker of one call: VAD-gated partials and finals.

Audio is appended to a rolling buffer with offset bookkeeping (stream time of its first sample),
VAD runs off the loop, partial decodes of the open segment are requested every
``partial_interval_s`` and a final decode at each VAD end-point. Results are emitted strictly in
submission order by a separate task, so a slow decode never stalls the audio.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np

from compliance_monitor.asr.decoder import DecodeRequest, DecodeResult
from compliance_monitor.asr.scheduler import AsrScheduler
from compliance_monitor.audio.vad import SegmentEvent, SpeechSegmenter
from compliance_monitor.config import AsrSettings, VadSettings
from compliance_monitor.messages import AudioChunk, Speaker, Transcript

log = logging.getLogger(__name__)

RATE = 16_000
MIN_GAP_S = 0.01  # below half a 20 ms frame: resampler delay and rounding, not loss
MAX_GAP_FILL_S = 5.0  # a longer hole in the stream is not filled with silence sample by sample
MIN_PARTIAL_S = 0.6
VAD_BATCH_S = 2.0  # the most audio one VAD inference sees (62 windows)

# VAD is a small ONNX model: cheap, but still inference; keep it off the loop on a shared thread.
_VAD_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vad")

_Pending = tuple[int, float, float, bool, float, "asyncio.Future[DecodeResult | None]"]


class SpeakerTranscriber:
    def __init__(
        self,
        call_id: str,
        speaker: Speaker,
        scheduler: AsrScheduler,
        vad: VadSettings,
        asr: AsrSettings,
        out: asyncio.Queue[Transcript | None],
    ) -> None:
        self.call_id = call_id
        self.speaker = speaker
        self.scheduler = scheduler
        self.asr = asr
        self.out = out
        self.segmenter = SpeechSegmenter(vad)
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_t0 = 0.0  # stream time of _buffer[0]
        self._preroll_s = (vad.onset_lookback_ms + vad.speech_pad_ms) / 1000 + 0.1
        self._segment_no = 0
        self._segment_t0: float | None = None
        self._last_partial_t = 0.0
        self._last_final_text: str | None = None
        self._pending: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._emitter = asyncio.create_task(self._emit(), name=f"asr-emit-{call_id}-{speaker}")
        self.gaps_filled_s = 0.0
        self._partial_text: dict[int, str] = {}  # the open segment's last partial with words

    @property
    def stream_key(self) -> tuple[str, str]:
        return (self.call_id, self.speaker.value)

    @property
    def buffer_end(self) -> float:
        return self._buffer_t0 + len(self._buffer) / RATE

    async def push(self, chunks: list[AudioChunk]) -> None:
        audio = self._append(chunks)
        if not len(audio):
            return
        loop = asyncio.get_running_loop()
        step = int(VAD_BATCH_S * RATE)
        # Bounded VAD batches: ONNX Runtime keeps the memory of its largest input for good, and other calls'
        # audio waits on the shared VAD thread for as long as one hop runs.
        events: list[SegmentEvent] = []
        for i in range(0, len(audio), step):
            part = audio[i : i + step]
            events += await loop.run_in_executor(_VAD_EXECUTOR, lambda part=part: list(self.segmenter.push(part)))
        self._handle(events)  # once VAD has seen all of it: _handle trims the buffer
        self._maybe_partial()

    async def finish(self) -> None:
        """End of the stream: close the open segment, then wait until every result is emitted."""
        self._handle(list(self.segmenter.flush()))
        self._pending.put_nowait(None)
        await self._emitter

    async def aclose(self) -> None:
        self._emitter.cancel()
        await asyncio.gather(self._emitter, return_exceptions=True)
        self.scheduler.drop_partial(self.stream_key)

    # ------------------------------------------------------------------ audio bookkeeping

    def _append(self, chunks: list[AudioChunk]) -> np.ndarray:
        parts: list[np.ndarray] = []
        end = self.buffer_end
        budget = MAX_GAP_FILL_S  # per batch too: a burst of frames with holes must not become minutes of silence
        for chunk in chunks:
            gap = chunk.t - end
            if gap > MIN_GAP_S and budget > 0:
                # Lost or late-starting frames: fill with silence so VAD time and stream time agree.
                fill = np.zeros(round(min(gap, budget) * RATE), dtype=np.float32)
                budget -= len(fill) / RATE
                parts.append(fill)
                end += len(fill) / RATE
                self.gaps_filled_s += len(fill) / RATE
            parts.append(chunk.pcm)
            end += chunk.duration
        if not parts:
            return np.zeros(0, dtype=np.float32)
        audio = np.concatenate(parts)
        # No trimming here: VAD has not seen this audio yet, and a start it finds may lie anywhere in it.
        self._buffer = np.concatenate([self._buffer, audio])
        return audio

    def _trim(self) -> None:
        # Keep the open segment, or the pre-roll while nobody speaks (as far back as a segment's start may reach:
        # VAD's onset look-back and pad, and the window it has not scored yet): bounded either way.
        keep_from = self._segment_t0 if self._segment_t0 is not None else self.buffer_end - self._preroll_s
        drop = int((keep_from - self._buffer_t0) * RATE)
        if drop > 0:
            self._buffer = self._buffer[drop:]
            self._buffer_t0 += drop / RATE

    def _slice(self, t0: float, t1: float) -> np.ndarray:
        a = max(0, int((t0 - self._buffer_t0) * RATE))
        b = max(a, int((t1 - self._buffer_t0) * RATE))
        return self._buffer[a:b].copy()

    # ------------------------------------------------------------------ segmentation → decode jobs

    def _handle(self, events: list[SegmentEvent]) -> None:
        for event in events:
            if event.kind == "start":
                self._segment_no += 1
                self._segment_t0 = max(event.t, self._buffer_t0)
                self._last_partial_t = event.t
            elif self._segment_t0 is not None:
                self._submit(self._segment_t0, event.t, final=True)
                self._segment_t0 = None
        self._trim()

    def _maybe_partial(self) -> None:
        if self._segment_t0 is None:
            return
        now = self.buffer_end
        if now - self._last_partial_t >= self.asr.partial_interval_s and now - self._segment_t0 >= MIN_PARTIAL_S:
            self._last_partial_t = now
            self._submit(self._segment_t0, now, final=False)

    def _submit(self, t0: float, t1: float, *, final: bool) -> None:
        request = DecodeRequest(
            self._slice(t0, t1),
            beam_size=self.asr.beam_size if final else self.asr.partial_beam_size,
            prompt_text=self._last_final_text if self.asr.condition_on_previous else None,
            fallback=final,  # a bad partial is simply skipped; the final will cover it
            min_window=self.asr.final_encoder_window_frames if final else self.asr.encoder_window_frames,
        )
        future = self.scheduler.submit(self.stream_key, request, final=final)
        self._pending.put_nowait((self._segment_no, t0, t1, final, time.monotonic(), future))

    async def _emit(self) -> None:
        while (item := await self._pending.get()) is not None:
            segment_no, t0, t1, final, submitted, future = item
            try:
                result = await future
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ASR failed for %s/%s segment %d", self.call_id, self.speaker, segment_no)
                if not final:
                    continue
                self.scheduler.stats.finals_rejected["error"] += 1
                result = DecodeResult("", 0.0, 0.0, 0.0, "error")  # the partial stands, or the segment is unsaid
            if not final:
                if result is not None and result.text:  # superseded or rejected partials show nothing
                    self._partial_text[segment_no] = result.text
                    await self._put(segment_no, t0, t1, False, result, submitted)
                continue
            partial = self._partial_text.pop(segment_no, "")
            if result is not None and not result.text:
                result = self._rescue_from_partial(segment_no, t0, t1, result, partial)
            if result is not None and result.text:
                self._last_final_text = result.text
            await self._put(segment_no, t0, t1, True, result, submitted)

    def _rescue_from_partial(
        self, segment_no: int, t0: float, t1: float, result: DecodeResult, partial: str
    ) -> DecodeResult:
        """A final the guards rejected. Its last partial, if it showed words, stands rather than nothing:
        what the console showed is kept, and findings raised on it are confirmed or withdrawn against it."""
        log.info(
            "ASR final rejected (%s) for %s/%s segment %d %.2f-%.2fs: %r%s",
            result.rejected,
            self.call_id,
            self.speaker,
            segment_no,
            t0,
            t1,
            result.hypothesis,
            f"; the partial {partial!r} stands" if partial else "",
        )
        if not partial:
            return result
        self.scheduler.stats.finals_rescued["partial"] += 1
        return replace(result, text=partial, rescued=f"partial:{result.rejected}")

    async def _put(
        self, segment_no: int, t0: float, t1: float, final: bool, result: DecodeResult | None, submitted: float
    ) -> None:
        """Finals always go out, empty when nothing was said (their partials' findings are then withdrawn)."""
        text = result.text if result is not None else ""
        await self.out.put(
            Transcript(
                self.call_id,
                self.speaker,
                segment_no,
                text,
                t0,
                t1,
                final,
                result.avg_logprob if result is not None else 0.0,
                result.no_speech_prob if result is not None else 0.0,
                time.monotonic() - submitted,
            )
        )
