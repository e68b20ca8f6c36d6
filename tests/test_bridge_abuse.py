"""Issue 20, black box: what a misconfigured or hostile bridge client could do to a running server.

Each test is one of the issue's six problems, driven over the real websocket protocols against the real
app (a fake ASR decoder: no model is loaded, the VAD is real). They use only the public endpoints, so the
same file runs against the code before the fix, where every one of them fails.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from compliance_monitor.audio.g711 import ulaw_encode
from tests.conftest import LiveServer, make_settings
from tests.fakes import FakeDecoder

pytestmark = pytest.mark.e2e

MAX_LIVE = 4


def night_zone() -> str:
    """A fixed-offset zone where it is now about 03:00: outside every calling-hours window."""
    offset = (3 - dt.datetime.now(dt.UTC).hour) % 24
    offset = offset - 24 if offset > 14 else offset
    return f"Etc/GMT{-offset:+d}"


def start_server(tmp: Path, **ingest: Any) -> LiveServer:
    settings = make_settings(
        tmp,
        # The real pack: calling-hours and opening-disclosure rules, which junk calls must not trigger.
        rules={"packs": ["cn_collection"], "default_timezone": night_zone(), "watch": False},
        ingest={"start_timeout_s": 1.0, "idle_timeout_s": 3.0, "reconnect_grace_s": 0.5, **ingest},
    )
    return LiveServer(settings, FakeDecoder)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with start_server(tmp_path_factory.mktemp("abuse")) as live:
        yield live


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[LiveServer]:
    """Room for MAX_LIVE calls only: what leaks shows at once (and cannot spoil the other tests' server)."""
    with start_server(tmp_path, max_live_calls=MAX_LIVE) as live:
        yield live


# --------------------------------------------------------------------------- helpers


async def exchange(url: str, frames: list[str | bytes], wait_s: float = 5.0) -> int | None:
    """Send ``frames``, then read until the server closes; the close code, or None if still open after wait_s."""
    async with websockets.connect(url, max_size=None) as ws:
        try:
            for frame in frames:
                await ws.send(frame)
            async with asyncio.timeout(wait_s):
                async for _ in ws:
                    pass
        except websockets.ConnectionClosed:
            pass
        except TimeoutError:
            return None
        return ws.close_code


def pcm_start(call_id: str, **fields: Any) -> str:
    return json.dumps({"event": "start", "call_id": call_id, "agent_id": "A-1", "sample_rate": 16000, **fields})


def pcm_stop(reason: str = "hangup") -> str:
    return json.dumps({"event": "stop", "reason": reason})


def twilio_start(call_sid: str, **start: Any) -> str:
    body = {"streamSid": "MZ" + call_sid, "callSid": call_sid, "tracks": ["inbound"], **start}
    return json.dumps({"event": "start", "streamSid": "MZ" + call_sid, "start": body})


def twilio_media(timestamp_ms: int, pcm: np.ndarray) -> str:
    payload = base64.b64encode(ulaw_encode(pcm)).decode()
    media = {"track": "inbound", "timestamp": str(timestamp_ms), "payload": payload}
    return json.dumps({"event": "media", "media": media})


async def get(server: LiveServer, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=server.http) as http:
        response = await http.get(path, params=params)
        return response.json() if response.status_code == 200 else None


async def wait_ended(server: LiveServer, call_id: str, within_s: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        call = await get(server, f"/api/calls/{call_id}")
        if call and call["call"]["status"] == "ended":
            return call  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError(f"call {call_id} still live after {within_s} s: {call}")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


# --------------------------------------------------------------------------- 1. leaked calls


async def test_failed_starts_leak_no_live_call_and_good_calls_still_get_in(small_server: LiveServer) -> None:
    for i in range(MAX_LIVE + 2):  # the close codes are test_hostile_input's business; here: what is left behind
        await exchange(f"{small_server.ws}/bridge/pcm", [pcm_start(f"leak-{i}", metadata={"custom_parameters": "d=1"})])
    code = await exchange(f"{small_server.ws}/bridge/pcm", [pcm_start("leak-good"), bytes(640), pcm_stop()])
    assert code == 1000  # not 1013: the failed starts hold no slot
    await wait_ended(small_server, "leak-good")
    assert (await get(small_server, "/api/calls", status="live"))["calls"] == []
    assert (await get(small_server, "/api/health"))["live_calls"] == 0

    # A stop whose reason holds a lone surrogate must not leave the call's archive row live.
    await exchange(f"{small_server.ws}/bridge/pcm", [pcm_start("leak-surrogate"), bytes(640), pcm_stop("\ud800")])
    assert (await wait_ended(small_server, "leak-surrogate"))["call"]["end_reason"]
    assert (await get(small_server, "/api/calls", status="live"))["calls"] == []


# --------------------------------------------------------------------------- 2. memory


async def test_timestamp_jumps_cost_no_memory(server: LiveServer) -> None:
    frame = (3000 * np.sin(np.arange(160) / 3)).astype(np.int16)
    warm = [twilio_start("CA-warm")] + [twilio_media(20 * i, frame) for i in range(100)]
    await exchange(f"{server.ws}/bridge/twilio", [*warm, json.dumps({"event": "stop"})])
    await wait_ended(server, "CA-warm")
    before = rss_mb()
    # 250 frames 60 s apart: 76 KB on the wire. Each hole must not become seconds of silence through VAD.
    burst = [twilio_start("CA-jumps")] + [twilio_media(60_000 * i, frame) for i in range(250)]
    await exchange(f"{server.ws}/bridge/twilio", [*burst, json.dumps({"event": "stop"})], wait_s=30)
    await wait_ended(server, "CA-jumps", within_s=60)
    grown = rss_mb() - before
    assert grown < 50, f"RSS grew by {grown:.0f} MB"


# --------------------------------------------------------------------------- 3. unhandled exceptions

_DEEP = '{"event": "start", "start": ' + "[" * 50_000 + "]" * 50_000 + "}"
_HOSTILE = [
    pytest.param("twilio", [_DEEP], id="deep-nesting"),
    pytest.param("twilio", ['{"event": "connected", "sequenceNumber": ' + "9" * 5000 + "}"], id="5000-digit-int"),
    pytest.param("twilio", ['{"event": "connected", "sequenceNumber": 1e400}'], id="float-overflow"),
    pytest.param("twilio", [twilio_start("CA-dtmf"), json.dumps({"event": "dtmf", "dtmf": "5"})], id="dtmf-string"),
    pytest.param("twilio", [twilio_start("CA-mark"), json.dumps({"event": "mark", "mark": 5})], id="mark-number"),
    pytest.param("pcm", [pcm_start("sur-meta", metadata={"queue": "\udc80"})], id="surrogate-in-metadata"),
    pytest.param("pcm", [pcm_start("sur-stop"), pcm_stop("\ud800")], id="surrogate-in-stop"),
    pytest.param("pcm", [pcm_start("cp-string", metadata={"custom_parameters": "x"})], id="custom-parameters-string"),
]


@pytest.mark.parametrize(("bridge", "frames"), _HOSTILE)
async def test_hostile_input_closes_with_a_protocol_code_and_no_traceback(
    server: LiveServer, bridge: str, frames: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    code = await exchange(f"{server.ws}/bridge/{bridge}", frames)
    assert code in (1003, 1007, 1008, 1009), code
    await asyncio.sleep(0.2)  # the server side's log lines
    tracebacks = [r for r in caplog.records if r.exc_info and r.name.startswith("compliance_monitor")]
    assert tracebacks == []
    assert (await get(server, "/api/health"))["status"] == "ok"


# --------------------------------------------------------------------------- 4. one call per id


async def test_simultaneous_starts_with_one_call_id_give_one_call(server: LiveServer) -> None:
    sockets = [await websockets.connect(f"{server.ws}/bridge/pcm") for _ in range(5)]
    try:
        await asyncio.gather(*(ws.send(pcm_start("dup-1")) for ws in sockets))
        await asyncio.sleep(1.0)  # below start/idle deadlines: the accepted one stays open
        open_ones = [ws for ws in sockets if ws.close_code is None]
        assert len(open_ones) == 1, [ws.close_code for ws in sockets]
        assert {ws.close_code for ws in sockets if ws.close_code is not None} == {1008}
        await open_ones[0].send(pcm_stop())
    finally:
        for ws in sockets:
            await ws.close()
    await wait_ended(server, "dup-1")


async def test_an_ended_call_is_never_overwritten(server: LiveServer) -> None:
    url = f"{server.ws}/bridge/pcm"
    assert await exchange(url, [pcm_start("reuse-1", agent_id="A-first"), bytes(640), pcm_stop()]) == 1000
    first = (await wait_ended(server, "reuse-1"))["call"]
    assert await exchange(url, [pcm_start("reuse-1", agent_id="A-second"), bytes(640), pcm_stop()]) == 1000
    await asyncio.sleep(0.5)
    again = (await wait_ended(server, "reuse-1"))["call"]
    assert (again["agent_id"], again["started_at"]) == ("A-first", first["started_at"])
    calls = (await get(server, "/api/calls", limit=500))["calls"]
    assert any(c["agent_id"] == "A-second" and c["call_id"] != "reuse-1" for c in calls)


# --------------------------------------------------------------------------- 5. junk calls


@pytest.mark.parametrize(("call_id", "audio"), [("junk-no-audio", []), ("junk-silence", [bytes(3200)] * 25)])
async def test_a_call_without_speech_accuses_no_collector(server: LiveServer, call_id: str, audio: list[bytes]) -> None:
    frames: list[str | bytes] = [pcm_start(call_id, agent_id="A-framed"), *audio, pcm_stop()]
    assert await exchange(f"{server.ws}/bridge/pcm", frames) == 1000
    call = await wait_ended(server, call_id)
    assert call["findings"] == [] and call["actions"] == []
    assert call["call"]["content"] == ("no_audio" if not audio else "no_speech")


# --------------------------------------------------------------------------- 6. idle connections, stats


async def test_idle_connections_are_closed_and_counted(server: LiveServer) -> None:
    started = time.monotonic()
    assert await exchange(f"{server.ws}/bridge/twilio", [], wait_s=6) == 1008  # never starts
    assert await exchange(f"{server.ws}/bridge/pcm", [pcm_start("idle-1")], wait_s=8) == 1008  # starts, then silent
    assert time.monotonic() - started < 8
    await wait_ended(server, "idle-1")
    stats = await get(server, "/api/stats")
    assert stats["bridges"]["rejected"]["start_timeout"] >= 1
    assert stats["bridges"]["rejected"]["idle_timeout"] >= 1
    assert stats["live_calls"] == 0
    async with httpx.AsyncClient(base_url=server.http) as http:
        metrics = (await http.get("/api/metrics")).text
    assert 'cm_bridge_rejected_total{reason="start_timeout"}' in metrics and "cm_live_calls 0" in metrics
