"""A new user's first hour: Ctrl-C ends the demo cleanly, replay prints the findings it sees, every option is
explained. No ASR model is loaded: the server and the bridge are stood in for where they would need one."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest
import websockets

from compliance_monitor import cli
from compliance_monitor.config import Settings
from compliance_monitor.ingest import replay as replay_mod
from compliance_monitor.ingest.replay import ReplayResult, console_url, describe_event, watch_call

pytestmark = pytest.mark.unit

FINDING = {
    "type": "finding",
    "call_id": "CA1",
    "finding_id": 7,
    "speaker": "agent",
    "segment_no": 3,
    "rule_id": "improper_payment.fee_or_personal_account",
    "category": "improper_payment",
    "severity": "high",
    "matched_text": "转到我私人账户",
    "span": [2, 9],
    "t0": 12.5,
    "t1": 14.0,
    "explanation": "催收员索取额外费用或让客户向个人账户付款。",
    "collector_explanation": "请引导客户通过官方渠道还款。",
    "source": "rule",
    "score": 1.0,
    "rule_source": "GB/T 45251—2025 …",
}


def all_actions(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [(f"{name} {n}", a) for n, a in all_actions(sub)]
        elif not isinstance(action, argparse._HelpAction):
            out.append((action.dest, action))
    return out


def test_every_option_and_argument_has_help() -> None:
    missing = [name for name, action in all_actions(cli.build_parser()) if not action.help]
    assert missing == []


def test_top_level_help_reads_as_prose_and_names_the_demo_call() -> None:
    text = cli.build_parser().format_help()
    assert "``" not in text and "serve | replay" not in text
    assert "demo_call.wav" in text
    assert (Path(cli.__file__).parent / "assets" / cli.DEMO_CALL).is_file()


def test_console_url_follows_the_bridge_url() -> None:
    assert console_url("ws://127.0.0.1:8000/bridge/twilio") == "ws://127.0.0.1:8000/ws/console"
    assert console_url("wss://h:9/x/bridge/pcm?token=t") == "wss://h:9/x/ws/console"
    with pytest.raises(ValueError, match="bridge URL"):
        console_url("ws://h/ws/console")


def test_a_finding_is_described_with_its_rule_and_source() -> None:
    text = describe_event(FINDING)
    assert "improper_payment/high" in text and "「转到我私人账户」" in text and "依据: GB/T 45251" in text
    assert "halt_call" in describe_event({"type": "action", "action": "halt_call", "reason": "r"})


async def test_watch_call_passes_on_this_calls_findings_until_it_ends() -> None:
    events = [
        {"type": "transcript", "call_id": "CA1", "text": "您好"},
        {**FINDING, "call_id": "OTHER"},
        FINDING,
        {"type": "action", "call_id": "CA1", "action": "warn_collector", "reason": "collector warned"},
        {"type": "call_ended", "call_id": "CA1", "reason": "stop"},
        {**FINDING, "finding_id": 8},  # after the end: not read
    ]
    tokens: list[str] = []

    async def feed(ws: websockets.ServerConnection) -> None:
        tokens.append(f"{ws.request.path} {ws.request.headers.get('authorization')}")
        for e in events:
            await ws.send(json.dumps(e))
        await asyncio.sleep(1)

    seen: list[dict] = []
    async with websockets.serve(feed, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        ended = await watch_call(f"ws://127.0.0.1:{port}/ws/console", "CA1", seen.append, token="sup")
    assert ended is None
    assert [(e["type"], e.get("finding_id")) for e in seen] == [("finding", 7), ("action", None), ("call_ended", None)]
    assert tokens == ["/ws/console Bearer sup"]  # the token in the header, never in the URL


async def test_replay_prints_the_findings_from_the_console_feed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def feed(ws: websockets.ServerConnection) -> None:
        await asyncio.sleep(0.2)  # the call is streaming
        for e in (FINDING, {"type": "call_ended", "call_id": "CA1", "reason": "stop"}):
            await ws.send(json.dumps(e))
        await asyncio.sleep(1)

    async def fake_replay(path: Path, url: str, **kw: object) -> ReplayResult:
        await asyncio.sleep(0.1)
        return ReplayResult(str(kw["call_id"]), frames_sent=5, audio_s=0.1, closed_code=1000)

    monkeypatch.setattr(replay_mod, "replay", fake_replay)
    async with websockets.serve(feed, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        args = cli.build_parser().parse_args(
            ["replay", "call.wav", "--url", f"ws://127.0.0.1:{port}/bridge/twilio", "--call-id", "CA1", "--wait", "5"]
        )
        result, findings = await cli._replay(args)
    assert (result.call_id, findings) == ("CA1", 1)
    out = capsys.readouterr().out
    assert "improper_payment.fee_or_personal_account" in out and "call ended" in out


async def test_replay_without_a_console_feed_still_streams(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def fake_replay(path: Path, url: str, **kw: object) -> ReplayResult:
        return ReplayResult(str(kw["call_id"]), closed_code=1000)

    monkeypatch.setattr(replay_mod, "replay", fake_replay)
    args = cli.build_parser().parse_args(["replay", "call.wav", "--url", "ws://127.0.0.1:9/bridge/pcm"])
    result, findings = await cli._replay(args)
    assert findings is None and result.closed_code == 1000
    assert "cannot read findings" in capsys.readouterr().err


async def test_ctrl_c_in_the_demo_ends_it_cleanly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """uvicorn catches Ctrl-C and stops serving; the next connection would be refused. The demo ends with 0."""
    server_up, server_down = asyncio.Event(), asyncio.Event()

    async def fake_serve(settings: Settings, until: asyncio.Future[None] | None = None, **kw: object) -> None:
        server_up.set()
        await asyncio.sleep(0.3)  # ... then Ctrl-C: uvicorn shuts down and returns
        server_down.set()

    async def fake_wait_until_up(settings: Settings, within_s: float = 120.0) -> None:
        await server_up.wait()

    async def fake_replay(path: Path, url: str, **kw: object) -> ReplayResult:
        await server_down.wait()
        raise ConnectionRefusedError(111, "Connect call failed")

    monkeypatch.setattr(cli, "_serve", fake_serve)
    monkeypatch.setattr(cli, "_wait_until_up", fake_wait_until_up)
    monkeypatch.setattr(replay_mod, "replay", fake_replay)
    args = cli.build_parser().parse_args(["demo"])
    assert await cli._demo(Settings(), args) == 0
    assert "demo stopped" in capsys.readouterr().out


def test_keyboard_interrupt_after_the_server_stopped_exits_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def interrupted(settings: Settings, args: argparse.Namespace) -> int:
        raise KeyboardInterrupt  # uvicorn re-raises the SIGINT it caught once it has shut down

    monkeypatch.setattr(cli, "_demo", interrupted)
    monkeypatch.setattr(cli, "_settings", lambda args: Settings())
    assert cli.main(["demo"]) == 0
    assert "demo stopped" in capsys.readouterr().out


DEMO_UNDER_CTRL_C = r"""
import asyncio, sys
from fastapi import FastAPI
import compliance_monitor.api.app as app_mod
import compliance_monitor.ingest.replay as replay_mod
from compliance_monitor import cli

app = FastAPI()

@app.get("/api/health")
async def health() -> dict:
    return {"ok": True}

async def stream_forever(path, url, **kw):  # a call that is still streaming when Ctrl-C comes
    print("STREAMING", flush=True)
    await asyncio.sleep(3600)

app_mod.preflight = lambda settings: None  # no ASR model here
app_mod.create_app = lambda settings: app
replay_mod.replay = stream_forever
sys.exit(cli.main(["demo", "--port", sys.argv[1]]))
"""


def test_ctrl_c_ends_a_real_demo_server_with_exit_0_and_no_traceback(tmp_path: Path) -> None:
    """The real uvicorn signal handling (it catches SIGINT, shuts down, then re-raises it), a stand-in app."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import free_port

    script = tmp_path / "demo_ctrl_c.py"
    script.write_text(DEMO_UNDER_CTRL_C, encoding="utf-8")
    env = {**os.environ, "CM_ARCHIVE__PATH": str(tmp_path / "a.sqlite3")}
    cmd = [sys.executable, str(script), str(free_port())]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while "STREAMING" not in proc.stdout.readline():
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "ConnectionRefusedError" not in err
    assert "demo stopped" in out
