"""The decoder's one retry and its rescue of rejected finals, with scripted model outputs (no weights loaded)."""

from __future__ import annotations

import numpy as np
import pytest

from compliance_monitor.asr.decoder import DecodeRequest, DecodeResult, WhisperDecoder
from compliance_monitor.asr.prompt import DOMAIN_PROMPT, inside_prompt, prompt_words
from compliance_monitor.config import AsrSettings

pytestmark = pytest.mark.unit


def ok(text: str, logprob: float = -0.3) -> DecodeResult:
    return DecodeResult(text, logprob, 0.01, 1.0, None, text)


def rejected(reason: str, hypothesis: str, logprob: float = -1.2, no_speech: float = 0.1) -> DecodeResult:
    return DecodeResult("", logprob, no_speech, 1.0, reason, hypothesis)


class ScriptedDecoder(WhisperDecoder):
    """WhisperDecoder with the model replaced by a script: first pass, then the retry."""

    def __init__(self, first: DecodeResult, retry: DecodeResult, prompt: str | None = DOMAIN_PROMPT) -> None:
        self.settings = AsrSettings(initial_prompt=prompt)
        self._prompt_words = prompt_words(prompt)
        self.script = [first, retry]
        self.calls: list[dict[str, object]] = []

    def _features(self, audios: list[np.ndarray], window: int | None = None) -> np.ndarray:
        return np.zeros((len(audios), 80, window or 500), np.float32)

    def _generate(self, features, requests, beam, *, with_domain_prompt=True):  # type: ignore[no-untyped-def, override]
        self.calls.append({"window": features.shape[2], "prompt": with_domain_prompt})
        return [self.script.pop(0) for _ in requests]


def final(seconds: float = 3.0) -> DecodeRequest:
    return DecodeRequest(np.zeros(int(16_000 * seconds), np.float32), beam_size=5)


def test_an_accepted_final_is_decoded_once() -> None:
    dec = ScriptedDecoder(ok("您好这里是催收中心"), ok("unused"))
    (result,) = dec.decode([final()])
    assert result.text == "您好这里是催收中心" and result.retries == () and len(dec.calls) == 1


def test_a_prompt_echo_is_decoded_again_in_the_full_window_without_the_prompt() -> None:
    dec = ScriptedDecoder(rejected("prompt_echo", "电：贷款逾期、欠款、", -0.4), ok("我今天下午开会"))
    (result,) = dec.decode([final()])
    assert result.text == "我今天下午开会" and result.rejected is None
    assert result.retries == ("full_window", "no_prompt")
    assert dec.calls == [{"window": 500, "prompt": True}, {"window": 3000, "prompt": False}]


def test_two_unsure_decodes_keep_the_more_confident_hypothesis() -> None:
    dec = ScriptedDecoder(
        rejected("low_confidence", "我下周一还", -1.3), rejected("low_confidence", "我下周一还款", -1.1)
    )
    (result,) = dec.decode([final()])
    assert (result.text, result.rejected, result.rescued) == ("我下周一还款", None, "low_confidence")


@pytest.mark.parametrize("reason", ["no_speech", "repetition", "prompt_echo"])
def test_silence_loops_and_prompt_read_back_are_never_kept(reason: str) -> None:
    dec = ScriptedDecoder(rejected("low_confidence", "嗯", -1.5), rejected(reason, "法院法院法院"))
    (result,) = dec.decode([final()])
    assert result.text == "" and result.rescued is None  # the retry heard no words: the unsure 嗯 is not kept
    dec = ScriptedDecoder(rejected(reason, "法院法院法院"), rejected(reason, "法院法院法院"))
    (result,) = dec.decode([final()])
    assert result.text == "" and result.rejected == reason and result.rescued is None


def test_no_speech_is_not_retried_and_partials_never_are() -> None:
    dec = ScriptedDecoder(rejected("no_speech", "你", no_speech=0.9), ok("unused"))
    assert dec.decode([final()])[0].rejected == "no_speech" and len(dec.calls) == 1
    dec = ScriptedDecoder(rejected("low_confidence", "喂"), ok("unused"))
    partial = DecodeRequest(np.zeros(16_000, np.float32), beam_size=1, fallback=False)
    assert dec.decode([partial])[0].rejected == "low_confidence" and len(dec.calls) == 1


def test_a_truncated_final_takes_the_longer_reading() -> None:
    dec = ScriptedDecoder(ok("采"), ok("身份证后四位是零六二九"))
    assert dec.decode([final(2.5)])[0].text == "身份证后四位是零六二九"


def test_inside_prompt_spots_a_stretch_of_the_prompt_read_back() -> None:
    assert inside_prompt("电:贷款逾期、欠款、", DOMAIN_PROMPT)
    assert inside_prompt("贷款逾期", DOMAIN_PROMPT)  # may be real speech: costs a retry, not the words
    assert not inside_prompt("您的贷款已经逾期三天", DOMAIN_PROMPT)
    assert not inside_prompt("法院", DOMAIN_PROMPT)  # too short to tell
    assert not inside_prompt("贷款逾期", None)
