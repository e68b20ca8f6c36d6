"""The one path by which a bridge holds a call (``Monitor.live_call`` through ``serve_connection``).

Driven with a fake transport, for every bridge protocol: whatever goes wrong after the call is registered,
the call leaves the live table and its archive row is ended. Also: reconnects, auth, deferred findings.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from compliance_monitor.api.app import build_services
from compliance_monitor.audio.g711 import ulaw_encode
from compliance_monitor.ingest.base import ProtocolError
from compliance_monitor.ingest.connection import Parser, serve_connection
from compliance_monitor.ingest.pcm import PcmStreamParser
from compliance_monitor.ingest.twilio import TwilioStreamParser
from compliance_monitor.messages import AudioChunk, CallStarted, ControlResult, Outcome, Speaker, Transcript
from compliance_monitor.monitor import Monitor
from compliance_monitor.pipeline import CallSession
from tests.conftest import make_settings
from tests.fakes import FakeDecoder

pytestmark = pytest.mark.unit

TONE = (3000 * np.sin(np.arange(160) / 3)).astype(np.int16)


class FakeTransport:
    """Hands out ``messages`` one by one; then the peer leaves (None), or stays silent if ``hold``."""

    def __init__(self, messages: list[str | bytes], hold: bool = False) -> None:
        self.messages = deque(messages)
        self.hold = hold
        self.closed: int | None = None
        self.error: ProtocolError | None = None
        self.hung_up: str | None = None
        self.lost_reason: str | None = None

    async def receive(self) -> str | bytes | None:
        if self.messages:
            await asyncio.sleep(0)
            return self.messages.popleft()
        if self.hold:
            await asyncio.Event().wait()
        return None

    async def fail(self, error: ProtocolError) -> None:
        self.error = error
        await self.close(error.close_code)

    async def close(self, code: int, reason: str = "") -> None:
        if self.closed is None:
            self.closed = code

    async def hangup(self, reason: str) -> ControlResult:
        self.hung_up = reason
        return ControlResult(Outcome.DONE)

    async def warn_agent(self, prompt: str) -> ControlResult:
        return ControlResult(Outcome.NOT_SUPPORTED, "fake")

    async def lost(self, reason: str) -> None:
        self.lost_reason = reason
        await self.fail(ProtocolError("monitoring_lost", reason, 1011))


def twilio_call(call_id: str, frames: int = 5, stop: bool = True) -> tuple[Parser, list[str | bytes]]:
    start = {"event": "start", "start": {"callSid": call_id, "streamSid": "MZ1", "tracks": ["inbound"]}}
    payload = base64.b64encode(ulaw_encode(TONE)).decode()
    media = [
        json.dumps({"event": "media", "media": {"track": "inbound", "timestamp": str(20 * i), "payload": payload}})
        for i in range(frames)
    ]
    return TwilioStreamParser(), [json.dumps(start), *media, *([json.dumps({"event": "stop"})] if stop else [])]


def pcm_call(call_id: str, frames: int = 5, stop: bool = True) -> tuple[Parser, list[str | bytes]]:
    start = {"event": "start", "call_id": call_id, "agent_id": "A1", "sample_rate": 8000}
    media: list[str | bytes] = [TONE.tobytes()] * frames
    return PcmStreamParser(), [json.dumps(start), *media, *([json.dumps({"event": "stop"})] if stop else [])]


BRIDGES = [pytest.param(twilio_call, id="twilio"), pytest.param(pcm_call, id="pcm")]
Call = Callable[..., tuple[Parser, list[str | bytes]]]


@pytest.fixture
async def monitor(tmp_path: Path) -> AsyncIterator[Monitor]:
    settings = make_settings(
        tmp_path, ingest={"reconnect_grace_s": 0.3, "start_timeout_s": 0.5, "idle_timeout_s": 0.5, "max_live_calls": 2}
    )
    services = await build_services(settings, FakeDecoder)  # type: ignore[arg-type]
    mon = Monitor(services)
    yield mon
    await mon.aclose()
    await services.asr.aclose()
    await services.bus.aclose()
    await services.archive.aclose()


async def settled(monitor: Monitor, within_s: float = 10) -> None:
    """Every call task has finished (drained, archived, unregistered)."""
    for _ in range(int(within_s / 0.05)):
        if not (monitor._tasks or monitor.live_count):
            return
        await asyncio.sleep(0.05)


async def archived(monitor: Monitor, call_id: str) -> dict[str, Any]:
    call = await monitor.services.archive.get_call(call_id)
    assert call is not None
    return call["call"]  # type: ignore[no-any-return]


async def serve(monitor: Monitor, parser: Parser, transport: FakeTransport) -> None:
    await serve_connection(monitor, transport, parser, transport)


# --------------------------------------------------------------------------- always released


@pytest.mark.parametrize("bridge", BRIDGES)
async def test_a_normal_call_is_released_with_its_stop(monitor: Monitor, bridge: Call) -> None:
    parser, messages = bridge("c-ok")
    transport = FakeTransport(messages)
    await serve(monitor, parser, transport)
    await settled(monitor)
    assert transport.closed == 1000 and monitor.live_count == 0
    row = await archived(monitor, "c-ok")
    assert (row["status"], row["end_reason"], row["content"]) == ("ended", "stop", "no_speech")


@pytest.mark.parametrize("bridge", BRIDGES)
@pytest.mark.parametrize(
    ("failure", "close", "reason"),
    [
        ("protocol_error", (1003, 1007, 1008), "protocol_error:"),
        ("bug_in_push", (1011,), "bridge_error"),
        # 1011 when the bridge is still connected as the failure is noticed (test_call_control.py covers that path)
        ("bug_in_announce", (1000, 1011), "pipeline_error"),
        ("idle", (1008,), "protocol_error:idle_timeout"),
    ],
)
async def test_any_failure_after_registration_releases_the_call(
    monitor: Monitor,
    bridge: Call,
    failure: str,
    close: tuple[int, ...],
    reason: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    parser, messages = bridge("c-fail", stop=failure != "idle")
    transport = FakeTransport(messages, hold=failure == "idle")
    if failure == "protocol_error":
        transport.messages.insert(2, "not json" if isinstance(parser, TwilioStreamParser) else b"\x00\x01\x02")
    elif failure == "bug_in_push":

        async def broken_push(self: CallSession, chunk: object) -> None:
            raise RuntimeError("bug")

        monkeypatch.setattr(CallSession, "push", broken_push)
    elif failure == "bug_in_announce":

        async def broken_check(self: CallSession) -> None:
            raise RuntimeError("bug")

        monkeypatch.setattr(CallSession, "check_call_start", broken_check)
    await serve(monitor, parser, transport)
    await settled(monitor)
    assert transport.closed in close
    assert monitor.live_count == 0 and monitor.calls == {} and monitor._claims == {}
    row = await archived(monitor, "c-fail")
    assert row["status"] == "ended" and row["end_reason"].startswith(reason), row
    if failure in ("protocol_error", "idle"):  # client input: one warning line, no traceback
        assert not [r for r in caplog.records if r.exc_info]
        assert sum(monitor.bridge_stats.rejected.values()) == 1


@pytest.mark.parametrize("bridge", BRIDGES)
async def test_a_cancelled_connection_releases_the_call(monitor: Monitor, bridge: Call) -> None:
    parser, messages = bridge("c-cancel", stop=False)
    transport = FakeTransport(messages, hold=True)
    task = asyncio.create_task(serve(monitor, parser, transport))
    for _ in range(500):
        if "c-cancel" in monitor.calls:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await settled(monitor)
    assert monitor.live_count == 0
    assert (await archived(monitor, "c-cancel"))["end_reason"] == "cancelled"


@pytest.mark.parametrize("bridge", BRIDGES)
async def test_an_archive_failure_at_start_leaves_no_claim(
    monitor: Monitor, bridge: Call, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_start(call: CallStarted) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(monitor.services.archive, "start_call", broken_start)
    parser, messages = bridge("c-disk")
    transport = FakeTransport(messages)
    await serve(monitor, parser, transport)
    assert transport.closed == 1011 and monitor.live_count == 0 and monitor._claims == {}


async def test_a_start_deadline_closes_a_silent_connection(monitor: Monitor) -> None:
    transport = FakeTransport([json.dumps({"event": "connected"})], hold=True)
    await serve(monitor, TwilioStreamParser(), transport)
    assert transport.closed == 1008 and transport.error is not None and transport.error.code == "start_timeout"
    assert monitor.bridge_stats.rejected["start_timeout"] == 1 and monitor.live_count == 0


# --------------------------------------------------------------------------- one call per id


@pytest.mark.parametrize("bridge", BRIDGES)
async def test_a_reconnect_within_the_grace_continues_the_call(monitor: Monitor, bridge: Call) -> None:
    parser, messages = bridge("c-again", stop=False)
    await serve(monitor, parser, FakeTransport(messages))  # dropped without a stop
    assert "c-again" in monitor.calls and not monitor.calls["c-again"].input_ended
    parser, messages = bridge("c-again")
    transport = FakeTransport(messages)
    await serve(monitor, parser, transport)
    await settled(monitor)
    assert transport.closed == 1000 and monitor.bridge_stats.calls_resumed == 1
    row = await archived(monitor, "c-again")
    assert row["end_reason"] == "stop"
    assert [c["call_id"] for c in await monitor.services.archive.list_calls()] == ["c-again"]


@pytest.mark.parametrize("bridge", BRIDGES)
async def test_a_drop_without_reconnect_ends_after_the_grace(monitor: Monitor, bridge: Call) -> None:
    parser, messages = bridge("c-gone", stop=False)
    await serve(monitor, parser, FakeTransport(messages))
    await settled(monitor)
    assert monitor.live_count == 0
    assert (await archived(monitor, "c-gone"))["end_reason"] == "hangup"


@pytest.mark.parametrize("bridge", BRIDGES)
async def test_a_start_after_the_call_ended_is_a_new_call(monitor: Monitor, bridge: Call) -> None:
    for _ in range(2):
        parser, messages = bridge("c-twice")
        await serve(monitor, parser, FakeTransport(messages))
        await settled(monitor)
    keys = sorted(c["call_id"] for c in await monitor.services.archive.list_calls())
    assert keys == ["c-twice", "c-twice~2"]
    second = await monitor.services.archive.get_call("c-twice~2")
    assert second is not None and second["call"]["metadata"]["bridge_call_id"] == "c-twice"


async def test_the_live_call_limit_counts_claims_in_progress(monitor: Monitor) -> None:
    transports = [FakeTransport(pcm_call(f"c-{i}", stop=False)[1], hold=True) for i in range(3)]
    tasks = [asyncio.create_task(serve(monitor, PcmStreamParser(), t)) for t in transports]
    await asyncio.sleep(0.2)
    assert [t.closed for t in transports] == [None, None, 1013]  # max_live_calls = 2
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await settled(monitor)
    assert monitor.live_count == 0


# --------------------------------------------------------------------------- what a call without speech leaves


async def test_call_start_findings_wait_for_speech(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, rules={"packs": ["cn_collection"], "default_timezone": "Asia/Shanghai"})
    services = await build_services(settings, FakeDecoder)  # type: ignore[arg-type]
    try:
        night = time.mktime((2026, 1, 1, 19, 0, 0, 0, 0, 0))  # 03:00 in Shanghai (UTC+8) on a UTC host
        started = CallStarted("c-night", "A1", "pcm", (Speaker.AGENT,), {}, night)
        await services.archive.start_call(started)
        session = CallSession(started, services, FakeTransport([]))
        await session.check_call_start()
        assert (await services.archive.get_call("c-night") or {})["findings"] == []  # nobody spoke yet
        await session.analyse(Transcript("c-night", Speaker.AGENT, 1, "您好，我是催收专员", 0.5, 2.0, True))
        rules = [f["rule_id"] for f in (await services.archive.get_call("c-night") or {})["findings"]]
        assert any("hours" in r for r in rules), rules
        await session.aclose()
    finally:
        await services.asr.aclose()
        await services.archive.aclose()


# --------------------------------------------------------------------------- auth


# Bridge authentication over real HTTP, with users and tokens in the archive: tests/test_people.py.


@pytest.mark.parametrize("token", ["", "changeme", "  "])
def test_an_empty_bridge_token_is_refused_at_start(tmp_path: Path, token: str) -> None:
    with pytest.raises(ValueError, match="bridge_token"):
        make_settings(tmp_path, auth={"tokens": {"sup-1": "supervisor"}, "bridge_token": token})


async def test_a_speakers_queue_is_bounded_in_seconds_not_only_chunks(monitor: Monitor) -> None:
    started = CallStarted("c-queue", None, "pcm", (Speaker.AGENT,), {})
    session = CallSession(started, monitor.services, FakeTransport([]))  # not running: nothing drains the queue
    second = AudioChunk("c-queue", Speaker.AGENT, np.zeros(16_000, np.float32), 0.0)
    for _ in range(5):  # chunk_queue_size 250 × 20 ms = 5 s
        await asyncio.wait_for(session.push(second), 1)
    blocked = asyncio.create_task(session.push(second))
    await asyncio.sleep(0.1)
    assert not blocked.done()  # backpressure on the bridge, not a 6th second in memory
    session.end_input("hangup")
    await asyncio.wait_for(blocked, 1)
    assert session.chunks_dropped == 1 and session.audio_s == 5.0
    await session.aclose()
