"""`eval calls` end to end on two short labelled calls: it runs and reports (figures are not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compliance_monitor.evalcalls import Expected, score_call
from tests.conftest import SHARED

EXE = str(Path(sys.executable).with_name("compliance-monitor"))
MANIFEST = SHARED / "calls" / "dev" / "manifest.jsonl"


@pytest.mark.e2e
@pytest.mark.slow
def test_eval_calls_runs_and_reports_json(tmp_path: Path) -> None:
    env = {**os.environ, "CM_ARCHIVE__PATH": str(tmp_path / "eval.sqlite3")}
    done = subprocess.run(
        [EXE, "eval", "calls", str(MANIFEST), "--call", "dev06", "--call", "dev01", "--speed", "4", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert [c["call_id"] for c in report["calls"]] == ["dev01", "dev06"]
    assert all(c["ended"] for c in report["calls"])
    assert set(report["totals"]) >= {"expected", "caught", "recall", "false_alarms", "latency_p50_s", "latency_p95_s"}
    assert report["totals"]["expected"] == 2  # dev06: privacy_leak@4 and missing_disclosure


@pytest.mark.unit
def test_scoring_rules() -> None:
    call = {
        "call_id": "x",
        "compliant": False,
        "duration_s": 30.0,
        "turns": [{"speaker": "agent", "t0": 0.0, "t1": 5.0}, {"speaker": "agent", "t0": 10.0, "t1": 14.0}],
        "expected": [{"category": "threat", "speaker": "agent", "turn_index": 1, "t1": 14.0}],
    }

    def finding(category: str, t0: float, t1: float, severity: str = "high") -> tuple[float, dict]:
        return (
            0.0,
            {
                "type": "finding",
                "speaker": "agent",
                "category": category,
                "severity": severity,
                "t0": t0,
                "t1": t1,
                "rule_id": "r",
                "matched_text": "",
            },
        )

    started = 1000.0
    events = [
        finding("threat", 0.2, 4.8),
        (started + 15.0, finding("threat", 10.1, 13.9)[1]),
        finding("abuse", 10.1, 13.9, "info"),
        finding("calling_hours", 0, 0),
    ]
    result = score_call(call, events, started, speed=1.0)
    (expected,) = result.expected
    assert isinstance(expected, Expected) and expected.caught and expected.latency_s == pytest.approx(1.0)
    assert [f["category"] for f in result.false_alarms] == ["threat"]  # on the wrong (earlier) turn
    assert [f["category"] for f in result.other_findings] == ["calling_hours"]  # clock-dependent: apart

    # raised on a partial and withdrawn by the final: neither a catch nor a false alarm
    partial = finding("threat", 10.1, 13.9)[1] | {"finding_id": 7}
    events = [(started + 12.0, partial), (started + 14.0, {"type": "finding_withdrawn", "finding_id": 7})]
    result = score_call(call, events, started, speed=1.0)
    assert (result.withdrawn, result.false_alarms, result.expected[0].caught) == (1, [], False)
