"""ASR: offline model resolution, and the decoder on real Mandarin (clean and telephone band)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compliance_monitor.asr.decoder import DecodeRequest, WhisperDecoder
from compliance_monitor.asr.evaluate import telephone_band
from compliance_monitor.asr.scoring import cer
from compliance_monitor.asr.weights import BASE_MODEL_BYTES, ModelUnavailableError, resolve_model
from compliance_monitor.config import AsrSettings
from tests.conftest import AISHELL, SHARED, load_audio

CACHE = Path.home() / ".cache" / "compliance-monitor"


@pytest.mark.unit
def test_unknown_model_name_fails_with_a_clear_offline_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="never downloads models"):
        resolve_model("large-v3-does-not-exist", CACHE)


@pytest.mark.unit
def test_directory_without_model_files_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelUnavailableError, match=r"missing model\.bin"):
        resolve_model(str(tmp_path), CACHE)


@pytest.mark.unit
def test_bundled_base_is_assembled_once_with_the_right_size(tmp_path: Path) -> None:
    path = resolve_model("base", tmp_path)
    model_bin = path / "model.bin"
    assert model_bin.stat().st_size == BASE_MODEL_BYTES
    mtime = model_bin.stat().st_mtime_ns
    assert resolve_model("base", tmp_path) == path and model_bin.stat().st_mtime_ns == mtime
    assert not list(path.glob(".model.bin.*")), "temporary file left behind"


@pytest.fixture(scope="module")
def decoder() -> WhisperDecoder:
    settings = AsrSettings(cache_dir=CACHE)
    return WhisperDecoder(str(resolve_model("base", CACHE)), settings)


@pytest.mark.slow
@pytest.mark.parametrize("band", ["clean", "telephone"])
def test_cer_on_real_mandarin(decoder: WhisperDecoder, band: str) -> None:
    # Measured here (beam 5, batch of 2): 0.077 and 0.0-0.154 per clip, clean or telephone band; errors are
    # homophones (停滞 → 停制, 城市 → 尝试). The gate allows about one wrong character in seven on average.
    clips = sorted(AISHELL)
    audios = [load_audio(c) for c in clips]
    if band == "telephone":
        audios = [telephone_band(a) for a in audios]
    results = decoder.decode([DecodeRequest(a, beam_size=5) for a in audios])
    errors = [cer(r.text, AISHELL[c]) for r, c in zip(results, clips, strict=True)]
    assert all(r.rejected is None for r in results)
    assert max(errors) <= 0.2 and sum(errors) / len(errors) <= 0.15, list(zip(clips, errors, strict=True))


@pytest.mark.slow
def test_batched_decode_equals_one_by_one(decoder: WhisperDecoder) -> None:
    audios = [load_audio(c) for c in sorted(AISHELL)]
    together = decoder.decode([DecodeRequest(a, beam_size=1) for a in audios])
    alone = [decoder.decode([DecodeRequest(a, beam_size=1)])[0] for a in audios]
    assert [r.text for r in together] == [r.text for r in alone]


@pytest.mark.slow
def test_long_segment_grows_the_encoder_window(decoder: WhisperDecoder) -> None:
    # 13 s: well past the 500-frame window. (Different sentences: whisper collapses verbatim repeats of the
    # same audio into one, even with the stock 30 s window.)
    a, b = "BAC009S0764W0121.wav", "BAC009S0764W0122.wav"
    pause = np.zeros(4_000, np.float32)
    audio = np.concatenate([load_audio(a), pause, load_audio(b), pause, load_audio(a)])
    result = decoder.decode([DecodeRequest(audio, beam_size=5)])[0]
    assert cer(result.text, AISHELL[a] + AISHELL[b] + AISHELL[a]) <= 0.2, result.text


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["silence", "noise", "hum"])
def test_guards_reject_silence_and_noise(decoder: WhisperDecoder, kind: str) -> None:
    n = 16_000 * 2
    audio = {
        "silence": np.zeros(n, np.float32),
        "noise": (np.random.default_rng(3).standard_normal(n) * 0.05).astype(np.float32),
        "hum": (0.1 * np.sin(2 * np.pi * 50 * np.arange(n) / 16_000)).astype(np.float32),
    }[kind]
    result = decoder.decode([DecodeRequest(audio, beam_size=5)])[0]
    assert result.text == "" and result.rejected is not None, result


@pytest.mark.unit
def test_max_new_tokens_scales_with_duration() -> None:
    short = DecodeRequest(np.zeros(16_000, np.float32), beam_size=1)
    long = DecodeRequest(np.zeros(16_000 * 10, np.float32), beam_size=1)
    assert short.max_new_tokens < long.max_new_tokens < 448


@pytest.mark.unit
def test_a_final_far_shorter_than_its_audio_counts_as_truncated() -> None:
    from compliance_monitor.asr.decoder import DecodeResult, _truncated

    speech = DecodeRequest(np.zeros(int(16_000 * 2.5), np.float32), beam_size=5)
    one_char = DecodeResult("采", -0.8, 0.0, 0.3, None)
    sentence = DecodeResult("身份证后四位是零六二九", -0.5, 0.0, 0.8, None)
    assert _truncated(one_char, speech)
    assert not _truncated(sentence, speech)
    assert not _truncated(one_char, DecodeRequest(np.zeros(16_000, np.float32), beam_size=5))  # 对 / 嗯: fine


@pytest.mark.slow
def test_a_final_in_the_30s_window_reads_what_the_short_window_garbles(decoder: WhisperDecoder) -> None:
    # A dev-call turn (customer, telephone band) that whisper-base garbles in the 5 s window (选粉證後四維市領悠愛酒)
    # and reads in the stock 30 s window finals are decoded in (身份證後四維市零六二九).
    from compliance_monitor.audio.wavfile import read_wav

    audio, rate = read_wav(SHARED / "calls" / "dev" / "dev07.wav")
    turn = telephone_band(audio[int(20.11 * rate) : int(22.56 * rate), 1].astype(np.float32))
    short, full = decoder.decode([DecodeRequest(turn, beam_size=5, min_window=w) for w in (500, 0)])
    assert (short.window, full.window) == (500, 3000)
    assert cer(full.text, "身份证后四位是零六二九") < 0.3, full
    assert cer(full.text, "身份证后四位是零六二九") < cer(short.text, "身份证后四位是零六二九")
