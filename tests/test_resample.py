"""Unit tests for sample-rate conversion (compliance_monitor.audio.resample)."""

from __future__ import annotations

import numpy as np
import pytest

from compliance_monitor.audio.resample import (
    TARGET_RATE,
    StreamResampler,
    float_to_pcm16,
    pcm16_to_float,
    resample,
)

pytestmark = pytest.mark.unit


def noise(rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(round(rate * seconds))).astype(np.float32)


def stream(resampler: StreamResampler, audio: np.ndarray, chunk: int) -> list[np.ndarray]:
    """Feed ``audio`` in chunks of ``chunk`` samples; the last list item is the flush."""
    out = [resampler.process(audio[i : i + chunk]) for i in range(0, len(audio), chunk)]
    out.append(resampler.flush())
    return out


# --------------------------------------------------------------------------- streaming == whole buffer


@pytest.mark.parametrize("src_rate", [8000, 48000, 44100])
def test_stream_in_20ms_chunks_equals_whole_buffer(src_rate: int) -> None:
    audio = noise(src_rate, 2.0)
    parts = stream(StreamResampler(src_rate), audio, src_rate // 50)
    streamed = np.concatenate(parts)
    whole = resample(audio, src_rate)
    assert streamed.dtype == np.float32
    assert len(whole) == len(audio) * TARGET_RATE // src_rate
    assert len(streamed) == len(whole)
    np.testing.assert_array_equal(streamed, whole)


@pytest.mark.parametrize("src_rate", [8000, 11025, 22050, 24000, 32000, 44100, 48000])
def test_stream_in_random_chunks_equals_whole_buffer(src_rate: int) -> None:
    rng = np.random.default_rng(src_rate)
    audio = noise(src_rate, 2.0, seed=1)  # whole seconds: see the ragged-tail test
    resampler = StreamResampler(src_rate)
    parts, i = [], 0
    while i < len(audio):
        n = int(rng.integers(1, 2000))
        parts.append(resampler.process(audio[i : i + n]))
        i += n
    parts.append(resampler.flush())
    np.testing.assert_array_equal(np.concatenate(parts), resample(audio, src_rate))


@pytest.mark.parametrize("src_rate", [48000, 44100])
def test_stream_length_matches_whole_buffer_for_a_ragged_tail(src_rate: int) -> None:
    # 2 s plus 37 samples: not a multiple of the decimation factor. resample_poly returns
    # ceil(n * up / down) samples; the stream must end with the same number after flush().
    audio = noise(src_rate, 2.0)
    audio = np.concatenate([audio, audio[:37]])
    streamed = np.concatenate(stream(StreamResampler(src_rate), audio, src_rate // 50))
    whole = resample(audio, src_rate)
    assert len(streamed) == len(whole)
    np.testing.assert_array_equal(streamed, whole)


def test_8k_to_16k_delay_is_small_and_every_later_chunk_is_full() -> None:
    resampler = StreamResampler(8000)
    parts = stream(resampler, noise(8000, 1.0), 160)
    held_back = 320 - len(parts[0])
    assert 0 < held_back <= 2 * resampler.margin  # a couple of milliseconds at most
    assert held_back / TARGET_RATE < 0.002
    assert all(len(p) == 320 for p in parts[1:-1])
    assert len(parts[-1]) == held_back  # flush() hands back exactly what was held


def test_flush_twice_and_empty_input() -> None:
    resampler = StreamResampler(8000)
    assert len(resampler.process(np.zeros(0, dtype=np.float32))) == 0
    assert len(resampler.flush()) == 0
    resampler.process(noise(8000, 0.1))
    assert len(resampler.flush()) > 0
    assert len(resampler.flush()) == 0


def test_sine_keeps_its_frequency_8k_to_16k() -> None:
    t = np.arange(8000) / 8000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    out = np.concatenate(stream(StreamResampler(8000), tone, 160))
    assert len(out) == 16000
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    peak_hz = np.argmax(spectrum) * TARGET_RATE / len(out)
    assert peak_hz == pytest.approx(1000, abs=2)
    # Level kept (no gain error from the polyphase filter), away from the edges.
    mid = out[2000:-2000]
    assert np.sqrt(np.mean(mid**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_identity_at_16k() -> None:
    audio = noise(16000, 0.5)
    resampler = StreamResampler(16000)
    np.testing.assert_array_equal(resampler.process(audio[:320]), audio[:320])
    assert len(resampler.flush()) == 0
    np.testing.assert_array_equal(resample(audio, 16000), audio)
    assert resample(audio.astype(np.float64), 16000).dtype == np.float32


@pytest.mark.parametrize(("src", "dst"), [(0, 16000), (-8000, 16000), (8000, 0)])
def test_bad_rate_raises(src: int, dst: int) -> None:
    with pytest.raises(ValueError):
        StreamResampler(src, dst)


# --------------------------------------------------------------------------- PCM format helpers


def test_pcm16_float_round_trip_is_exact() -> None:
    pcm = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    audio = pcm16_to_float(pcm)
    assert audio.dtype == np.float32
    assert audio.min() == -1.0
    assert audio.max() < 1.0
    np.testing.assert_array_equal(float_to_pcm16(audio), pcm)


def test_float_to_pcm16_clips_and_rounds() -> None:
    out = float_to_pcm16(np.array([1.0, 1.5, -1.0, -2.0, 0.0, 0.5, 1e-6], dtype=np.float32))
    assert out.dtype == np.int16
    assert out.tolist() == [32767, 32767, -32768, -32768, 0, 16384, 0]
