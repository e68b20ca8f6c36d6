"""Unit tests for the G.711 μ-law / A-law codec (compliance_monitor.audio.g711)."""

from __future__ import annotations

import numpy as np
import pytest

from compliance_monitor.audio.g711 import (
    ALAW_TO_PCM16,
    ULAW_TO_PCM16,
    alaw_decode,
    ulaw_decode,
    ulaw_encode,
)

pytestmark = pytest.mark.unit

ALL_CODES = bytes(range(256))
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)


def reference_ulaw_to_linear(code: int) -> int:
    """ITU-T G.711 μ-law expansion, one code at a time (the classic Sun g711.c ``ulaw2linear``)."""
    u = ~code & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return 0x84 - t if u & 0x80 else t - 0x84


def reference_alaw_to_linear(code: int) -> int:
    """ITU-T G.711 A-law expansion (Sun g711.c ``alaw2linear``)."""
    a = code ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


# --------------------------------------------------------------------------- μ-law decode


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xFF, 0), (0x7F, 0), (0x00, -32124), (0x80, 32124), (0xFE, 8), (0x7E, -8), (0xF0, 120), (0x70, -120)],
)
def test_ulaw_decode_known_values(code: int, value: int) -> None:
    assert int(ulaw_decode(bytes([code]))[0]) == value


def test_ulaw_table_matches_reference_for_all_codes() -> None:
    assert [int(v) for v in ULAW_TO_PCM16] == [reference_ulaw_to_linear(c) for c in range(256)]


def test_ulaw_decode_shape_and_dtype() -> None:
    out = ulaw_decode(ALL_CODES)
    assert out.dtype == np.int16
    assert out.shape == (256,)
    assert len(ulaw_decode(b"")) == 0


def test_ulaw_decode_is_sign_symmetric() -> None:
    # Bit 7 is the sign: code c and c ^ 0x80 are the same magnitude with opposite signs.
    table = ULAW_TO_PCM16.astype(np.int32)
    codes = np.arange(256)
    np.testing.assert_array_equal(table[codes], -table[codes ^ 0x80])


# --------------------------------------------------------------------------- A-law decode


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xD4, 24), (0x54, -24)],
)
def test_alaw_decode_known_values(code: int, value: int) -> None:
    assert int(alaw_decode(bytes([code]))[0]) == value


def test_alaw_table_matches_reference_for_all_codes() -> None:
    assert [int(v) for v in ALAW_TO_PCM16] == [reference_alaw_to_linear(c) for c in range(256)]


def test_alaw_decode_has_no_zero_and_is_sign_symmetric() -> None:
    table = ALAW_TO_PCM16.astype(np.int32)
    assert 0 not in table  # A-law has no zero code: the smallest magnitude is ±8
    assert len(set(table.tolist())) == 256
    codes = np.arange(256)
    np.testing.assert_array_equal(table[codes], -table[codes ^ 0x80])


# --------------------------------------------------------------------------- μ-law encode


def test_ulaw_encode_returns_one_byte_per_sample() -> None:
    assert len(ulaw_encode(ALL_INT16)) == len(ALL_INT16)
    assert ulaw_encode(np.zeros(0, dtype=np.int16)) == b""


@pytest.mark.parametrize(("value", "code"), [(0, 0xFF), (32767, 0x80), (-32768, 0x00), (8, 0xFE), (-8, 0x7E)])
def test_ulaw_encode_known_values(value: int, code: int) -> None:
    assert ulaw_encode(np.array([value], dtype=np.int16)) == bytes([code])


def test_ulaw_encode_decode_every_code_round_trips() -> None:
    decoded = ulaw_decode(ALL_CODES)
    reencoded = ulaw_encode(decoded)
    for code in range(256):
        if code == 0x7F:
            # "Negative zero" decodes to 0, which encodes as the canonical positive zero 0xFF.
            assert reencoded[code] == 0xFF
        else:
            assert reencoded[code] == code, f"code {code:#04x} -> {int(decoded[code])} -> {reencoded[code]:#04x}"


def test_ulaw_round_trip_error_is_within_g711_quantisation() -> None:
    x = ALL_INT16.astype(np.int64)
    y = ulaw_decode(ulaw_encode(ALL_INT16)).astype(np.int64)
    err = np.abs(y - x)
    # The loose bound from the spec of this test: |err| <= max(16, |x| / 16) everywhere.
    assert np.all(err <= np.maximum(16, np.abs(x) / 16))
    # The exact bound: within segment e the step is 8 << e and decoding picks the mid-point,
    # so the error is at most half a step, i.e. (|x| + 0x84) / 32 (clipped samples excepted).
    unclipped = np.abs(x) <= 32635
    assert np.all(err[unclipped] <= (np.abs(x[unclipped]) + 0x84) / 32)


def test_ulaw_round_trip_is_monotonic_and_odd() -> None:
    y = ulaw_decode(ulaw_encode(ALL_INT16)).astype(np.int64)
    assert np.all(np.diff(y) >= 0)  # quantisation never reorders samples
    positive = np.arange(1, 32768, dtype=np.int16)
    pos_codes = np.frombuffer(ulaw_encode(positive), dtype=np.uint8)
    neg_codes = np.frombuffer(ulaw_encode(-positive), dtype=np.uint8)
    np.testing.assert_array_equal(neg_codes, pos_codes ^ 0x80)


def test_ulaw_encode_clips_extremes() -> None:
    codes = ulaw_encode(np.array([32767, 32700, -32768, -32700], dtype=np.int16))
    assert codes == bytes([0x80, 0x80, 0x00, 0x00])


def test_ulaw_sine_round_trip_keeps_signal_to_noise() -> None:
    t = np.arange(8000) / 8000
    x = np.round(20000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    y = ulaw_decode(ulaw_encode(x)).astype(np.float64)
    noise = y - x
    snr_db = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum(noise**2))
    assert snr_db > 35  # G.711 μ-law gives about 38 dB on a loud tone
