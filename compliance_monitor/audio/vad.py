"""Streaming Silero VAD (v6, the ONNX file bundled with faster-whisper) and a speech segmenter.

The model takes 512-sample windows (32 ms at 16 kHz) with 64 samples of left context and an LSTM
state (h, c) that we carry between calls, so a live stream is scored exactly as a whole file would
be. The segmenter turns probabilities into speech segments with hysteresis, padding and a cap
on segment length (a monologue must still produce finals).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from compliance_monitor.config import VadSettings

WINDOW = 512
CONTEXT = 64
RATE = 16_000
WINDOW_S = WINDOW / RATE


@lru_cache(maxsize=1)
def _session() -> object:
    import onnxruntime
    from faster_whisper.utils import get_assets_path

    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 4
    path = os.path.join(get_assets_path(), "silero_vad_v6.onnx")
    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"], sess_options=opts)


class StreamingVad:
    """Speech probability per 32 ms window for one audio stream."""

    def __init__(self) -> None:
        self._session = _session()
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def process(self, audio: np.ndarray) -> np.ndarray:
        """Feed float32 16 kHz samples; returns one probability per completed window."""
        self._pending = np.concatenate([self._pending, audio.astype(np.float32, copy=False)])
        n = len(self._pending) // WINDOW
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        frames = self._pending[: n * WINDOW].reshape(n, WINDOW)
        self._pending = self._pending[n * WINDOW :]
        contexts = np.vstack([self._context[None, :], frames[:-1, -CONTEXT:]])
        self._context = frames[-1, -CONTEXT:].copy()
        batch = np.concatenate([contexts, frames], axis=1)
        probs, self._h, self._c = self._session.run(  # type: ignore[attr-defined]
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        return np.asarray(probs, dtype=np.float32).reshape(-1)


@dataclass(slots=True)
class SegmentEvent:
    """What the segmenter saw in the audio just pushed."""

    kind: str  # "start" | "end"
    t: float  # stream time of the boundary (seconds)


class SpeechSegmenter:
    """Hysteresis on VAD probabilities → start/end boundaries in stream time."""

    def __init__(self, settings: VadSettings) -> None:
        self.s = settings
        self.vad = StreamingVad()
        self.in_speech = False
        self._windows_seen = 0
        self._speech_run = 0  # consecutive windows above threshold while not in speech
        self._silence_run = 0  # consecutive windows below neg_threshold while in speech
        self._segment_start_window = 0

    @property
    def now(self) -> float:
        return self._windows_seen * WINDOW_S

    def push(self, audio: np.ndarray) -> Iterator[SegmentEvent]:
        min_speech = max(1, round(self.s.min_speech_ms / 1000 / WINDOW_S))
        min_silence = max(1, round(self.s.min_silence_ms / 1000 / WINDOW_S))
        max_windows = round(self.s.max_segment_s / WINDOW_S)
        pad = self.s.speech_pad_ms / 1000
        for p in self.vad.process(audio):
            self._windows_seen += 1
            if not self.in_speech:
                self._speech_run = self._speech_run + 1 if p >= self.s.threshold else 0
                if self._speech_run >= min_speech:
                    self.in_speech = True
                    self._silence_run = 0
                    self._segment_start_window = self._windows_seen - self._speech_run
                    yield SegmentEvent("start", max(0.0, self._segment_start_window * WINDOW_S - pad))
                continue
            self._silence_run = self._silence_run + 1 if p < self.s.neg_threshold else 0
            too_long = self._windows_seen - self._segment_start_window >= max_windows
            if self._silence_run >= min_silence or too_long:
                self.in_speech = False
                self._speech_run = 0
                speech_end = (self._windows_seen - self._silence_run) * WINDOW_S
                yield SegmentEvent("end", min(self.now, speech_end + pad))
                if too_long and self._silence_run == 0:
                    # Cut a long turn mid-word and keep listening: the speaker is still talking. In a
                    # short pause we just end here; the next word opens a segment the usual way.
                    self.in_speech = True
                    self._segment_start_window = self._windows_seen
                    yield SegmentEvent("start", self.now)

    def flush(self) -> Iterator[SegmentEvent]:
        if self.in_speech:
            self.in_speech = False
            yield SegmentEvent("end", self.now)
