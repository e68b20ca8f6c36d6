"""Audio files: WAV (PCM16, G.711 μ-law / A-law as telephony recordings often are) here, FLAC/OGG and the rest
through libsndfile (``soundfile``); PCM16 WAV out."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from compliance_monitor.audio.g711 import alaw_decode, ulaw_decode
from compliance_monitor.audio.resample import float_to_pcm16, pcm16_to_float

_WAVE_PCM, _WAVE_ALAW, _WAVE_MULAW = 1, 6, 7


def _chunks(raw: bytes) -> dict[bytes, bytes]:
    """The RIFF chunks of a WAVE file by id (fmt, fact, data, ...)."""
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    chunks, pos = {}, 12
    while pos + 8 <= len(raw):
        cid, size = raw[pos : pos + 4], struct.unpack_from("<I", raw, pos + 4)[0]
        chunks.setdefault(cid, raw[pos + 8 : pos + 8 + size])
        pos += 8 + size + (size & 1)
    return chunks


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """(samples float32 [n, channels], rate). Reads PCM16 and G.711 (μ-law / A-law) WAVs."""
    chunks = _chunks(path.read_bytes())
    if b"fmt " not in chunks or b"data" not in chunks:
        raise ValueError(f"{path}: WAVE file without fmt or data chunk")
    tag, channels, rate = struct.unpack_from("<HHI", chunks[b"fmt "])
    bits = struct.unpack_from("<H", chunks[b"fmt "], 14)[0]
    data = chunks[b"data"]
    if tag == _WAVE_PCM and bits == 16:
        pcm = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")
    elif tag in (_WAVE_MULAW, _WAVE_ALAW):
        pcm = (ulaw_decode if tag == _WAVE_MULAW else alaw_decode)(data)
    else:
        raise ValueError(f"{path}: WAVE format {tag}/{bits} bit is not supported (PCM16, μ-law, A-law)")
    frames = len(pcm) // channels
    return pcm16_to_float(pcm[: frames * channels]).reshape(frames, channels), int(rate)


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """(samples float32 [n, channels], rate) from a WAV, or from any format libsndfile reads (FLAC, OGG, …)."""
    if path.suffix.lower() == ".wav":
        return read_wav(path)
    import soundfile

    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return audio, int(rate)


def write_wav(path: Path, audio: np.ndarray, rate: int = 16_000) -> Path:
    """float32 [n] or [n, channels] → 16-bit PCM WAV."""
    pcm = float_to_pcm16(audio.reshape(len(audio), -1))
    channels = pcm.shape[1]
    data = pcm.astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", _WAVE_PCM, channels, rate, rate * channels * 2, channels * 2, 16)
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
    path.write_bytes(header + b"data" + struct.pack("<I", len(data)) + data)
    return path
