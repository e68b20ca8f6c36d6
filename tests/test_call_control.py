"""What the monitor does to the phone call (``CallControl``), and what happens when it can no longer listen.

The policy drives halts and audio warnings through the bridge; each is archived with its outcome and
published. A failure in the pipeline (archive, classifier, bus, a stuck stage) never leaves a call
unmonitored in silence: the supervisor is alerted, the archive marks the call, the bridge is told.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import websockets

from compliance_monitor.api.app import build_services
from compliance_monitor.archive.sqlite import Archive
from compliance_monitor.asr.decoder import DecodeRequest, DecodeResult
from compliance_monitor.bus.memory import InMemoryBus, Subscription
from compliance_monitor.ingest.pcm import PcmStreamParser
from compliance_monitor.messages import (
    ActionEvent,
    ActionOutcomeEvent,
    CallStarted,
    ControlResult,
    Event,
    MonitoringLostEvent,
    Outcome,
    Speaker,
    Transcript,
    TranscriptEvent,
)
from compliance_monitor.monitor import Monitor
from compliance_monitor.pipeline import CallSession
from tests.conftest import LiveServer, load_audio, make_settings
from tests.fakes import FakeDecoder
from tests.test_live_call import FakeTransport, serve, settled
from tests.wsclient import record_feed

pytestmark = pytest.mark.unit

THREAT = "你再不还我们就派人去你家"  # threat.visit_home_or_work, high


class ScriptedBridge:
    """A bridge whose hangup / warn_agent answer what the test says, counting the requests."""

    def __init__(self, hangup: ControlResult | Exception | None = None, warn: ControlResult | None = None) -> None:
        self.hangup_answer = hangup or ControlResult(Outcome.DONE, "ended")
        self.warn_answer = warn or ControlResult(Outcome.DONE, "tone played")
        self.hangups: list[str] = []
        self.prompts: list[str] = []
        self.hold = asyncio.Event()
        self.hold.set()

    async def hangup(self, reason: str) -> ControlResult:
        self.hangups.append(reason)
        await self.hold.wait()
        if isinstance(self.hangup_answer, Exception):
            raise self.hangup_answer
        return self.hangup_answer

    async def warn_agent(self, prompt: str) -> ControlResult:
        self.prompts.append(prompt)
        return self.warn_answer

    async def lost(self, reason: str) -> None:
        pass


def drain(sub: Subscription) -> list[Event]:
    events = []
    while not sub.queue.empty():
        events.append(sub.queue.get_nowait())
    return events


async def make_session(tmp_path: Path, bridge: ScriptedBridge, **policy: Any) -> CallSession:
    settings = make_settings(
        tmp_path, rules={"packs": ["cn_collection"]}, policy={"halt_at": "high", "control_timeout_s": 0.5, **policy}
    )
    services = await build_services(settings, FakeDecoder)  # type: ignore[arg-type]
    started = CallStarted("c1", "a7", "pcm", (Speaker.AGENT, Speaker.CUSTOMER), {}, time.time())
    await services.archive.start_call(started)
    return CallSession(started, services, bridge)


@pytest.fixture
async def closing() -> AsyncIterator[list[CallSession]]:
    sessions: list[CallSession] = []
    yield sessions
    for session in sessions:
        await session.aclose()
        await session.services.asr.aclose()
        await session.services.archive.aclose()


async def actions(session: CallSession) -> list[dict[str, Any]]:
    call = await session.services.archive.get_call(session.call_id)
    assert call is not None
    return call["actions"]  # type: ignore[no-any-return]


def threat(segment_no: int = 1) -> Transcript:
    return Transcript("c1", Speaker.AGENT, segment_no, THREAT, 2.0 * segment_no, 2.0 * segment_no + 1.5, True)


# --------------------------------------------------------------------------- the policy drives the phone call


async def test_an_automatic_halt_ends_the_call_and_archives_its_outcome(
    tmp_path: Path, closing: list[CallSession]
) -> None:
    bridge = ScriptedBridge()
    session = await make_session(tmp_path, bridge, auto_halt=True)
    closing.append(session)
    feed = cast(InMemoryBus, session.services.bus).subscribe(lambda _e: True, replay_live=False)
    await session.analyse(threat())
    await session.settle_controls()
    assert bridge.hangups and session.input_ended and session.end_reason == "halted"
    halt = next(a for a in await actions(session) if a["action"] == "halt_call")
    assert (halt["outcome"], halt["outcome_detail"]) == ("done", "ended")
    events = drain(feed)
    announced = next(e for e in events if isinstance(e, ActionEvent) and e.action == "halt_call")
    assert announced.outcome is Outcome.PENDING  # the console says 'ending' only while it is being ended
    done = [e for e in events if isinstance(e, ActionOutcomeEvent)]
    assert any(e.action_id == halt["action_id"] and e.outcome is Outcome.DONE for e in done)


async def test_without_auto_halt_a_halt_is_only_recommended(tmp_path: Path, closing: list[CallSession]) -> None:
    bridge = ScriptedBridge()
    session = await make_session(tmp_path, bridge, auto_halt=False)
    closing.append(session)
    feed = cast(InMemoryBus, session.services.bus).subscribe(lambda _e: True, replay_live=False)
    await session.analyse(threat())
    await session.settle_controls()
    assert bridge.hangups == [] and not session.input_ended and not session.halting
    halt = next(a for a in await actions(session) if a["action"] == "halt_call")
    assert halt["outcome"] == "recommended"
    event = next(e for e in drain(feed) if isinstance(e, ActionEvent) and e.action == "halt_call")
    assert event.outcome is Outcome.RECOMMENDED
    # The supervisor confirms: now the bridge is asked, and the call ends.
    assert await session.halt("confirmed", "supervisor") is Outcome.DONE
    assert bridge.hangups == ["confirmed"] and session.end_reason == "halted"


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (ControlResult(Outcome.DONE, "tone played"), "done"),
        (ControlResult(Outcome.NOT_SUPPORTED, "no"), "not_supported"),
    ],
)
async def test_a_collector_warning_asks_the_bridge_for_a_prompt(
    tmp_path: Path, closing: list[CallSession], answer: ControlResult, outcome: str
) -> None:
    bridge = ScriptedBridge(warn=answer)
    session = await make_session(tmp_path, bridge, halt_at="never")
    closing.append(session)
    await session.analyse(threat())
    await session.settle_controls()
    assert len(bridge.prompts) == 1 and bridge.prompts[0]  # the collector's explanation, for a spoken prompt
    warn = next(a for a in await actions(session) if a["action"] == "warn_collector")
    assert warn["outcome"] == outcome


async def test_audio_warnings_can_be_turned_off(tmp_path: Path, closing: list[CallSession]) -> None:
    bridge = ScriptedBridge()
    session = await make_session(tmp_path, bridge, halt_at="never", audio_warnings=False)
    closing.append(session)
    await session.analyse(threat())
    await session.settle_controls()
    assert bridge.prompts == []
    warn = next(a for a in await actions(session) if a["action"] == "warn_collector")
    assert warn["outcome"] is None  # on screen only


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        (ControlResult(Outcome.FAILED, "Twilio answered 500"), "Twilio answered 500"),
        (ControlResult(Outcome.NOT_SUPPORTED, "no way to end it"), "no way to end it"),
        (OSError("connection reset"), "OSError: connection reset"),
        ("hangs", "did not answer within 0.5 s"),
    ],
)
async def test_a_halt_the_bridge_cannot_do_leaves_the_call_monitored(
    tmp_path: Path, closing: list[CallSession], answer: Any, detail: str
) -> None:
    bridge = ScriptedBridge(hangup=answer if answer != "hangs" else None)
    if answer == "hangs":
        bridge.hold.clear()
    session = await make_session(tmp_path, bridge)
    closing.append(session)
    outcome = await session.halt("stop it", "supervisor")
    assert outcome in (Outcome.FAILED, Outcome.NOT_SUPPORTED)
    assert not session.input_ended and not session.halting  # still listening; may be halted again
    halt = next(a for a in await actions(session) if a["action"] == "halt_call")
    assert halt["outcome"] == outcome.value and detail in halt["outcome_detail"]
    bridge.hangup_answer, bridge.hold = ControlResult(Outcome.DONE), asyncio.Event()
    bridge.hold.set()
    assert await session.halt("again", "supervisor") is Outcome.DONE and session.input_ended


async def test_two_halts_at_once_send_one_hangup(tmp_path: Path, closing: list[CallSession]) -> None:
    bridge = ScriptedBridge()
    bridge.hold.clear()
    session = await make_session(tmp_path, bridge)
    closing.append(session)
    first = asyncio.create_task(session.halt("one", "supervisor"))
    await asyncio.sleep(0.05)
    assert await session.halt("two", "supervisor") is None
    bridge.hold.set()
    assert await first is Outcome.DONE and bridge.hangups == ["one"]


async def test_an_old_archive_gets_the_outcome_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE calls (call_id TEXT PRIMARY KEY, agent_id TEXT, bridge TEXT NOT NULL, metadata TEXT NOT NULL, "
        "started_at REAL NOT NULL, ended_at REAL, end_reason TEXT);"
        "CREATE TABLE actions (action_id INTEGER PRIMARY KEY, call_id TEXT NOT NULL, finding_id INTEGER, "
        "action TEXT NOT NULL, reason TEXT NOT NULL, actor TEXT NOT NULL, created_at REAL NOT NULL);"
        "INSERT INTO calls VALUES ('old', NULL, 'pcm', '{}', 1.0, 2.0, 'stop');"
        "INSERT INTO actions VALUES (1, 'old', NULL, 'halt_call', 'r', 'supervisor', 1.5);"
    )
    db.commit()
    db.close()
    archive = Archive(path, lambda text: text.split())
    await archive.open()
    try:
        call = await archive.get_call("old")
        assert call is not None and call["actions"][0]["outcome"] is None  # old rows keep their values
        await archive.set_action_outcome("old", 1, "done", "late")
        call = await archive.get_call("old")
        assert call is not None and call["actions"][0]["outcome"] == "done"
    finally:
        await archive.aclose()


# --------------------------------------------------------------------------- never unmonitored in silence


@pytest.fixture
async def monitor(tmp_path: Path) -> AsyncIterator[Monitor]:
    settings = make_settings(
        tmp_path,
        ingest={
            "idle_timeout_s": 20,
            "stall_timeout_s": 0.3,
            "reconnect_grace_s": 0.0,
            "chunk_queue_size": 50,
            "drain_timeout_s": 2,
        },
    )
    services = await build_services(settings, FakeDecoder)  # type: ignore[arg-type]
    mon = Monitor(services)
    yield mon
    await mon.aclose()
    await services.asr.aclose()
    await services.bus.aclose()
    await services.archive.aclose()


def speech_call(call_id: str) -> list[str | bytes]:
    """A PCM bridge call of real speech (AISHELL, 16 kHz) in 20 ms frames, then a second of silence; no stop."""
    audio = np.concatenate([load_audio("BAC009S0764W0121.wav"), np.zeros(16_000, np.float32)])
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    start = {"event": "start", "call_id": call_id, "agent_id": "A1", "sample_rate": 16000, "channel_map": ["agent"]}
    return [json.dumps(start), *(pcm[i : i + 320].tobytes() for i in range(0, len(pcm), 320))]


async def lost_call(monitor: Monitor, call_id: str, messages: list[str | bytes]) -> tuple[FakeTransport, list[Event]]:
    feed = cast(InMemoryBus, monitor.services.bus).subscribe(lambda e: e.call_id == call_id, replay_live=False)
    transport = FakeTransport(messages, hold=True)  # the phone call goes on: the bridge keeps the socket open
    serving = asyncio.create_task(serve(monitor, PcmStreamParser(), transport))
    for _ in range(300):
        if transport.closed is not None:
            break
        await asyncio.sleep(0.05)
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    await settled(monitor)
    return transport, drain(feed)


async def check_lost(monitor: Monitor, call_id: str, transport: FakeTransport, events: list[Event], why: str) -> None:
    assert transport.closed == 1011 and transport.error is not None and transport.error.code == "monitoring_lost"
    assert transport.lost_reason is not None and why in transport.lost_reason
    alerts = [e for e in events if isinstance(e, MonitoringLostEvent)]
    assert len(alerts) == 1 and call_id in alerts[0].message and why in alerts[0].message
    call = await monitor.services.archive.get_call(call_id)
    assert call is not None and why in call["call"]["unmonitored_reason"]
    assert monitor.live_count == 0 and monitor.bridge_stats.calls_unmonitored == 1


async def test_an_archive_failure_is_reported_and_the_bridge_told(
    monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(monitor.services.archive, "add_segment", broken)
    transport, events = await lost_call(monitor, "c-archive", speech_call("c-archive"))
    await check_lost(monitor, "c-archive", transport, events, "archive failure: OperationalError: disk I/O error")


async def test_a_classifier_failure_is_reported_and_the_bridge_told(monitor: Monitor) -> None:
    class BrokenModel:
        context = 0

        async def detect(self, *args: object) -> list[object]:
            raise RuntimeError("onnx session died")

    monitor.services.model = BrokenModel()  # type: ignore[assignment]
    transport, events = await lost_call(monitor, "c-model", speech_call("c-model"))
    await check_lost(monitor, "c-model", transport, events, "RuntimeError: onnx session died")


async def test_a_bus_failure_is_reported_and_the_bridge_told(monitor: Monitor, monkeypatch: pytest.MonkeyPatch) -> None:
    bus = cast(InMemoryBus, monitor.services.bus)
    publish = bus.publish

    async def flaky(event: Event) -> None:
        if isinstance(event, TranscriptEvent) and event.final:
            raise ConnectionError("bus connection lost")
        await publish(event)

    monkeypatch.setattr(bus, "publish", flaky)
    transport, events = await lost_call(monitor, "c-bus", speech_call("c-bus"))
    await check_lost(monitor, "c-bus", transport, events, "ConnectionError: bus connection lost")


async def test_a_stuck_pipeline_does_not_hang_the_bridge(monitor: Monitor, monkeypatch: pytest.MonkeyPatch) -> None:
    async def stuck(self: CallSession, speaker: Speaker) -> None:
        await asyncio.Event().wait()  # a stage that never takes audio again

    monkeypatch.setattr(CallSession, "_speaker_loop", stuck)
    transport, events = await lost_call(monitor, "c-stuck", speech_call("c-stuck"))
    await check_lost(monitor, "c-stuck", transport, events, "audio queue full for 0.3 s")
    call = await monitor.services.archive.get_call("c-stuck")
    assert call is not None and call["call"]["end_reason"] == "pipeline_stalled"


async def test_other_calls_are_unaffected_by_one_lost_call(monitor: Monitor, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = monitor.services.archive
    add_segment = archive.add_segment

    async def broken_for_one(tr: Transcript, text: object) -> int:
        if tr.call_id == "c-bad":
            raise sqlite3.OperationalError("disk I/O error")
        return await add_segment(tr, text)  # type: ignore[arg-type]

    monkeypatch.setattr(archive, "add_segment", broken_for_one)
    good = FakeTransport([*speech_call("c-good"), json.dumps({"event": "stop"})])
    good_task = asyncio.create_task(serve(monitor, PcmStreamParser(), good))
    transport, _ = await lost_call(monitor, "c-bad", speech_call("c-bad"))
    await good_task
    await settled(monitor)
    assert transport.closed == 1011 and good.closed == 1000 and good.error is None
    call = await archive.get_call("c-good")
    assert call is not None and call["segments"] and call["call"]["unmonitored_reason"] is None


# --------------------------------------------------------------------------- through the running server


class SaysTrade(FakeDecoder):
    """Hears every segment as a line with 交易 in it: the test rule pack's high-severity keyword."""

    def decode(self, requests: list[DecodeRequest]) -> list[DecodeResult]:
        super().decode(requests)
        return [DecodeResult("甚至出现交易几乎停滞的情况", -0.1, 0.0, 1.0, None) for _ in requests]


@pytest.mark.parametrize("auto_halt", [False, True])
async def test_the_console_sees_a_recommendation_or_a_real_halt(tmp_path: Path, auto_halt: bool) -> None:
    settings = make_settings(tmp_path, policy={"halt_at": "high", "auto_halt": auto_halt})
    call_id = f"c-policy-{auto_halt}"
    with LiveServer(settings, SaysTrade) as live:
        async with record_feed(f"{live.ws}/ws/console") as console:
            async with websockets.connect(f"{live.ws}/bridge/pcm") as bridge:
                for message in speech_call(call_id):
                    await bridge.send(message)
                told = [json.loads(m) for m in await _until_quiet(bridge)]
                if not auto_halt:
                    await bridge.send(json.dumps({"event": "stop"}))
            events = await console.wait_call_ended(call_id, 30)
    halts = [e for e in events if e["type"] == "action" and e["action"] == "halt_call"]
    assert len(halts) == 1
    outcomes = {e["action"]: e["outcome"] for e in events if e["type"] == "action_outcome"}
    ended = next(e for e in events if e["type"] == "call_ended")
    assert {"event": "warn_agent"}.items() <= told[0].items()  # the prompt went to the bridge first
    assert outcomes["warn_collector"] == "done"
    if auto_halt:
        assert halts[0]["outcome"] == "pending" and outcomes["halt_call"] == "done"
        assert [m["event"] for m in told][-1] == "halt" and ended["reason"] == "halted"
    else:
        # A recommendation: nothing tells anyone the call is ending, and it runs on to its own end.
        assert halts[0]["outcome"] == "recommended" and "halt_call" not in outcomes
        assert "halt" not in [m["event"] for m in told] and ended["reason"] == "stop"


async def _until_quiet(ws: websockets.ClientConnection, quiet_s: float = 3.0) -> list[str]:
    """What the server sends until it is quiet for ``quiet_s`` or closes."""
    received: list[str] = []
    with contextlib.suppress(TimeoutError, websockets.ConnectionClosed):
        while True:
            received.append(str(await asyncio.wait_for(ws.recv(), quiet_s)))
    return received


# --------------------------------------------------------------------------- a failed automatic halt


class FlakyBridge(ScriptedBridge):
    """Fails the first ``failures`` hangups, then ends the call."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def hangup(self, reason: str) -> ControlResult:
        self.hangups.append(reason)
        if len(self.hangups) <= self.failures:
            return ControlResult(Outcome.FAILED, "carrier answered 503")
        return ControlResult(Outcome.DONE, "ended")


async def test_a_failed_automatic_halt_is_retried_with_backoff_until_it_ends_the_call(
    tmp_path: Path, closing: list[CallSession]
) -> None:
    bridge = FlakyBridge(failures=2)
    session = await make_session(tmp_path, bridge, auto_halt=True, halt_attempts=3, halt_retry_backoff_s=0.05)
    closing.append(session)
    began = time.monotonic()
    await session.analyse(threat())
    await session.settle_controls()
    assert len(bridge.hangups) == 3 and time.monotonic() - began >= 0.05 + 0.1  # backoff 0.05 s, then 0.1 s
    assert session.input_ended and session.end_reason == "halted"
    halt = next(a for a in await actions(session) if a["action"] == "halt_call")
    assert halt["outcome"] == "done"
    assert not [a for a in await actions(session) if "automatic halt failed" in (a["reason"] or "")]


async def test_when_every_try_fails_the_supervisor_is_told_the_call_continues_unhalted(
    tmp_path: Path, closing: list[CallSession]
) -> None:
    bridge = FlakyBridge(failures=99)
    session = await make_session(tmp_path, bridge, auto_halt=True, halt_attempts=3, halt_retry_backoff_s=0.01)
    closing.append(session)
    feed = cast(InMemoryBus, session.services.bus).subscribe(lambda _e: True, replay_live=False)
    await session.analyse(threat())
    await session.settle_controls()
    assert len(bridge.hangups) == 3  # bounded
    assert not session.input_ended and not session.halting  # still monitored; a supervisor may halt it
    alert = next(a for a in await actions(session) if "automatic halt failed" in (a["reason"] or ""))
    assert alert["action"] == "alert_supervisor" and alert["actor"] == "policy"
    events = drain(feed)
    told = [e for e in events if isinstance(e, ActionEvent) and "continues unhalted" in e.reason]
    assert len(told) == 1 and told[0].action == "alert_supervisor" and told[0].outcome is Outcome.FAILED
    assert (await session.halt("supervisor retries", "sup1")) is Outcome.FAILED  # the manual halt still works


async def test_a_bridge_that_cannot_halt_is_not_retried(tmp_path: Path, closing: list[CallSession]) -> None:
    bridge = ScriptedBridge(hangup=ControlResult(Outcome.NOT_SUPPORTED, "no REST credentials"))
    session = await make_session(tmp_path, bridge, auto_halt=True, halt_retry_backoff_s=0.01)
    closing.append(session)
    await session.analyse(threat())
    await session.settle_controls()
    assert len(bridge.hangups) == 1
