"""Asterisk AudioSocket: the frame parser, malformed input over a real TCP socket, and call control
(the hang-up frame, the collector's tone on the agent leg only, registration of a UUID over REST)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from scipy.signal import resample_poly

from compliance_monitor.api.app import build_services
from compliance_monitor.ingest.audiosocket import (
    KIND_DTMF,
    KIND_ERROR,
    KIND_HANGUP,
    KIND_SLIN,
    KIND_UUID,
    AudioSocketParser,
    AudioSocketRegistry,
    CallInfo,
    encode_frame,
)
from compliance_monitor.ingest.base import ProtocolError
from compliance_monitor.messages import AudioChunk, CallEnded, CallStarted, Outcome, Speaker
from compliance_monitor.monitor import Monitor
from compliance_monitor.telephony.audiosocket import AudioSocketServer
from tests.conftest import LiveServer, load_audio, make_settings
from tests.fakes import FakeDecoder
from tests.test_live_call import settled
from tests.wsclient import record_feed

pytestmark = pytest.mark.unit

UUID = uuid.UUID("40325ec2-5efd-4bd3-805f-53576e581d13")
SILENCE = encode_frame(KIND_SLIN, bytes(320))


def uuid_frame(key: uuid.UUID = UUID) -> bytes:
    return encode_frame(KIND_UUID, key.bytes)


def speech_frames() -> list[bytes]:
    """Real Mandarin speech (AISHELL) as Asterisk sends it: slin 8 kHz, 20 ms frames, then a second of silence."""
    audio = resample_poly(load_audio("BAC009S0764W0121.wav"), 1, 2)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    pcm = np.concatenate([pcm, np.zeros(8000, "<i2")])
    return [encode_frame(KIND_SLIN, pcm[i : i + 160].tobytes()) for i in range(0, len(pcm) - 159, 160)]


# --------------------------------------------------------------------------- the parser


def parser(registry: AudioSocketRegistry | None = None) -> AudioSocketParser:
    return AudioSocketParser(registry or AudioSocketRegistry())


def test_a_registered_uuid_starts_its_call_with_its_metadata() -> None:
    registry = AudioSocketRegistry()
    registry.register(str(UUID), CallInfo("call-7", "A9", Speaker.AGENT, {"debtor_id": "D1"}))
    p = parser(registry)
    [started] = p.feed_bytes(uuid_frame())
    assert isinstance(started, CallStarted)
    assert (started.call_id, started.agent_id, started.speakers) == ("call-7", "A9", (Speaker.AGENT,))
    assert started.metadata == {"debtor_id": "D1", "audiosocket_uuid": str(UUID), "leg": "agent"}
    chunks = [m for _ in range(3) for m in p.feed_bytes(SILENCE)]
    assert all(isinstance(c, AudioChunk) and c.speaker is Speaker.AGENT for c in chunks)
    assert p.feed_bytes(encode_frame(KIND_DTMF, b"5")) == [] and p.dtmf == ["5"]
    [ended] = p.feed_bytes(encode_frame(KIND_HANGUP))
    assert isinstance(ended, CallEnded) and ended.reason == "hangup" and p.ended


def test_an_unregistered_uuid_is_its_own_call_on_the_default_leg() -> None:
    [started] = parser().feed_bytes(uuid_frame())
    assert isinstance(started, CallStarted)
    assert started.call_id == str(UUID) and started.speakers == (Speaker.CUSTOMER,)


def test_a_pbx_error_frame_ends_the_call_with_its_reason() -> None:
    p = parser()
    p.feed_bytes(uuid_frame())
    [ended] = p.feed_bytes(encode_frame(KIND_ERROR, b"\x01"))
    assert isinstance(ended, CallEnded) and ended.reason == "pbx_error:caller_hangup"


def test_a_16_khz_stream_keeps_its_stream_time() -> None:
    p = parser()
    p.feed_bytes(uuid_frame())
    frames = [m for _ in range(50) for m in p.feed_bytes(encode_frame(0x12, bytes(640)))]  # 0x12: slin 16 kHz
    assert p.rate == 16000 and abs(frames[-1].t - 0.98) < 1e-9  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([SILENCE], "audio_before_uuid"),
        ([encode_frame(KIND_UUID, b"short")], "bad_uuid"),
        ([uuid_frame(), uuid_frame()], "duplicate_start"),
        ([uuid_frame(), encode_frame(0x42, b"??")], "unknown_kind"),
        ([uuid_frame(), encode_frame(KIND_SLIN, bytes(321))], "ragged_frame"),
        ([uuid_frame(), encode_frame(KIND_SLIN, bytes(32_000))], "frame_too_long"),
        ([uuid_frame(), SILENCE, encode_frame(0x12, bytes(640))], "rate_changed"),
        ([uuid_frame(), encode_frame(KIND_DTMF, b"12")], "bad_dtmf"),
        ([uuid_frame(), SILENCE[:-1]], "bad_frame_length"),
    ],
)
def test_malformed_frames_are_refused_with_a_reason(frames: list[bytes], code: str) -> None:
    p = parser()
    with pytest.raises(ProtocolError) as refused:
        for frame in frames:
            p.feed_bytes(frame)
    assert refused.value.code == code


def test_text_is_not_audiosocket() -> None:
    with pytest.raises(ProtocolError, match="binary"):
        parser().feed_text('{"event": "start"}')


def test_unregistered_uuids_can_be_refused() -> None:
    with pytest.raises(ProtocolError) as refused:
        AudioSocketParser(AudioSocketRegistry(), require_registration=True).feed_bytes(uuid_frame())
    assert refused.value.code == "unregistered_uuid"


def test_the_registry_is_bounded_in_size_and_time() -> None:
    registry = AudioSocketRegistry(ttl_s=0.05, max_entries=2)
    for n in range(3):
        registry.register(f"k{n}", CallInfo(f"c{n}"))
    assert registry.lookup("k0") is None and registry.lookup("k2") is not None and len(registry) == 2
    time.sleep(0.06)
    assert registry.lookup("k2") is None and len(registry) == 0


def test_audiosocket_off_loopback_requires_registration(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="REQUIRE_REGISTRATION"):
        make_settings(tmp_path, audiosocket={"host": "0.0.0.0"})
    settings = make_settings(tmp_path, audiosocket={"host": "0.0.0.0", "require_registration": True})
    assert settings.audiosocket.require_registration


# --------------------------------------------------------------------------- over a real TCP socket


@contextlib.asynccontextmanager
async def audiosocket_monitor(tmp_path: Path, **ingest: float) -> AsyncIterator[tuple[Monitor, AudioSocketServer]]:
    """A monitor (fake decoder) behind a real AudioSocket TCP server on a free port; all closed on exit."""
    settings = make_settings(tmp_path, ingest={"idle_timeout_s": 5, "drain_timeout_s": 20, **ingest})
    services = await build_services(settings, FakeDecoder)  # type: ignore[arg-type]
    monitor = Monitor(services)
    server = AudioSocketServer(monitor, AudioSocketRegistry(), settings)
    await server.start()
    yield monitor, server
    await server.aclose()
    await monitor.aclose()
    await services.asr.aclose()
    await services.bus.aclose()
    await services.archive.aclose()


@pytest.fixture
async def pbx(tmp_path: Path) -> AsyncIterator[tuple[Monitor, AudioSocketServer]]:
    async with audiosocket_monitor(tmp_path, reconnect_grace_s=0.0) as running:
        yield running


class Channel:
    """Asterisk's end of one AudioSocket: sends frames, reads what the monitor writes back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server: AudioSocketServer) -> Channel:
        return cls(*await asyncio.open_connection("127.0.0.1", server.port))

    async def send(self, *frames: bytes, pace_s: float = 0.0) -> None:
        for frame in frames:
            self.writer.write(frame)
            await self.writer.drain()
            if pace_s:
                await asyncio.sleep(pace_s)

    async def frame(self, within_s: float = 5) -> tuple[int, bytes] | None:
        try:
            header = await asyncio.wait_for(self.reader.readexactly(3), within_s)
        except asyncio.IncompleteReadError:
            return None
        payload = await self.reader.readexactly(int.from_bytes(header[1:], "big"))
        return header[0], payload

    async def closed(self, within_s: float = 5) -> bool:
        return await asyncio.wait_for(self.reader.read(), within_s) == b""


async def test_truncated_frame_gets_an_error_frame_and_a_close(pbx: tuple[Monitor, AudioSocketServer]) -> None:
    monitor, server = pbx
    channel = await Channel.open(server)
    await channel.send(uuid_frame(), SILENCE, SILENCE[:100])
    channel.writer.write_eof()  # Asterisk went away mid-frame
    assert await channel.frame() == (KIND_ERROR, b"\x40")
    assert await channel.closed()
    await settled(monitor)
    call = await monitor.services.archive.get_call(str(UUID))
    assert call is not None and call["call"]["end_reason"] == "protocol_error:truncated_frame"
    assert monitor.bridge_stats.rejected["truncated_frame"] == 1


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (encode_frame(0x42, b"junk"), "unknown_kind"),
        (encode_frame(KIND_SLIN, bytes(40_000)), "frame_too_long"),  # 2.5 s in one frame
        (encode_frame(KIND_SLIN, bytes(333)), "ragged_frame"),
    ],
)
async def test_a_bad_frame_closes_its_call_only_and_accepted_audio_is_still_transcribed(
    pbx: tuple[Monitor, AudioSocketServer], bad: bytes, code: str
) -> None:
    monitor, server = pbx
    good_id, bad_id = uuid.uuid4(), uuid.uuid4()
    good, broken = await Channel.open(server), await Channel.open(server)
    speech = speech_frames()
    await broken.send(uuid_frame(bad_id), *speech)  # speech accepted before the bad frame
    await good.send(uuid_frame(good_id), *speech[: len(speech) // 2])
    await broken.send(bad)
    assert await broken.frame() == (KIND_ERROR, b"\x40") and await broken.closed()
    await good.send(*speech[len(speech) // 2 :], encode_frame(KIND_HANGUP))
    assert await good.closed()  # closed normally after its hang-up, no error frame
    await settled(monitor, 30)
    assert monitor.bridge_stats.rejected[code] == 1
    for key, reason in ((good_id, "hangup"), (bad_id, f"protocol_error:{code}")):
        call = await monitor.services.archive.get_call(str(key))
        assert call is not None and call["call"]["end_reason"] == reason
        assert call["segments"], f"{key}: the speech it sent was not transcribed"


async def wait_live(monitor: Monitor, call_id: str) -> None:
    for _ in range(200):
        if call_id in monitor.calls:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{call_id} never went live")


async def test_a_socket_that_reconnects_with_its_uuid_continues_the_call(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, ingest={"reconnect_grace_s": 2.0})
    services = await build_services(settings, FakeDecoder)  # type: ignore[arg-type]
    monitor = Monitor(services)
    server = AudioSocketServer(monitor, AudioSocketRegistry(), settings)
    await server.start()
    try:
        first = await Channel.open(server)
        await first.send(uuid_frame(), SILENCE)
        await wait_live(monitor, str(UUID))
        first.writer.close()  # the TCP connection drops; the channel is still up
        await asyncio.sleep(0.2)
        second = await Channel.open(server)
        await second.send(uuid_frame(), SILENCE, encode_frame(KIND_HANGUP))
        assert await second.closed()
        await settled(monitor)
        assert monitor.bridge_stats.calls_resumed == 1
        assert [c["call_id"] for c in await services.archive.list_calls()] == [str(UUID)]
    finally:
        await server.aclose()
        await monitor.aclose()
        await services.asr.aclose()
        await services.bus.aclose()
        await services.archive.aclose()


async def test_a_halt_sends_the_hang_up_frame(pbx: tuple[Monitor, AudioSocketServer]) -> None:
    monitor, server = pbx
    channel = await Channel.open(server)
    await channel.send(uuid_frame(), SILENCE)
    await wait_live(monitor, str(UUID))
    assert await monitor.halt(str(UUID), "threat", "supervisor") is Outcome.DONE
    assert await channel.frame() == (KIND_HANGUP, b"")
    assert await channel.closed()
    await settled(monitor)
    call = await monitor.services.archive.get_call(str(UUID))
    assert call is not None and call["call"]["end_reason"] == "halted"
    assert [(a["action"], a["outcome"]) for a in call["actions"]] == [("halt_call", "done")]


async def test_the_warning_tone_plays_on_the_agent_leg_only(pbx: tuple[Monitor, AudioSocketServer]) -> None:
    monitor, server = pbx
    agent_key, customer_key = uuid.uuid4(), uuid.uuid4()
    server.registry.register(str(agent_key), CallInfo("c-agent", "A1", Speaker.AGENT))
    server.registry.register(str(customer_key), CallInfo("c-customer", "A1", Speaker.CUSTOMER))
    agent, customer = await Channel.open(server), await Channel.open(server)
    await agent.send(uuid_frame(agent_key), SILENCE)
    await customer.send(uuid_frame(customer_key), SILENCE)
    await wait_live(monitor, "c-agent")
    await wait_live(monitor, "c-customer")
    began = time.monotonic()
    result = await monitor.calls["c-agent"].control.warn_agent("请注意用语")
    took = time.monotonic() - began
    assert result.outcome is Outcome.DONE
    tone = []
    with contextlib.suppress(TimeoutError):  # the tone is over once nothing more comes
        while (frame := await agent.frame(0.3)) is not None and frame[0] == KIND_SLIN:
            tone.append(np.frombuffer(frame[1], "<i2"))
    except_last = tone[:-1]
    assert len(tone) >= 20 and all(len(f) == 160 for f in tone)  # 20 ms slin 8 kHz frames
    assert max(np.abs(f).max() for f in except_last) > 5000  # a tone, not silence
    assert took >= 0.02 * (len(tone) - 1) * 0.9  # paced in real time, not dumped at once
    denied = await monitor.calls["c-customer"].control.warn_agent("请注意用语")
    assert denied.outcome is Outcome.NOT_SUPPORTED
    with pytest.raises(TimeoutError):
        await customer.frame(0.2)  # nothing reached the customer's leg
    await agent.send(encode_frame(KIND_HANGUP))
    await customer.send(encode_frame(KIND_HANGUP))


# --------------------------------------------------------------------------- registration over REST, in the app


async def test_the_dialplan_registers_a_uuid_and_a_supervisor_halt_hangs_up(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, ingest={"idle_timeout_s": 5})
    with LiveServer(settings, FakeDecoder) as live:
        port = live.app.state.audiosocket.port
        key = str(uuid.uuid4())
        async with httpx.AsyncClient(base_url=live.http) as client:
            # What the dialplan's CURL(url,agent_id=...&...) sends: a form body.
            registered = await client.post(
                f"/api/audiosocket/calls/{key.upper()}",
                content="call_id=pbx-1&agent_id=1001&speaker=agent&debtor_id=D7&debtor_tz=Asia/Shanghai",
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            assert registered.status_code == 201 and registered.json()["call_id"] == "pbx-1"
            bad = await client.post(f"/api/audiosocket/calls/{key}", json={"speaker": "nobody"})
            assert bad.status_code == 422
            async with record_feed(f"{live.ws}/ws/console") as console:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                channel = Channel(reader, writer)
                await channel.send(encode_frame(KIND_UUID, uuid.UUID(key).bytes), SILENCE, SILENCE)
                events = await console.wait_for(lambda ev: any(e["type"] == "call_started" for e in ev), 10)
                [started] = [e for e in events if e["type"] == "call_started"]
                assert (started["call_id"], started["agent_id"], started["speakers"]) == ("pbx-1", "1001", ["agent"])
                assert started["metadata"]["debtor_id"] == "D7"
                halted = await client.post("/api/calls/pbx-1/halt", json={"reason": "supervisor"})
                assert halted.json()["outcome"] == "done"
                assert await channel.frame() == (KIND_HANGUP, b"")
                await console.wait_call_ended("pbx-1", 15)
