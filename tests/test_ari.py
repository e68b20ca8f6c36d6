"""ARI REST requests of the Asterisk bridge, against a recording fake of Asterisk's ARI (httpx MockTransport)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.asyncio.server import ServerConnection

from compliance_monitor.bus.memory import Subscription
from compliance_monitor.config import AriSettings
from compliance_monitor.ingest.audiosocket import AudioSocketRegistry, CallInfo
from compliance_monitor.messages import Event, Outcome, Speaker
from compliance_monitor.monitor import Monitor
from compliance_monitor.telephony.ari import AGENT_ARG, AriApp, AriClient, AriControl, attach_leg
from compliance_monitor.telephony.audiosocket import AudioSocketServer
from tests.test_audiosocket import SILENCE, Channel, audiosocket_monitor, speech_frames, uuid_frame
from tests.test_live_call import settled

pytestmark = pytest.mark.unit


class FakeAri:
    def __init__(self, gone: set[str] | None = None, fail: set[str] | None = None, not_in_app: int = 0) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.gone, self.fail = gone or set(), fail or set()
        self.not_in_app = not_in_app  # addChannel answers 422 this many times (new channels not in Stasis yet)
        self.n = 0
        self.app: AriApp | None = None  # set: each channel added to a bridge is reported in it, as Asterisk does
        self._reports: set[asyncio.Task[None]] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/ari")
        params = dict(request.url.params)
        self.requests.append((request.method, path, params))
        assert request.headers["authorization"].startswith("Basic ")
        if path in self.fail:
            return httpx.Response(500, json={"message": "boom"})
        if path.endswith("/addChannel") and self.not_in_app > 0:
            self.not_in_app -= 1
            return httpx.Response(422, json={"message": "Channel not in Stasis application"})
        if request.method == "DELETE":
            return httpx.Response(404 if path.rsplit("/", 1)[1] in self.gone else 204)
        if path.endswith("/addChannel") and self.app is not None:
            for event in entered(path, params):
                task = asyncio.get_running_loop().create_task(self.app.handle(event))
                self._reports.add(task)
                task.add_done_callback(self._reports.discard)
        self.n += 1
        return httpx.Response(200, json={"id": f"obj-{self.n}"})


def entered(add_path: str, params: dict[str, str]) -> list[dict[str, object]]:
    """The ChannelEnteredBridge events Asterisk sends once an addChannel's channels are in the bridge."""
    bridge = add_path.split("/")[2]
    return [
        {"type": "ChannelEnteredBridge", "bridge": {"id": bridge}, "channel": {"id": channel}}
        for channel in params["channel"].split(",")
    ]


async def test_adding_channels_not_yet_in_the_app_is_retried_then_given_up() -> None:
    fake = FakeAri(not_in_app=2)
    bridge = await client(fake).bridge("snoop-1", "media-1")
    adds = [r for r in fake.requests if r[1] == f"/bridges/{bridge}/addChannel"]
    assert len(adds) == 3 and all(r[2]["channel"] == "snoop-1,media-1" for r in adds)

    never = FakeAri(not_in_app=999)
    with pytest.raises(httpx.HTTPStatusError):
        await client(never, join_within_s=0.3).bridge("snoop-2", "media-2")
    assert sum(r[1].endswith("/addChannel") for r in never.requests) > 1
    assert never.requests[-1][:2] == ("DELETE", "/bridges/obj-1")  # the empty bridge is not left behind


async def test_a_tap_that_cannot_be_bridged_is_taken_down_so_no_silent_leg_opens() -> None:
    fake, registry = FakeAri(not_in_app=999), AudioSocketRegistry()
    ari = client(fake, join_within_s=0.1)
    with pytest.raises(httpx.HTTPStatusError):
        await attach_leg(ari, registry, "chan-cust", Speaker.CUSTOMER, CallInfo("call-1", "A7"))
    deleted = [p for m, p, _ in fake.requests if m == "DELETE"]
    assert deleted == ["/bridges/obj-3", "/channels/obj-1", "/channels/obj-2"]  # the bridge, the snoop, the media
    assert len(registry) == 0
    await ari.aclose()


def client(fake: FakeAri, **settings: object) -> AriClient:
    s = AriSettings(url="http://pbx:8088/ari", password="pw", warn_s=0.01, **settings)  # type: ignore[arg-type]
    return AriClient(s, httpx.MockTransport(fake))


async def test_a_leg_is_snooped_spy_in_into_audiosocket_external_media_registered_with_its_party() -> None:
    fake, registry = FakeAri(), AudioSocketRegistry()
    ari = client(fake, audiosocket_host="10.0.0.5:9092")
    leg = await attach_leg(ari, registry, "chan-agent", Speaker.AGENT, CallInfo("call-1", "A7", metadata={"x": 1}))
    method, path, params = fake.requests[0]
    assert (method, path, params["spy"], params["app"]) == (
        "POST",
        "/channels/chan-agent/snoop",
        "in",
        "compliance-monitor",
    )
    _, path, params = fake.requests[1]
    assert path == "/channels/externalMedia"
    assert params == {
        "app": "compliance-monitor",
        "external_host": "10.0.0.5:9092",
        "encapsulation": "audiosocket",
        "transport": "tcp",
        "format": "slin",
        "data": leg.audiosocket_uuid,
    }
    assert [r[1] for r in fake.requests[2:]] == ["/bridges", f"/bridges/{leg.bridge}/addChannel"]
    assert fake.requests[3][2]["channel"] == f"{leg.snoop},{leg.media}"
    info = registry.lookup(leg.audiosocket_uuid)
    assert info is not None and (info.call_id, info.agent_id, info.speaker) == ("call-1", "A7", Speaker.AGENT)
    await ari.aclose()


async def test_halt_deletes_both_legs_and_a_leg_already_gone_counts_as_ended() -> None:
    fake = FakeAri(gone={"chan-cust"})
    result = await AriControl(client(fake), "chan-agent", "chan-cust").hangup("halt")
    assert result.outcome is Outcome.DONE
    assert [(m, p) for m, p, _ in fake.requests] == [
        ("DELETE", "/channels/chan-cust"),
        ("DELETE", "/channels/chan-agent"),
    ]
    failing = FakeAri(fail={"/channels/chan-agent"})
    assert (await AriControl(client(failing), "chan-agent", "chan-cust").hangup("halt")).outcome is Outcome.FAILED


async def test_warn_whispers_to_the_agent_leg_only_and_removes_the_snoop() -> None:
    fake = FakeAri()
    result = await AriControl(client(fake), "chan-agent", "chan-cust").warn_agent("stop threatening")
    assert result.outcome is Outcome.DONE, result
    (m1, p1, q1), (m2, p2, q2), (m3, p3, _) = fake.requests
    assert (m1, p1, q1["whisper"], q1["spy"]) == ("POST", "/channels/chan-agent/snoop", "out", "none")
    assert (m2, p2, q2["media"]) == ("POST", "/channels/obj-1/play", "tone:1000/300,0/200")
    assert (m3, p3) == ("DELETE", "/channels/obj-1")
    assert not any("chan-cust" in p for _, p, _ in fake.requests)
    json.dumps(fake.requests)  # plain data


# --------------------------------------------------------------------------- the Stasis application (events websocket)


class FakeAriEvents:
    """Asterisk's ``/ari/events`` websocket: drops the first connection at once, then sends what the test queues."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        self.requests: list[tuple[str, str | None]] = []  # (path with query, Authorization)

    async def __call__(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.requests.append((ws.request.path, ws.request.headers.get("Authorization")))
        if len(self.requests) == 1:
            return  # a dropped connection: the application must reconnect
        while True:  # until the application disconnects (a ping on a closed connection raises)
            try:
                event = await asyncio.wait_for(self.queue.get(), 0.1)
            except TimeoutError:
                with contextlib.suppress(websockets.ConnectionClosed):
                    await ws.ping()
                    continue
                return
            await ws.send(json.dumps(event))


@pytest.fixture
async def monitored(tmp_path: Path) -> AsyncIterator[tuple[Monitor, AudioSocketServer]]:
    async with audiosocket_monitor(tmp_path) as running:
        yield running


async def wait_until(check: Callable[[], object], within_s: float = 10) -> None:
    for _ in range(int(within_s / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


async def test_stasis_start_bridges_the_collector_and_monitors_both_legs_as_one_call_until_a_party_hangs_up(
    monitored: tuple[Monitor, AudioSocketServer],
) -> None:
    monitor, server = monitored
    events, rest = FakeAriEvents(), FakeAri()
    async with websockets.serve(events, "127.0.0.1", 0) as ws_server:
        port = ws_server.sockets[0].getsockname()[1]
        settings = AriSettings(
            url=f"http://127.0.0.1:{port}/ari",
            user="cm",
            password="pw",
            reconnect_min_s=0.05,
        )
        ari = AriClient(settings, httpx.MockTransport(rest))
        app = AriApp(ari, monitor, server.registry)
        rest.app = app
        task = asyncio.create_task(app.run())
        try:
            await wait_until(lambda: app.connects == 2)  # dropped once, reconnected
            path, auth = events.requests[-1]
            assert path == "/ari/events?app=compliance-monitor"
            assert auth == "Basic " + base64.b64encode(b"cm:pw").decode()
            # The customer's channel enters Stasis(compliance-monitor,PJSIP/agent,1001): the collector is dialled.
            customer = {"id": "cust-1", "name": "PJSIP/customer-1", "caller": {"number": "13800138000"}}
            await events.queue.put({"type": "StasisStart", "args": ["PJSIP/agent", "1001"], "channel": customer})
            await wait_until(lambda: any(p == "/channels" for _, p, _ in rest.requests))
            _, _, originate = next(r for r in rest.requests if r[1] == "/channels")
            assert (originate["endpoint"], originate["appArgs"]) == ("PJSIP/agent", f"{AGENT_ARG},cust-1")
            agent_channel = "obj-1"
            # Our own snoop/externalMedia channels enter the app too (externalMedia with its data as arg): ignored.
            await events.queue.put({"type": "StasisStart", "args": [], "channel": {"id": "snoop-x"}})
            await events.queue.put(
                {
                    "type": "StasisStart",
                    "args": [str(uuid.uuid4())],
                    "channel": {"id": "media-x", "name": "AudioSocket/127.0.0.1:9092-00000003"},
                }
            )
            await events.queue.put(
                {"type": "StasisStart", "args": [AGENT_ARG, "cust-1"], "channel": {"id": agent_channel}}
            )
            await wait_until(lambda: sum(p == "/channels/externalMedia" for _, p, _ in rest.requests) == 2)
            assert sum(p == "/channels" for _, p, _ in rest.requests) == 1  # only the collector was dialled
            paths = [(m, p) for m, p, _ in rest.requests]
            assert ("POST", "/channels/cust-1/answer") in paths
            assert ("POST", f"/channels/{agent_channel}/snoop") in paths and ("POST", "/channels/cust-1/snoop") in paths
            # Asterisk connects one AudioSocket per externalMedia channel, with the UUID it was given.
            keys = [q["data"] for _, p, q in rest.requests if p == "/channels/externalMedia"]
            legs = [await Channel.open(server) for _ in keys]
            speech = speech_frames()
            for leg, key in zip(legs, keys, strict=True):
                await leg.send(uuid_frame(uuid.UUID(key)))
            await asyncio.gather(*(leg.send(*speech) for leg in legs))
            await wait_until(lambda: "cust-1" in monitor.calls)
            assert list(monitor.calls) == ["cust-1"]
            session = monitor.calls["cust-1"]
            assert set(session.started.speakers) == {Speaker.AGENT, Speaker.CUSTOMER}
            assert session.started.metadata["customer_number"] == "13800138000"
            before = len(rest.requests)
            # The customer hangs up: the collector's leg, the snoops' media and the bridges go; the call ends.
            await events.queue.put({"type": "StasisEnd", "channel": customer})
            await settled(monitor, 30)
            deleted = {p for m, p, _ in rest.requests[before:] if m == "DELETE"}
            assert f"/channels/{agent_channel}" in deleted and "/channels/cust-1" not in deleted
            assert sum(p.startswith("/bridges/") for p in deleted) == 3  # the call's bridge and each leg's
            call = await monitor.services.archive.get_call("cust-1")
            assert call is not None and call["call"]["end_reason"] == "far_end_hangup:customer"
            assert {s["speaker"] for s in call["segments"]} == {"agent", "customer"}
            assert not app.calls and len(server.registry) == 0
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await ari.aclose()


async def answered(
    rest: FakeAri,
    monitor: Monitor,
    server: AudioSocketServer,
    customer: str,
    agent_id: str | None = None,
    **settings: object,
) -> tuple[AriClient, AriApp]:
    """The customer's channel enters Stasis, the collector it dials (``obj-1``) answers: the app has set the call up."""
    ari = client(rest, **settings)
    app = AriApp(ari, monitor, server.registry)
    rest.app = app
    args = ["PJSIP/agent", agent_id] if agent_id else ["PJSIP/agent"]
    await app.handle({"type": "StasisStart", "args": args, "channel": {"id": customer}})
    await app.drain()
    await app.handle({"type": "StasisStart", "args": [AGENT_ARG, customer], "channel": {"id": "obj-1"}})
    await app.drain()
    return ari, app


def queued(feed: Subscription, kind: str) -> list[Event]:
    """What the subscription holds of one event type, left in place."""
    return [e for e in list(feed.queue._queue) if e.type == kind]  # type: ignore[attr-defined]


async def test_a_halt_deletes_both_legs_and_the_stasis_end_that_follows_changes_nothing(
    monitored: tuple[Monitor, AudioSocketServer],
) -> None:
    monitor, server = monitored
    rest = FakeAri()
    ari, app = await answered(rest, monitor, server, "c2")
    keys = [q["data"] for _, p, q in rest.requests if p == "/channels/externalMedia"]
    legs = [await Channel.open(server) for _ in keys]
    for leg, key in zip(legs, keys, strict=True):
        await leg.send(uuid_frame(uuid.UUID(key)), SILENCE)
    await wait_until(lambda: "c2" in monitor.calls)
    assert await monitor.halt("c2", "threat", "supervisor") is Outcome.DONE
    assert {("DELETE", "/channels/c2"), ("DELETE", "/channels/obj-1")} <= {(m, p) for m, p, _ in rest.requests}
    await app.handle({"type": "ChannelDestroyed", "channel": {"id": "c2"}})
    for leg in legs:
        leg.writer.close()
    await settled(monitor)
    call = await monitor.services.archive.get_call("c2")
    assert call is not None and call["call"]["end_reason"] == "halted"
    await ari.aclose()


async def test_a_party_that_cannot_be_tapped_is_reported_to_supervisors_once_the_call_opens(
    monitored: tuple[Monitor, AudioSocketServer],
) -> None:
    monitor, server = monitored
    feed = monitor.services.bus.subscribe(lambda _e: True, replay_live=False)  # type: ignore[union-attr]
    rest = FakeAri(fail={"/channels/c3/snoop"})
    ari, app = await answered(rest, monitor, server, "c3", agent_id="1001")
    [key] = [q["data"] for _, p, q in rest.requests if p == "/channels/externalMedia"]  # the collector's tap only
    leg = await Channel.open(server)
    await leg.send(uuid_frame(uuid.UUID(key)), SILENCE)
    await wait_until(lambda: "c3" in monitor.calls)
    session = monitor.calls["c3"]
    await wait_until(lambda: queued(feed, "monitoring_lost"))
    await session.settle_controls()
    [lost] = queued(feed, "monitoring_lost")
    assert lost.call_id == "c3" and lost.reason == "leg_lost:customer" and "ari_snoop_failed" in lost.message
    await app.handle({"type": "StasisEnd", "channel": {"id": "c3"}})
    leg.writer.close()
    await settled(monitor)
    call = await monitor.services.archive.get_call("c3")
    assert call is not None
    alert = next(a for a in call["actions"] if a["action"] == "alert_supervisor")
    assert "customer leg" in alert["reason"] and "ari_snoop_failed" in alert["reason"]
    await ari.aclose()


async def test_a_call_neither_party_of_which_can_be_tapped_is_reported_at_once(
    monitored: tuple[Monitor, AudioSocketServer],
) -> None:
    monitor, server = monitored
    feed = monitor.services.bus.subscribe(lambda _e: True, replay_live=False)  # type: ignore[union-attr]
    rest = FakeAri(fail={"/channels/externalMedia"})
    ari, app = await answered(rest, monitor, server, "c4", agent_id="1001")
    await wait_until(lambda: not feed.queue.empty())
    lost = feed.queue.get_nowait()
    assert (lost.type, lost.call_id, lost.agent_id, lost.reason) == (
        "monitoring_lost",
        "c4",
        "1001",
        "ari_snoop_failed",
    )
    snoops = [p for m, p, _ in rest.requests if m == "POST" and p.endswith("/snoop")]
    deleted = [p for m, p, _ in rest.requests if m == "DELETE"]
    assert len(snoops) == 2 and len(set(deleted)) == 2  # each half-made tap (its snoop) taken down...
    assert not {"/channels/c4", "/channels/obj-1"} & set(deleted)  # ... and neither party: they talk on
    assert len(server.registry) == 0 and not monitor.calls
    await app.handle({"type": "StasisEnd", "channel": {"id": "c4"}})  # the consoles' "not monitored" card ends
    await wait_until(lambda: not feed.queue.empty())
    ended = feed.queue.get_nowait()
    assert (ended.type, ended.call_id, ended.reason) == ("call_ended", "c4", "far_end_hangup:customer")
    await ari.aclose()


async def test_a_tap_that_carries_no_audio_is_rebuilt_then_reported_while_a_heard_one_is_left_alone(
    monitored: tuple[Monitor, AudioSocketServer],
) -> None:
    monitor, server = monitored
    feed = monitor.services.bus.subscribe(lambda _e: True, replay_live=False)  # type: ignore[union-attr]
    rest = FakeAri()
    ari, app = await answered(rest, monitor, server, "c5", agent_id="1001", tap_check_s=0.3, tap_rebuilds=1)
    call = app.calls["c5"]
    agent_leg, customer_leg = call.legs
    sockets = [await Channel.open(server) for _ in call.legs]
    await sockets[0].send(uuid_frame(uuid.UUID(agent_leg.audiosocket_uuid)), SILENCE)  # the collector is heard
    await sockets[1].send(uuid_frame(uuid.UUID(customer_leg.audiosocket_uuid)))  # the customer's tap: nothing
    await wait_until(lambda: queued(feed, "monitoring_lost"))
    snoops = [p for m, p, _ in rest.requests if m == "POST" and p.endswith("/snoop")]
    assert snoops == ["/channels/obj-1/snoop", "/channels/c5/snoop", "/channels/c5/snoop"]  # one rebuild, customer's
    rebuilt = call.legs[1]
    assert rebuilt.media == customer_leg.media and rebuilt.audiosocket_uuid == customer_leg.audiosocket_uuid
    assert (rebuilt.snoop, rebuilt.bridge) != (customer_leg.snoop, customer_leg.bridge)
    moved = next(q for _, p, q in rest.requests if p == f"/bridges/{rebuilt.bridge}/addChannel")
    assert moved["channel"] == f"{rebuilt.snoop},{customer_leg.media}"  # the same socket, into the new bridge
    deleted = {p for m, p, _ in rest.requests if m == "DELETE"}
    assert {f"/channels/{customer_leg.snoop}", f"/bridges/{customer_leg.bridge}"} <= deleted
    assert call.legs[0] == agent_leg  # the heard tap is left alone
    [lost] = queued(feed, "monitoring_lost")
    assert lost.reason == "leg_lost:customer" and "tap_silent" in lost.message
    await app.handle({"type": "StasisEnd", "channel": {"id": "c5"}})
    for sock in sockets:
        sock.writer.close()
    await settled(monitor)
    await ari.aclose()


async def test_each_set_up_step_waits_until_asterisk_reports_the_last_one_done(
    monitored: tuple[Monitor, AudioSocketServer],
) -> None:
    """addChannel only queues a join: the next snoop, the answer and the parties' bridge wait for Asterisk's
    ChannelEnteredBridge of what was added before (a snoop racing a queued join wedged Asterisk 22)."""
    monitor, server = monitored
    rest = FakeAri()  # not hooked to the app: the test reports the joins itself, one step at a time
    ari = client(rest)
    app = AriApp(ari, monitor, server.registry)
    await app.handle({"type": "StasisStart", "args": ["PJSIP/agent", "1001"], "channel": {"id": "c6"}})
    await app.drain()
    await app.handle({"type": "StasisStart", "args": [AGENT_ARG, "c6"], "channel": {"id": "obj-1"}})

    def adds() -> list[tuple[str, dict[str, str]]]:
        return [(p, q) for _, p, q in rest.requests if p.endswith("/addChannel")]

    async def report_join(n: int) -> None:
        await wait_until(lambda: len(adds()) >= n)
        await asyncio.sleep(0.1)  # nothing else is asked meanwhile: no other snoop, answer or bridge
        assert len(adds()) == n
        answered = ("POST", "/channels/c6/answer") in [(m, p) for m, p, _ in rest.requests]
        assert answered is (n == 3), n
        for event in entered(*adds()[n - 1]):
            await app.handle(event)

    await report_join(1)  # the collector's tap
    assert [p for _, p, _ in rest.requests if p.endswith("/snoop")] == ["/channels/obj-1/snoop"]
    await report_join(2)  # the customer's tap
    await report_join(3)  # the parties' bridge
    await app.drain()
    call = app.calls["c6"]
    assert len(call.legs) == 2 and call.bridge is not None and call.watch is not None
    assert adds()[2][1]["channel"] == "c6,obj-1"
    assert not app._joins  # nothing left waiting
    await app.handle({"type": "StasisEnd", "channel": {"id": "c6"}})
    await settled(monitor)
    await ari.aclose()
