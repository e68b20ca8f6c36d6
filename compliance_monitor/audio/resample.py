"""Sample-rate conversion and PCM format helpers. Everything downstream is float32 at 16 kHz."""

from __future__ import annotations

from functools import lru_cache
from math import gcd

import numpy as np
from scipy.signal import resample_poly

TARGET_RATE = 16_000


def pcm16_to_float(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float32) / 32768.0


def float_to_pcm16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)


@lru_cache(maxsize=16)
def _ratio(src: int, dst: int) -> tuple[int, int]:
    g = gcd(src, dst)
    return dst // g, src // g


class StreamResampler:
    """Polyphase resampler for a live stream, chunk by chunk, with no seams.

    Resampling each 20 ms frame on its own would put a filter edge at every frame boundary
    (clicks that whisper hears). We keep the input tail the FIR filter still needs, and emit only
    output samples whose whole filter support has arrived: a delay of ``margin`` input samples
    (1.25 ms for 8 kHz -> 16 kHz).
    """

    def __init__(self, src_rate: int, dst_rate: int = TARGET_RATE) -> None:
        if src_rate <= 0 or dst_rate <= 0:
            raise ValueError(f"bad sample rate {src_rate} -> {dst_rate}")
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self.up, self.down = _ratio(src_rate, dst_rate)
        # resample_poly's default filter is 10 * max(up, down) taps each side at the up-sampled rate.
        self.margin = -(-10 * max(self.up, self.down) // self.up) + 1
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # absolute input index of _buf[0]; kept a multiple of ``down``
        self._emitted = 0  # absolute output index of the next sample to emit

    def process(self, chunk: np.ndarray) -> np.ndarray:
        if self.src_rate == self.dst_rate:
            return chunk.astype(np.float32, copy=False)
        self._buf = np.concatenate([self._buf, chunk.astype(np.float32, copy=False)])
        buf_end = self._buf_start + len(self._buf)
        return self._emit_until(max(0, buf_end - self.margin) * self.up // self.down)

    def flush(self) -> np.ndarray:
        """Emit the held-back tail (end of stream)."""
        if self.src_rate == self.dst_rate:
            return np.zeros(0, dtype=np.float32)
        buf_end = self._buf_start + len(self._buf)
        return self._emit_until(-(-buf_end * self.up // self.down))  # round up, as resample_poly does

    def _emit_until(self, out_end: int) -> np.ndarray:
        if out_end <= self._emitted or not len(self._buf):
            return np.zeros(0, dtype=np.float32)
        out = resample_poly(self._buf, self.up, self.down).astype(np.float32)
        first = self._buf_start * self.up // self.down
        emitted = out[self._emitted - first : out_end - first]
        self._emitted += len(emitted)
        # Keep only the input the next outputs' filter support reaches back to.
        keep_from = max(0, self._emitted * self.down // self.up - 2 * self.margin)
        keep_from -= keep_from % self.down
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start :]
            self._buf_start = keep_from
        return emitted


def resample(audio: np.ndarray, src_rate: int, dst_rate: int = TARGET_RATE) -> np.ndarray:
    """Whole-buffer resampling (files, tests)."""
    if src_rate == dst_rate:
        return audio.astype(np.float32, copy=False)
    up, down = _ratio(src_rate, dst_rate)
    return resample_poly(audio.astype(np.float32, copy=False), up, down).astype(np.float32)
