"""`asr eval`: CER normalisation, turns of stereo files, the prompt axis, and the command over the real recordings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from compliance_monitor.asr.decoder import DecodeRequest
from compliance_monitor.asr.evaluate import evaluate, load_manifest, make_variants
from compliance_monitor.asr.prompt import DOMAIN_PROMPT
from compliance_monitor.asr.scoring import Clip, cer, format_report, normalise_for_cer, pooled, score
from compliance_monitor.audio.wavfile import write_wav
from compliance_monitor.cli import build_parser
from compliance_monitor.config import AsrSettings

EXE = str(Path(sys.executable).with_name("compliance-monitor"))
MANIFEST = Path(__file__).parent / "data" / "asr_manifest.jsonl"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("hyp", "ref"),
    [
        ("12線城市雖然", "一二线城市虽然"),
        ("1-2线城市", "一二线城市"),
        ("应还6320元", "应还六千三百二十元"),
        ("甚至, 出现。", "甚至出现"),
    ],
)
def test_cer_normalises_script_numerals_and_punctuation(hyp: str, ref: str) -> None:
    assert normalise_for_cer(hyp) == normalise_for_cer(ref)
    assert cer(hyp, ref) == 0.0


@pytest.mark.unit
def test_cer_counts_substitutions_insertions_and_deletions() -> None:
    assert cer("甚至出现交易几乎停制的情况", "甚至出现交易几乎停滞的情况") == pytest.approx(1 / 13)
    assert cer("", "一二三四") == 1.0
    assert cer("一二三四五", "一二三四") == pytest.approx(0.25)


def _stereo_call(tmp_path: Path) -> Path:
    """3 s at 16 kHz: channel 0 silent, channel 1 a 0.5 tone from 1 s to 2 s only."""
    audio = np.zeros((48_000, 2), np.float32)
    audio[16_000:32_000, 1] = 0.5
    return write_wav(tmp_path / "call.wav", audio)


def _manifest(tmp_path: Path, rows: list[dict[str, object]]) -> Path:
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join(json.dumps({"audio": "call.wav", "reference": "对"} | r) + "\n" for r in rows))
    return path


@pytest.mark.unit
def test_manifest_turns_take_one_channel_and_span(tmp_path: Path) -> None:
    _stereo_call(tmp_path)
    turn, other, whole = load_manifest(
        _manifest(
            tmp_path,
            [
                {"kind": "synthetic", "t0": 1.0, "t1": 2.0, "channel": 1},
                {"kind": "synthetic", "t0": 1.0, "t1": 2.0, "channel": 0},
                {},
            ],
        )
    )
    assert (turn.name, turn.kind, len(turn.audio)) == ("call@1.00", "synthetic", 16_000)
    assert np.all(np.abs(turn.audio - 0.5) < 1e-3)
    assert not np.any(other.audio)
    assert (whole.name, whole.kind, len(whole.audio)) == ("call", "read", 48_000)
    assert np.abs(whole.audio).max() == pytest.approx(0.25, abs=1e-3)  # no channel: the two mixed


@pytest.mark.unit
@pytest.mark.parametrize(
    ("row", "error"),
    [
        ({"kind": "podcast"}, "kind 'podcast'"),
        ({"channel": 2}, "no channel 2"),
        ({"t0": 2.0, "t1": 4.0}, "outside the file"),
        ({"t0": 2.0, "t1": 1.0}, "outside the file"),
    ],
)
def test_manifest_rejects_bad_turns(tmp_path: Path, row: dict[str, object], error: str) -> None:
    _stereo_call(tmp_path)
    with pytest.raises(ValueError, match=error):
        load_manifest(_manifest(tmp_path, [row]))


class _EchoPromptDecoder:
    """Stands in for WhisperDecoder: 'transcribes' its initial prompt, or 对 without one."""

    def __init__(self, settings: AsrSettings) -> None:
        self.settings = settings

    def decode(self, requests: list[DecodeRequest]) -> list[SimpleNamespace]:
        return [SimpleNamespace(text=self.settings.initial_prompt or "对") for _ in requests]


@pytest.mark.unit
def test_prompt_axis_sets_the_initial_prompt_and_splits_the_report() -> None:
    variants = make_variants(AsrSettings(initial_prompt="configured"), [500], ["none", "domain"])
    assert [(v.name, v.prompt, v.settings.initial_prompt) for v in variants] == [
        ("window=500", "none", None),
        ("window=500", "domain", DOMAIN_PROMPT),
    ]
    clip = Clip("c", np.zeros(16_000, np.float32), "对", "synthetic", "")
    setups = [(v, _EchoPromptDecoder(v.settings)) for v in variants]
    rows = evaluate([clip], setups, [5], ["whole"], ["clean"])  # type: ignore[arg-type]
    assert [(r.setting, r.cer) for r in rows] == [
        ("window=500 beam=5 prompt=none", 0.0),
        ("window=500 beam=5 prompt=domain", cer(DOMAIN_PROMPT, "对")),
    ]
    assert [(s["setting"], s["clips"]) for s in pooled(rows)] == [
        ("window=500 beam=5 prompt=domain", 1),
        ("window=500 beam=5 prompt=none", 1),
    ]
    header, *_ = format_report(rows).splitlines()
    assert header.split()[:6] == ["clip", "cond", "mode", "setting", "CER", "lost"]


@pytest.mark.unit
def test_pooled_cer_weighs_by_reference_length_and_counts_lost_clips() -> None:
    long = Clip("long", np.zeros(16_000, np.float32), "一二三四五六七八九十", "conversational", "")
    short = Clip("short", np.zeros(16_000, np.float32), "对的", "conversational", "")
    rows = [
        score(long, "telephone", "live", "一二三四五六七八九十"),  # 0 edits of 10
        score(short, "telephone", "live", ""),  # 2 edits of 2: nothing heard
        score(long, "telephone", "offline", "一二三四"),  # 6 deletions: under half heard
    ]
    live, offline = pooled(rows)
    assert (live["mode"], live["cer_pooled"], live["cer_mean"], live["lost"]) == ("live", round(2 / 12, 3), 0.5, 1)
    assert (offline["mode"], offline["cer_pooled"], offline["lost"]) == ("offline", 0.6, 1)
    assert [r.lost for r in rows] == [False, True, True]


@pytest.mark.unit
def test_prompt_flag_defaults_to_the_served_prompt() -> None:
    parser = build_parser()
    assert parser.parse_args(["asr", "eval", "m.jsonl"]).prompt == ["served"]
    served = make_variants(AsrSettings(initial_prompt="configured"), [500], ["served"])
    assert [v.settings.initial_prompt for v in served] == ["configured"]
    assert parser.parse_args(["asr", "eval", "m.jsonl", "--prompt", "none", "domain"]).prompt == ["none", "domain"]
    with pytest.raises(SystemExit):
        parser.parse_args(["asr", "eval", "m.jsonl", "--prompt", "other"])


@pytest.mark.slow
def test_asr_eval_runs_on_the_manifest_and_reports() -> None:
    modes = ("offline", "whole", "streaming")
    done = subprocess.run(
        [EXE, "asr", "eval", str(MANIFEST), "--mode", *modes, "--condition", "telephone", "--json"],
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert {(r["clip"], r["mode"]) for r in report["rows"]} == {
        (c, m) for c in ("BAC009S0764W0121", "BAC009S0764W0122") for m in modes
    }
    assert all(0.0 <= r["cer"] <= 1.0 and r["decode_s"] for r in report["rows"])
    assert {s["mode"] for s in report["summary"]} == set(modes)
    assert not any(r["lost"] for r in report["rows"])


@pytest.mark.unit
def test_prompt_echo_is_recognised() -> None:
    from compliance_monitor.asr.prompt import echoes_prompt, prompt_words

    words = prompt_words(DOMAIN_PROMPT)
    assert "贷款逾期" in words and "银行卡" in words
    assert echoes_prompt("法院、法院、法院、法院、", words) == 4  # what noise decoded to with the prompt
    assert echoes_prompt("银行卡。", words) == 1
    assert echoes_prompt("你的银行卡号是多少", words) == 0  # real speech that uses the words
    assert echoes_prompt("法院找我干什么", words) == 0
    assert echoes_prompt("银行卡", ()) == 0  # no prompt, nothing to echo


REAL_SPEECH = Path(__file__).parent / "data" / "real_speech" / "manifest.jsonl"


@pytest.mark.e2e
@pytest.mark.slow
def test_real_speech_ci_subset_streams_live_over_the_bridge_and_loses_nothing(tmp_path: Path) -> None:
    """Real recordings of people (tests/data/real_speech, the rows marked ci) through a real server, over the
    Twilio bridge in the telephone band at real-time pace: every clip gets finals holding at least half of it."""
    done = subprocess.run(
        [EXE, "asr", "eval", str(REAL_SPEECH), "--ci", "--mode", "live", "--condition", "telephone", "--json"],
        env=os.environ | {"CM_ARCHIVE__PATH": str(tmp_path / "archive.sqlite3")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    ci_rows = [
        json.loads(line) for line in REAL_SPEECH.read_text(encoding="utf-8").splitlines() if '"ci": true' in line
    ]
    assert len(report["rows"]) == len(ci_rows) >= 5
    assert {r["mode"] for r in report["rows"]} == {"live"}
    lost = [(r["clip"], r["hypothesis"]) for r in report["rows"] if r["lost"]]
    assert not lost, lost
    assert all(r["decode_s"] for r in report["rows"]), "every clip got at least one final"
