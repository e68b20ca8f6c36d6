"""Integration tests for the Redis event bus (compliance_monitor.bus.redis_bus) against a real Redis.

Each test uses a fresh stream prefix and deletes its keys afterwards. Two ``RedisBus`` objects on one
prefix stand in for two monitor processes. Redis must be reachable (CI runs one); the tests fail,
not skip, when it is not. ``CM_TEST_REDIS_URL`` overrides the default address.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from compliance_monitor.bus.memory import Subscription
from compliance_monitor.bus.redis_bus import RedisBus, RedisBusUnavailable
from compliance_monitor.messages import CallEndedEvent, CallStartedEvent, Event, Speaker, TranscriptEvent

pytestmark = [pytest.mark.redis]

REDIS_URL = os.environ.get("CM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TIMEOUT_S = 5.0

BusFactory = Callable[..., Awaitable[RedisBus]]


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
async def admin() -> AsyncIterator[Redis]:
    """A plain client for looking at and tampering with Redis behind the bus's back."""
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await client.ping()
    except RedisError as exc:
        await client.aclose()
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({exc}). The redis-marked tests need a Redis server: "
            "start one (redis-server --port 6379) or point CM_TEST_REDIS_URL at one.",
            pytrace=False,
        )
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(admin: Redis) -> AsyncIterator[str]:
    prefix = f"cmtest:{uuid.uuid4().hex}"
    yield prefix
    keys = [key async for key in admin.scan_iter(match=f"{prefix}:*")]
    if keys:
        await admin.delete(*keys)


@pytest.fixture
async def make_bus(prefix: str) -> AsyncIterator[BusFactory]:
    """Started buses on the test's prefix (one per simulated process), closed after the test."""
    buses: list[RedisBus] = []

    async def make(**kwargs: Any) -> RedisBus:
        bus = RedisBus(REDIS_URL, prefix, **kwargs)
        buses.append(bus)
        await bus.start()
        return bus

    yield make
    for bus in buses:
        await bus.aclose()


def started(call_id: str, agent_id: str = "a1") -> CallStartedEvent:
    return CallStartedEvent(
        call_id=call_id, agent_id=agent_id, bridge="pcm", speakers=[Speaker.AGENT, Speaker.CUSTOMER]
    )


def line(call_id: str, n: int, agent_id: str = "a1") -> TranscriptEvent:
    return TranscriptEvent(
        call_id=call_id,
        agent_id=agent_id,
        speaker=Speaker.AGENT,
        segment_no=n,
        text=f"第{n}句",
        t0=n,
        t1=n + 1.0,
        final=True,
    )


def ended(call_id: str, agent_id: str = "a1") -> CallEndedEvent:
    return CallEndedEvent(call_id=call_id, agent_id=agent_id, reason="hangup")


def describe(events: list[Event]) -> list[tuple[str, str, int | None]]:
    return [(e.type, e.call_id, getattr(e, "segment_no", None)) for e in events]


def drain(sub: Subscription) -> list[Event]:
    out = []
    while not sub.queue.empty():
        out.append(sub.queue.get_nowait())
    return out


async def take(sub: Subscription, n: int) -> list[Event]:
    """The next ``n`` events of a subscription, failing after a deadline instead of hanging."""
    async with asyncio.timeout(TIMEOUT_S):
        return [await sub.queue.get() for _ in range(n)]


async def eventually(condition: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after a deadline."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    while True:
        result = condition()
        if await result if isinstance(result, Awaitable) else result:
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def reader_connection(admin: Redis, bus: RedisBus) -> dict[str, str] | None:
    clients = [c for c in await admin.client_list() if c["name"] == bus.reader_client_name]
    return clients[0] if clients else None


async def reader_is_blocked(admin: Redis, bus: RedisBus) -> bool:
    client = await reader_connection(admin, bus)
    return client is not None and client["cmd"] == "xread" and "b" in client["flags"]


async def publish_all(bus: RedisBus, events: list[Event]) -> None:
    for event in events:
        await bus.publish(event)


SCENARIO: list[Event] = [
    started("live"),
    line("live", 0),
    started("over"),
    line("over", 0),
    line("live", 1),
    ended("over"),
]
LIVE_REPLAY = [("call_started", "live", None), ("transcript", "live", 0), ("transcript", "live", 1)]


# --------------------------------------------------------------------------- fan-out across processes


async def test_events_published_on_one_bus_reach_another_in_order(make_bus: BusFactory) -> None:
    a, b = await make_bus(), await make_bus()
    on_a, on_b = a.subscribe(lambda e: True), b.subscribe(lambda e: True)
    events: list[Event] = [started("c1"), started("c2")]
    events += [line(f"c{1 + n % 2}", n) for n in range(20)]
    events.append(ended("c1"))

    await publish_all(a, events)

    expected = describe(events)
    assert describe(await take(on_b, len(events))) == expected
    assert describe(await take(on_a, len(events))) == expected  # the publisher's own consoles, same order
    assert a.published == len(events) and b.published == 0
    stats = b.stats()
    assert stats["received"] == stats["delivered"] == len(events)
    assert stats["dropped"] == stats["malformed"] == stats["reconnects"] == 0


async def test_publishes_from_two_buses_interleave_in_one_order(make_bus: BusFactory) -> None:
    a, b = await make_bus(), await make_bus()
    on_a, on_b = a.subscribe(lambda e: True), b.subscribe(lambda e: True)
    await asyncio.gather(
        publish_all(a, [line("ca", n) for n in range(10)]), publish_all(b, [line("cb", n) for n in range(10)])
    )
    seen_a, seen_b = await take(on_a, 20), await take(on_b, 20)
    assert describe(seen_a) == describe(seen_b)
    assert [n for _, call_id, n in describe(seen_a) if call_id == "ca"] == list(range(10))


# --------------------------------------------------------------------------- replay of live calls


async def test_new_process_replays_live_calls_from_redis(make_bus: BusFactory, admin: Redis, prefix: str) -> None:
    a = await make_bus()
    await publish_all(a, SCENARIO)

    c = await make_bus()  # starts after the events: its replay comes from the Redis replay keys
    sub = c.subscribe(lambda e: True)
    assert describe(drain(sub)) == LIVE_REPLAY
    await a.publish(line("live", 2))
    assert describe(await take(sub, 1)) == [("transcript", "live", 2)]

    assert await admin.smembers(f"{prefix}:live") == {"live"}
    assert not await admin.exists(f"{prefix}:live:over", f"{prefix}:livestart:over")
    assert 0 < await admin.ttl(f"{prefix}:livestart:live") <= 86_400
    assert 0 < await admin.ttl(f"{prefix}:live:live") <= 86_400


async def test_running_process_replays_live_calls_from_its_mirror(make_bus: BusFactory) -> None:
    a, b = await make_bus(), await make_bus()
    probe = b.subscribe(lambda e: True)
    await publish_all(a, SCENARIO)
    await take(probe, len(SCENARIO))  # b's reader has applied every event

    sub = b.subscribe(lambda e: True)
    assert describe(drain(sub)) == LIVE_REPLAY
    assert b.stats()["live_calls"] == 1


async def test_replay_is_bounded_and_begins_with_call_started(make_bus: BusFactory, admin: Redis, prefix: str) -> None:
    a, b = await make_bus(replay_events_per_call=3), await make_bus(replay_events_per_call=3)
    probe = b.subscribe(lambda e: True)
    await publish_all(a, [started("c"), *(line("c", n) for n in range(10))])
    await take(probe, 11)

    expected = [("call_started", "c", None)] + [("transcript", "c", n) for n in (7, 8, 9)]
    assert await admin.llen(f"{prefix}:live:c") == 3
    assert describe(drain(b.subscribe(lambda e: True))) == expected
    c = await make_bus(replay_events_per_call=3)
    assert describe(drain(c.subscribe(lambda e: True))) == expected


async def test_subscribe_without_replay(make_bus: BusFactory) -> None:
    a = await make_bus()
    await a.publish(started("c"))
    b = await make_bus()
    assert b.subscribe(lambda e: True, replay_live=False).queue.empty()


async def test_live_ids_left_by_a_crashed_publisher_are_dropped(
    make_bus: BusFactory, admin: Redis, prefix: str
) -> None:
    await admin.sadd(f"{prefix}:live", "ghost")  # its replay keys have expired
    bus = await make_bus()
    assert bus.subscribe(lambda e: True).queue.empty()
    assert await admin.smembers(f"{prefix}:live") == set()


# --------------------------------------------------------------------------- filters and slow consumers


async def test_filter_applies_to_replay_and_live_events(make_bus: BusFactory) -> None:
    a = await make_bus()
    await publish_all(
        a, [started("mine", "a1"), started("theirs", "a2"), line("mine", 0, "a1"), line("theirs", 0, "a2")]
    )
    b = await make_bus()
    sub = b.subscribe(lambda e: e.agent_id == "a1")
    probe = b.subscribe(lambda e: True, replay_live=False)
    await publish_all(a, [line("theirs", 1, "a2"), line("mine", 1, "a1")])
    await take(probe, 2)
    assert describe(drain(sub)) == [
        ("call_started", "mine", None),
        ("transcript", "mine", 0),
        ("transcript", "mine", 1),
    ]


async def test_slow_subscriber_drops_oldest_and_counts(make_bus: BusFactory) -> None:
    a, b = await make_bus(), await make_bus(subscriber_queue_size=3)
    slow = b.subscribe(lambda e: True)
    await publish_all(a, [started("c"), *(line("c", n) for n in range(5))])
    await eventually(lambda: b.stats()["received"] == 6, "bus b to receive 6 events")

    assert slow.dropped == 3
    assert b.stats()["dropped"] == 3
    assert describe(drain(slow)) == [("transcript", "c", n) for n in (2, 3, 4)]
    slow.close()
    assert b.stats()["dropped"] == 3  # still counted once the console has gone
    assert b.stats()["subscribers"] == 0
    assert a.stats()["dropped"] == 0  # the publisher is never held up by b's slow console


# --------------------------------------------------------------------------- failures


async def test_reader_survives_client_kill(make_bus: BusFactory, admin: Redis) -> None:
    a = await make_bus()
    b = await make_bus(reconnect_backoff=(0.5, 1.0))
    sub = b.subscribe(lambda e: True)
    await a.publish(started("c"))
    await take(sub, 1)
    await eventually(lambda: reader_is_blocked(admin, b), "b's reader to block in XREAD")

    client = await reader_connection(admin, b)
    assert client is not None
    assert await admin.client_kill_filter(_id=client["id"]) == 1
    await eventually(lambda: b.reconnects == 1, "b's reader to notice the dropped connection")
    # Published while b's reader is backing off: it must resume from its last id and get them.
    await publish_all(a, [line("c", 0), line("c", 1)])

    assert describe(await take(sub, 2)) == [("transcript", "c", 0), ("transcript", "c", 1)]
    await a.publish(line("c", 2))
    assert describe(await take(sub, 1)) == [("transcript", "c", 2)]
    assert sub.queue.empty()  # nothing twice
    assert b.running
    reconnected = await reader_connection(admin, b)
    assert reconnected is not None and reconnected["id"] != client["id"]  # same client name again
    assert b.stats()["reconnects"] == 1 and b.stats()["gaps"] == 0


async def test_reader_that_falls_behind_maxlen_counts_a_gap_and_reloads(
    make_bus: BusFactory, admin: Redis, prefix: str
) -> None:
    a = await make_bus()
    b = await make_bus(reconnect_backoff=(1.0, 1.0))
    sub = b.subscribe(lambda e: True)
    await publish_all(a, [started("c"), line("c", 0), started("gone")])
    await take(sub, 3)
    await eventually(lambda: reader_is_blocked(admin, b), "b's reader to block in XREAD")
    client = await reader_connection(admin, b)
    assert client is not None
    await admin.client_kill_filter(_id=client["id"])
    await eventually(lambda: b.reconnects == 1, "b's reader to notice the dropped connection")

    # While b is away: the call "gone" ends and the stream is trimmed past b's last id.
    await a.publish(ended("gone"))
    async with admin.pipeline(transaction=True) as pipe:
        for n in range(20):
            pipe.xadd(f"{prefix}:events", {"e": line("c", 100 + n).model_dump_json()})
        pipe.xtrim(f"{prefix}:events", maxlen=5, approximate=False)
        await pipe.execute()

    await eventually(lambda: b.stats()["gaps"] == 1, "b's reader to detect the gap")
    # What is left in the stream is still delivered; the replay state comes from Redis again ("gone" ended).
    assert describe(await take(sub, 5)) == [("transcript", "c", n) for n in range(115, 120)]
    assert describe(drain(b.subscribe(lambda e: True))) == [("call_started", "c", None), ("transcript", "c", 0)]
    await a.publish(line("c", 1))
    assert describe(await take(sub, 1)) == [("transcript", "c", 1)]
    assert describe(drain(b.subscribe(lambda e: True)))[-1] == ("transcript", "c", 1)


async def test_malformed_entries_are_skipped(make_bus: BusFactory, admin: Redis, prefix: str) -> None:
    a, b = await make_bus(), await make_bus()
    sub = b.subscribe(lambda e: True)
    stream = f"{prefix}:events"
    await admin.xadd(stream, {"e": "not json"})
    await admin.xadd(stream, {"other": "field"})
    await admin.xadd(stream, {"e": '{"type": "no_such_event", "call_id": "c"}'})
    await a.publish(started("c"))

    assert describe(await take(sub, 1)) == [("call_started", "c", None)]
    assert b.stats()["malformed"] == 3
    assert b.running

    await admin.rpush(f"{prefix}:live:c", "garbage")  # a bad replay entry is skipped as well
    c = await make_bus()
    assert describe(drain(c.subscribe(lambda e: True))) == [("call_started", "c", None)]
    assert c.stats()["malformed"] == 1


async def test_stream_is_capped(make_bus: BusFactory, admin: Redis, prefix: str) -> None:
    a = await make_bus(maxlen=10)
    await publish_all(a, [line("c", n) for n in range(300)])
    assert await admin.xlen(f"{prefix}:events") < 300  # MAXLEN ~ trims whole nodes, so not exactly 10


async def test_aclose_stops_the_reader(make_bus: BusFactory, admin: Redis) -> None:
    bus = await make_bus()
    sub = bus.subscribe(lambda e: True)
    assert bus.running
    await eventually(lambda: reader_is_blocked(admin, bus), "the reader to block in XREAD")

    await bus.aclose()

    assert not bus.running
    assert bus.stats()["subscribers"] == 0
    assert sub.queue.empty()
    await eventually(lambda: _gone(admin, bus), "the reader's connection to close")
    await bus.aclose()  # twice is fine


async def _gone(admin: Redis, bus: RedisBus) -> bool:
    return await reader_connection(admin, bus) is None


async def test_without_redis_start_fails_clearly_and_publish_does_not_raise() -> None:
    bus = RedisBus("redis://127.0.0.1:1/0", f"cmtest:{uuid.uuid4().hex}", retry_after_s=60)
    with pytest.raises(RedisBusUnavailable, match=r"127\.0\.0\.1:1"):
        await bus.start()
    assert not bus.running

    await bus.publish(started("c"))  # a Redis outage must not break the call pipeline
    await bus.publish(line("c", 0))  # within retry_after_s: fails fast without trying Redis
    assert bus.stats()["publish_errors"] == 2
    assert bus.published == 0
    await bus.aclose()
