"""The commands a new user types: the demo runs end to end; a bad model or rule pack is a one-line error."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

EXE = str(Path(sys.executable).with_name("compliance-monitor"))


def run_cli(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)


@pytest.mark.e2e
@pytest.mark.slow
def test_demo_streams_the_bundled_call_and_raises_its_violations(tmp_path: Path) -> None:
    db = tmp_path / "demo.sqlite3"
    env = {"CM_ARCHIVE__PATH": str(db), "CM_SERVER__PORT": str(free_port())}
    done = run_cli("demo", "--once", "--speed", "3", "--linger", "1", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Supervisor console" in done.stdout
    with sqlite3.connect(db) as con:
        speakers = {r[0] for r in con.execute("SELECT speaker FROM segments")}
        categories = {r[0] for r in con.execute("SELECT category FROM findings WHERE speaker = 'agent'")}
        sources = {r[0] for r in con.execute("SELECT source FROM findings WHERE speaker = 'agent'")}
        actions = {r[0] for r in con.execute("SELECT action FROM actions")}
        ended = con.execute("SELECT COUNT(*) FROM calls WHERE ended_at IS NOT NULL").fetchone()[0]
    assert speakers == {"agent", "customer"}
    # the bundled call's script (compliance_monitor/assets/demo_call.json) labels these agent violations
    script = json.loads((Path(__file__).parents[1] / "compliance_monitor/assets/demo_call.json").read_text())
    expected = {label for t in script["turns"] if t["speaker"] == "agent" for label in t["labels"]} - {"normal"}
    assert expected <= categories, (expected, categories)
    # both detectors in force on a fresh install: the shipped classifier raises the veiled threat no rule names
    assert sources == {"rule", "model"}, sources
    assert {"warn_collector", "alert_supervisor"} <= actions
    assert ended == 1


@pytest.mark.unit
def test_unavailable_model_is_a_one_line_error(tmp_path: Path) -> None:
    env = {"CM_ASR_MODEL": "large-v3-not-here", "HF_HUB_OFFLINE": "1", "CM_ARCHIVE__PATH": str(tmp_path / "a.db")}
    done = run_cli("serve", "--port", str(free_port()), env=env, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ASR model 'large-v3-not-here' is not available offline")
    assert "Traceback" not in done.stderr


@pytest.mark.unit
def test_invalid_rule_pack_is_reported_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "pack: bad\nversion: 1\nlanguage: zh\nrules:\n  - id: x.y\n    category: threat\n    severty: high\n"
    )
    env = {"CM_RULES__EXTRA_FILES": json.dumps([str(bad)]), "CM_ARCHIVE__PATH": str(tmp_path / "a.db")}
    done = run_cli("serve", "--port", str(free_port()), env=env, timeout=60)
    assert done.returncode == 2
    assert f"{bad}:7: rules.0.severty: Extra inputs are not permitted" in done.stderr
    assert "Traceback" not in done.stderr
