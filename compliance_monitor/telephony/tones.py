"""The collector's warning tone, generated (no audio files to ship or lose)."""

from __future__ import annotations

import numpy as np


def warning_tone(rate: int = 8000, beeps: int = 2, beep_s: float = 0.18, gap_s: float = 0.12) -> np.ndarray:
    """Two short 1 kHz beeps as int16 PCM: unmistakable, and short enough not to drown the conversation."""
    t = np.arange(int(rate * beep_s)) / rate
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)  # 10 ms fades: no clicks
    beep = (0.3 * 32767 * np.sin(2 * np.pi * 1000 * t) * ramp).astype(np.int16)
    gap = np.zeros(int(rate * gap_s), np.int16)
    return np.concatenate([part for _ in range(beeps) for part in (beep, gap)])
