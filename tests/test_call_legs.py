"""One call, one connection per leg (Asterisk: an AudioSocket per party, from ARI snoops or the dialplan).

Driven through the real AudioSocket server with sockets standing in for Asterisk: the legs registered under one
call id with ``legs`` join ONE monitored call with two speakers; a second socket for a connected leg is a
duplicate; a dropped leg may come back; the call ends with its last leg, or on a halt, which reaches every leg.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from compliance_monitor.bus.memory import Subscription
from compliance_monitor.ingest.audiosocket import KIND_HANGUP, KIND_SLIN, CallInfo, encode_frame
from compliance_monitor.ingest.base import ProtocolError
from compliance_monitor.messages import (
    AudioChunk,
    CallStarted,
    ControlResult,
    Event,
    MonitoringLostEvent,
    Outcome,
    Speaker,
)
from compliance_monitor.monitor import Monitor
from compliance_monitor.telephony.audiosocket import AudioSocketServer
from tests.test_audiosocket import SILENCE, Channel, audiosocket_monitor, speech_frames, uuid_frame, wait_live
from tests.test_live_call import FakeTransport, settled

pytestmark = pytest.mark.unit

BOTH = (Speaker.AGENT, Speaker.CUSTOMER)
HANGUP = encode_frame(KIND_HANGUP)


@pytest.fixture
async def pbx(tmp_path: Path) -> AsyncIterator[tuple[Monitor, AudioSocketServer]]:
    async with audiosocket_monitor(tmp_path, reconnect_grace_s=1.0) as running:
        yield running


def register_legs(server: AudioSocketServer, call_id: str) -> dict[Speaker, uuid.UUID]:
    keys = {speaker: uuid.uuid4() for speaker in BOTH}
    for speaker, key in keys.items():
        server.registry.register(str(key), CallInfo(call_id, "A1", speaker, {"debtor_id": "D1"}, BOTH))
    return keys


async def open_legs(server: AudioSocketServer, keys: dict[Speaker, uuid.UUID]) -> dict[Speaker, Channel]:
    legs = {speaker: await Channel.open(server) for speaker in keys}
    # Both at once, as ARI's two externalMedia channels connect: the second joins while the first is archived.
    await asyncio.gather(*(legs[speaker].send(uuid_frame(key), SILENCE) for speaker, key in keys.items()))
    return legs


async def test_two_legs_are_one_call_with_two_speakers_that_ends_with_its_last_leg(
    pbx: tuple[Monitor, AudioSocketServer],
) -> None:
    monitor, server = pbx
    legs = await open_legs(server, register_legs(server, "two-legs"))
    await wait_live(monitor, "two-legs")
    speech = speech_frames()
    await asyncio.gather(legs[Speaker.AGENT].send(*speech), legs[Speaker.CUSTOMER].send(*speech[: len(speech) // 2]))
    assert list(monitor.calls) == ["two-legs"] and monitor.live_count == 1
    await legs[Speaker.AGENT].send(HANGUP)  # the collector hangs up first: the customer's leg still streams
    assert await legs[Speaker.AGENT].closed()
    await asyncio.sleep(0.2)
    assert "two-legs" in monitor.calls and not monitor.calls["two-legs"].input_ended
    await legs[Speaker.CUSTOMER].send(*speech[len(speech) // 2 :], HANGUP)
    assert await legs[Speaker.CUSTOMER].closed()
    await settled(monitor, 30)
    call = await monitor.services.archive.get_call("two-legs")
    assert call is not None and call["call"]["end_reason"] == "hangup"
    assert {s["speaker"] for s in call["segments"]} == {"agent", "customer"}
    assert [c["call_id"] for c in await monitor.services.archive.list_calls()] == ["two-legs"]


async def test_a_second_socket_for_a_connected_leg_is_a_duplicate_and_the_call_goes_on(
    pbx: tuple[Monitor, AudioSocketServer],
) -> None:
    monitor, server = pbx
    keys = register_legs(server, "dup-leg")
    legs = await open_legs(server, keys)
    await wait_live(monitor, "dup-leg")
    intruder = await Channel.open(server)
    await intruder.send(uuid_frame(keys[Speaker.CUSTOMER]), SILENCE)
    assert (await intruder.frame())[0] == 0xFF and await intruder.closed()  # type: ignore[index]
    assert monitor.bridge_stats.rejected["duplicate_call"] == 1
    session = monitor.calls["dup-leg"]
    assert not session.input_ended and session.started.speakers == BOTH
    for leg in legs.values():
        await leg.send(HANGUP)
    await settled(monitor)
    assert monitor.live_count == 0


async def test_a_dropped_leg_reconnects_within_the_grace_and_continues_the_call(
    pbx: tuple[Monitor, AudioSocketServer],
) -> None:
    monitor, server = pbx
    keys = register_legs(server, "flaky-leg")
    legs = await open_legs(server, keys)
    await wait_live(monitor, "flaky-leg")
    legs[Speaker.CUSTOMER].writer.close()  # the TCP connection drops; the channel is still up
    await asyncio.sleep(0.2)
    back = await Channel.open(server)
    await back.send(uuid_frame(keys[Speaker.CUSTOMER]), SILENCE)
    await legs[Speaker.AGENT].send(SILENCE, HANGUP)
    await asyncio.sleep(0.2)
    assert not monitor.calls["flaky-leg"].input_ended  # the customer's leg is back and has not hung up
    await back.send(HANGUP)
    await settled(monitor)
    assert monitor.bridge_stats.calls_resumed == 1
    assert [c["call_id"] for c in await monitor.services.archive.list_calls()] == ["flaky-leg"]


async def test_a_leg_that_drops_for_good_ends_after_the_grace(pbx: tuple[Monitor, AudioSocketServer]) -> None:
    monitor, server = pbx
    legs = await open_legs(server, register_legs(server, "gone-leg"))
    await wait_live(monitor, "gone-leg")
    await legs[Speaker.AGENT].send(HANGUP)
    legs[Speaker.CUSTOMER].writer.close()
    await settled(monitor)
    call = await monitor.services.archive.get_call("gone-leg")
    assert call is not None and call["call"]["end_reason"] == "hangup" and monitor.live_count == 0


async def test_a_halt_hangs_up_every_leg_and_the_warning_reaches_the_agent_leg_only(
    pbx: tuple[Monitor, AudioSocketServer],
) -> None:
    monitor, server = pbx
    legs = await open_legs(server, register_legs(server, "halt-legs"))
    await wait_live(monitor, "halt-legs")
    await asyncio.sleep(0.1)  # both legs attached
    warned = await monitor.calls["halt-legs"].control.warn_agent("请注意用语")
    assert warned.outcome is Outcome.DONE, warned
    tone = []
    while (frame := await legs[Speaker.AGENT].frame(0.5)) is not None and frame[0] == KIND_SLIN:
        tone.append(np.frombuffer(frame[1], "<i2"))
        if len(tone) > 5 and not tone[-1].any():
            break
    assert max(np.abs(f).max() for f in tone) > 5000
    with pytest.raises(TimeoutError):
        await legs[Speaker.CUSTOMER].frame(0.2)  # nothing was written to the customer's leg
    assert await monitor.halt("halt-legs", "threat", "supervisor") is Outcome.DONE
    for leg in legs.values():
        while (frame := await leg.frame()) is not None and frame[0] != KIND_HANGUP:
            pass  # the rest of the tone on the agent's leg
        assert frame == (KIND_HANGUP, b"") and await leg.closed()
    await settled(monitor)
    call = await monitor.services.archive.get_call("halt-legs")
    assert call is not None and call["call"]["end_reason"] == "halted"


class PbxControl(FakeTransport):
    """What the ARI application registers: halts and warnings go to the PBX, not to the legs' sockets."""

    def __init__(self, monitor: Monitor | None = None) -> None:
        super().__init__([])
        self.warned: list[str] = []
        self.monitor = monitor

    async def hangup(self, reason: str) -> ControlResult:
        if self.monitor is not None:  # ARI: the first leg's StasisEnd arrives before the second DELETE returns
            assert self.monitor.end_call("ari-call", "far_end_hangup:customer")
            await asyncio.sleep(0.05)
        return await super().hangup(reason)

    async def warn_agent(self, prompt: str) -> ControlResult:
        self.warned.append(prompt)
        return ControlResult(Outcome.DONE, "whispered")


async def test_a_call_the_pbx_controls_is_halted_and_ended_by_the_pbx(pbx: tuple[Monitor, AudioSocketServer]) -> None:
    monitor, server = pbx
    control = PbxControl(monitor)
    monitor.expect_call("ari-call", control)
    legs = await open_legs(server, register_legs(server, "ari-call"))
    await wait_live(monitor, "ari-call")
    session = monitor.calls["ari-call"]
    assert (await session.control.warn_agent("stop")).detail == "whispered" and control.warned == ["stop"]
    assert await monitor.halt("ari-call", "threat", "supervisor") is Outcome.DONE
    assert control.hung_up == "threat"
    with pytest.raises(TimeoutError):
        await legs[Speaker.AGENT].frame(0.2)  # the PBX ends the legs; no hang-up frame on the sockets
    assert not monitor.end_call("ari-call", "hangup")  # already ended by the halt
    for leg in legs.values():
        leg.writer.close()
    await settled(monitor)
    monitor.forget_call("ari-call")
    call = await monitor.services.archive.get_call("ari-call")
    assert call is not None and call["call"]["end_reason"] == "halted"


async def test_the_pbx_ends_a_call_when_a_party_hangs_up(pbx: tuple[Monitor, AudioSocketServer]) -> None:
    monitor, server = pbx
    monitor.expect_call("far-end", PbxControl())
    await open_legs(server, register_legs(server, "far-end"))
    await wait_live(monitor, "far-end")
    assert monitor.end_call("far-end", "far_end_hangup:customer")
    await settled(monitor)
    call = await monitor.services.archive.get_call("far-end")
    assert call is not None and call["call"]["end_reason"] == "far_end_hangup:customer"
    assert not monitor.end_call("far-end", "hangup")


async def test_a_leg_refuses_the_other_partys_audio_and_unknown_legs(pbx: tuple[Monitor, AudioSocketServer]) -> None:
    monitor, _ = pbx
    started = CallStarted("checked", "A1", "audiosocket", BOTH, leg=Speaker.AGENT)
    async with monitor.live_call(started, FakeTransport([])) as leg:
        with pytest.raises(ProtocolError, match="customer audio on the agent leg"):
            await leg.push(AudioChunk("checked", Speaker.CUSTOMER, np.zeros(320, np.float32), 0.0))
        with pytest.raises(ProtocolError) as refused:
            async with monitor.live_call(
                CallStarted("checked", "A1", "audiosocket", BOTH, leg=None), FakeTransport([])
            ):
                pass
        assert refused.value.code == "reconnect_mismatch"
        leg.end_input("hangup")
    with pytest.raises(ProtocolError) as unknown:
        async with monitor.live_call(
            CallStarted("other", "A1", "audiosocket", (Speaker.CUSTOMER,), leg=Speaker.AGENT), FakeTransport([])
        ):
            pass
    assert unknown.value.code == "unknown_leg"
    await settled(monitor)


def test_the_dialplan_registers_both_legs_of_a_call_in_a_form_body() -> None:
    from compliance_monitor.api.pbx import Registration

    info = Registration.model_validate({"call_id": "c-9", "speaker": "agent", "legs": "agent,customer"}).info()
    assert (info.call_id, info.speaker, info.legs) == ("c-9", Speaker.AGENT, BOTH)
    assert Registration.model_validate({"speaker": "customer"}).info().legs == ()
    with pytest.raises(ValueError, match="legs"):
        Registration.model_validate({"legs": "agent,nobody"})


async def test_a_leg_whose_audio_fails_leaves_the_call_half_heard_and_a_supervisor_told(
    pbx: tuple[Monitor, AudioSocketServer],
) -> None:
    monitor, _ = pbx
    feed = monitor.services.bus.subscribe(lambda _e: True, replay_live=False)  # type: ignore[union-attr]
    agent_started = CallStarted("half", "A1", "audiosocket", BOTH, leg=Speaker.AGENT)
    async with monitor.live_call(agent_started, FakeTransport([])) as agent:
        customer_started = CallStarted("half", "A1", "audiosocket", BOTH, leg=Speaker.CUSTOMER)
        with pytest.raises(ProtocolError):
            async with monitor.live_call(customer_started, FakeTransport([])) as customer:
                await customer.push(AudioChunk("half", Speaker.AGENT, np.zeros(320, np.float32), 0.0))
        await agent.session.settle_controls()  # the alert is archived and published off the bridge's path
        assert not agent.input_ended  # the collector's leg is still heard
        lost = [e for e in drain_events(feed) if isinstance(e, MonitoringLostEvent)]
        assert [e.reason for e in lost] == ["leg_lost:customer"]
        assert "protocol_error:wrong_leg" in lost[0].message
        call = await monitor.services.archive.get_call("half")
        assert call is not None
        alert = next(a for a in call["actions"] if a["action"] == "alert_supervisor")
        assert "customer leg" in alert["reason"] and alert["actor"] == "monitor"
        agent.end_input("hangup")
    await settled(monitor)


def drain_events(sub: Subscription) -> list[Event]:
    events = []
    while not sub.queue.empty():
        events.append(sub.queue.get_nowait())
    return events
