"""`asr eval`: CER normalisation, and the command runs over the real-recordings manifest and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compliance_monitor.asr.evaluate import cer, normalise_for_cer

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


@pytest.mark.slow
def test_asr_eval_runs_on_the_manifest_and_reports() -> None:
    done = subprocess.run(
        [EXE, "asr", "eval", str(MANIFEST), "--mode", "whole", "streaming", "--condition", "telephone", "--json"],
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert {(r["clip"], r["mode"]) for r in report["rows"]} == {
        (c, m) for c in ("BAC009S0764W0121", "BAC009S0764W0122") for m in ("whole", "streaming")
    }
    assert all(0.0 <= r["cer"] <= 1.0 and r["rtf"] > 0 for r in report["rows"])
    assert {s["mode"] for s in report["summary"]} == {"whole", "streaming"}
