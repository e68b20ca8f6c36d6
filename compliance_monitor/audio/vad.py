"""Streaming Silero VAD (v6, the ONNX file bundled with faster-whisper) and a speech segmenter.

The model takes 512-sample windows (32 ms at 16 kHz) with 64 samples of left context and an LSTM
state (h, c) that we carry between calls, so a live stream is scored exactly as a whole file would
be. The segmenter turns probabilities into speech segments with hysteresis, padding and a cap
on segment length (a monologue must still produce finals).
"""

from __future__ import annotations

import math
import os
from collections import deque
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
    """Hysteresis on VAD probabilities → start/end boundaries in stream time.

    Tuned for phone calls, where a lost first syllable or a word cut in two changes what the rules read:
    - the onset is found by looking back from the point VAD became sure (``min_speech_ms`` above
      ``threshold``) over the windows above ``neg_threshold``, bridging pauses shorter than ``min_silence_ms``,
      up to ``onset_lookback_ms``: a soft first syllable or a short word before a pause (喂，…) stays in;
    - a long turn is split at a pause of ``split_pause_ms`` once it is ``split_after_s`` long, and when it reaches
      ``max_segment_s`` with no such pause, at its least speech-like window of the last ``cut_search_ms``, so a
      monologue still yields finals without cutting a word in two.
    """

    def __init__(self, settings: VadSettings) -> None:
        self.s = settings
        self.vad = StreamingVad()
        self.in_speech = False
        self._windows_seen = 0
        self._speech_run = 0  # consecutive windows above threshold while not in speech
        self._silence_run = 0  # consecutive windows below neg_threshold while in speech
        self._segment_start_window = 0
        self._last_end_t = 0.0  # a new segment never reaches back into the previous one
        w = self._windows
        # the settings in 32 ms windows, once: the step below runs for every window of every stream
        self._min_speech, self._min_silence = w(settings.min_speech_ms), w(settings.min_silence_ms)
        self._split_after, self._split_pause = w(settings.split_after_s * 1000), w(settings.split_pause_ms)
        self._max_segment, self._lookback = w(settings.max_segment_s * 1000), w(settings.onset_lookback_ms)
        self._cut_search = w(settings.cut_search_ms)
        self._probs: deque[float] = deque(maxlen=max(self._lookback, self._cut_search))

    @staticmethod
    def _windows(ms: float) -> int:
        return max(1, round(ms / 1000 / WINDOW_S))

    @property
    def now(self) -> float:
        return self._windows_seen * WINDOW_S

    def push(self, audio: np.ndarray) -> Iterator[SegmentEvent]:
        for p in self.vad.process(audio):
            self._windows_seen += 1
            self._probs.append(float(p))
            yield from self._step(float(p))

    def _step(self, p: float) -> Iterator[SegmentEvent]:
        s = self.s
        pad = s.speech_pad_ms / 1000
        if not self.in_speech:
            self._speech_run = self._speech_run + 1 if p >= s.threshold else 0
            if self._speech_run >= self._min_speech:
                self.in_speech = True
                self._silence_run = 0
                self._segment_start_window = self._onset(self._windows_seen - self._speech_run)
                start = max(self._last_end_t, self._segment_start_window * WINDOW_S - pad)
                yield SegmentEvent("start", start)
            return
        self._silence_run = self._silence_run + 1 if p < s.neg_threshold else 0
        length = self._windows_seen - self._segment_start_window
        too_long = length >= self._max_segment
        long_turn_pause = length >= self._split_after and self._silence_run >= self._split_pause
        if (
            self._silence_run >= self._min_silence
            or long_turn_pause
            or (too_long and self._silence_run > 0)  # capped in a pause: the turn ends here
        ):
            self.in_speech = False
            self._speech_run = 0
            speech_end = (self._windows_seen - self._silence_run) * WINDOW_S
            self._last_end_t = min(self.now, speech_end + pad)
            yield SegmentEvent("end", self._last_end_t)
        elif too_long:
            # The speaker is still talking: cut at the least speech-like moment of the last stretch, and the
            # rest of the turn opens the next segment at once.
            cut = self._quietest_window() * WINDOW_S
            yield SegmentEvent("end", cut)
            self._segment_start_window = round(cut / WINDOW_S)
            self._last_end_t = cut
            yield SegmentEvent("start", cut)

    def _onset(self, sure_from: int) -> int:
        """Where the speech VAD became sure of at ``sure_from`` really began: back over windows above
        neg_threshold, across pauses shorter than min_silence, within the look-back."""
        probs = list(self._probs)
        first_kept = self._windows_seen - len(probs)  # window index of probs[0]
        after_previous = math.ceil(self._last_end_t / WINDOW_S - 1e-9)
        lookback_from = max(first_kept, after_previous, sure_from - self._lookback)
        onset, gap = sure_from, 0
        for window in range(sure_from - 1, lookback_from - 1, -1):
            if probs[window - first_kept] >= self.s.neg_threshold:
                onset, gap = window, 0
            else:
                gap += 1
                if gap >= self._min_silence:
                    break
        return onset

    def _quietest_window(self) -> int:
        """Index of the window with the lowest speech probability in the last ``cut_search_ms``, after the
        segment's first half (a cut never makes a sliver)."""
        probs = list(self._probs)
        first_kept = self._windows_seen - len(probs)
        search = self._cut_search
        half = self._segment_start_window + (self._windows_seen - self._segment_start_window) // 2
        lo = max(first_kept, self._windows_seen - search, half)
        window = min(range(lo, self._windows_seen), key=lambda w: (probs[w - first_kept], -w))
        return window + 1 if window + 1 < self._windows_seen else window

    def flush(self) -> Iterator[SegmentEvent]:
        if self.in_speech:
            self.in_speech = False
            yield SegmentEvent("end", self.now)
