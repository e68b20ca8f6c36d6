"""Redis event bus: the same interface as ``InMemoryBus``, shared by several monitor processes.

Design
------
* **One Redis Stream** ``{prefix}:events`` carries every event (field ``e`` = the event's JSON),
  appended with ``XADD … MAXLEN ~ maxlen``. Every process that serves consoles runs **one reader
  task** that ``XREAD BLOCK``s from the last id it has seen and fans each event out to its local
  ``Subscription``s (bounded, drop-oldest, from ``memory.py``). Publishing processes do not short-cut
  their own events to local subscribers: everything goes through the stream, so every process sees
  every event in the same global order, at the cost of one Redis round trip.
* **Why Streams, not pub/sub** (CONVENTIONS.md item 10): pub/sub forgets a message the moment it is
  sent, so a reader whose connection drops loses everything published until it resubscribes. A stream
  keeps the last ``maxlen`` entries and the reader resumes from the last id it saw, so a Redis
  connection drop loses nothing (unless the reader falls more than ``maxlen`` entries behind, which
  is detected, logged and counted as a gap). No consumer group: every process must see every event
  (fan-out), not share them out (work queue).
* **Replay for consoles that connect mid-call.** Each publish also maintains, in the same
  ``MULTI``/``EXEC`` transaction as the ``XADD``, the replay state of live calls:
  ``{prefix}:livestart:{call_id}`` (the call_started JSON, kept apart so a replay always begins with
  it), ``{prefix}:live:{call_id}`` (the most recent ``replay_events_per_call`` events, ``LTRIM``) and
  the set ``{prefix}:live`` of live call ids. call_ended deletes them. Replay keys carry a TTL
  (refreshed by every event) so a publisher that crashes mid-call does not leak them forever.
* **``subscribe`` stays synchronous**, like ``InMemoryBus.subscribe``: the reader task keeps a
  local mirror of the replay state. ``start()`` loads it from Redis together with the stream's last
  id in one atomic Lua call, and the reader then applies each event to the mirror before fanning it
  out. Both happen on the event loop, so a new subscriber gets the mirror (replay) and then every
  later event, exactly once, with no Redis round trip in the websocket handler.
* **Failures.** The reader survives connection drops: it logs, backs off (exponential, capped),
  reconnects and continues from its last id. Entries that do not parse are logged, counted and
  skipped. ``publish`` never raises on a Redis failure: the archive is the record and a Redis outage
  must not stop the compliance pipeline of live calls, so the event is counted in
  ``publish_errors`` (and logged once per outage) and publishing fails fast for ``retry_after_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import pydantic
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from compliance_monitor.bus.memory import EventFilter, InMemoryBus, Subscription
from compliance_monitor.messages import CallEndedEvent, CallStartedEvent, Event

log = logging.getLogger(__name__)

EVENTS: pydantic.TypeAdapter[Event] = pydantic.TypeAdapter(Event)
FIELD = "e"
READ_BLOCK_MS = 5_000
READ_COUNT = 256

XReadReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]  # with protocol=2

# Atomically: the stream's last id and, for each live call, its start event and recent events.
# Ids left in the live set by a crashed publisher (replay keys expired) are removed on the way.
_SNAPSHOT_LUA = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local last_id = '0-0'
if #last > 0 then last_id = last[1][1] end
local calls = {}
for _, call_id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local start = redis.call('GET', ARGV[1] .. 'livestart:' .. call_id)
  if start then
    table.insert(calls, {start, redis.call('LRANGE', ARGV[1] .. 'live:' .. call_id, 0, -1)})
  else
    redis.call('SREM', KEYS[2], call_id)
  end
end
return {last_id, calls}
"""


class RedisBusUnavailable(RuntimeError):
    """Redis could not be reached when the bus started."""


def parse_event(raw: bytes | str) -> Event:
    return EVENTS.validate_json(raw)


def _stream_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class _LiveCall:
    start: Event
    recent: deque[Event]
    last_seen: float = field(default_factory=time.monotonic)


class _LiveMirror:
    """This process's copy of the replay state: start event + recent events of each live call."""

    def __init__(self, per_call: int, ttl_s: float) -> None:
        self._per_call = per_call
        self._ttl_s = ttl_s
        self._calls: dict[str, _LiveCall] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def apply(self, event: Event) -> None:
        if isinstance(event, CallStartedEvent):
            self._calls[event.call_id] = _LiveCall(event, deque(maxlen=self._per_call))
        elif isinstance(event, CallEndedEvent):
            self._calls.pop(event.call_id, None)
        elif (call := self._calls.get(event.call_id)) is not None:
            call.recent.append(event)
            call.last_seen = time.monotonic()

    def load(self, calls: Iterable[tuple[Event, list[Event]]]) -> None:
        self._calls = {
            start.call_id: _LiveCall(start, deque(recent, maxlen=self._per_call))
            for start, recent in sorted(calls, key=lambda call: call[0].ts)
        }

    def replay(self) -> list[Event]:
        """Events to replay, oldest call first; calls silent for longer than the TTL are forgotten."""
        stale_before = time.monotonic() - self._ttl_s
        for call_id in [cid for cid, call in self._calls.items() if call.last_seen < stale_before]:
            del self._calls[call_id]
        return [event for call in self._calls.values() for event in (call.start, *call.recent)]

    def clear(self) -> None:
        self._calls.clear()


class RedisBus:
    """Event bus over a Redis Stream; see the module docstring. Call ``start()`` to receive events."""

    def __init__(
        self,
        redis_url: str,
        stream_prefix: str = "cm",
        subscriber_queue_size: int = 1000,
        replay_events_per_call: int = 300,
        *,
        maxlen: int = 100_000,
        replay_ttl_s: int = 86_400,
        reconnect_backoff: tuple[float, float] = (0.1, 5.0),
        retry_after_s: float = 1.0,
    ) -> None:
        self._prefix = stream_prefix
        self._stream = f"{stream_prefix}:events"
        self._live_set = f"{stream_prefix}:live"
        self._queue_size = subscriber_queue_size
        self._replay_per_call = replay_events_per_call
        self._maxlen = maxlen
        self._ttl_s = replay_ttl_s
        self._backoff = reconnect_backoff
        self._retry_after_s = retry_after_s
        tag = f"{re.sub(r'[^A-Za-z0-9_.:-]', '_', stream_prefix)}:{uuid.uuid4().hex[:8]}"
        self.reader_client_name = f"cm-bus-reader:{tag}"
        # Publishes: short timeouts and one retry (a pooled connection left dead by a Redis restart).
        self._redis: Redis = Redis.from_url(
            redis_url,
            client_name=f"cm-bus-publisher:{tag}",
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            retry=Retry(NoBackoff(), 1),
            protocol=2,
        )
        # The reader has its own connection so a blocking XREAD never holds up a publish; no automatic
        # retries, the read loop reconnects itself (and says so). The socket timeout outlasts BLOCK.
        self._reader: Redis = Redis.from_url(
            redis_url,
            client_name=self.reader_client_name,
            socket_timeout=READ_BLOCK_MS / 1000 + 5.0,
            socket_connect_timeout=5.0,
            retry=Retry(NoBackoff(), 0),
            protocol=2,  # RESP2: XREAD replies are [[stream, [(id, {field: value})]]], whatever redis-py's default
        )
        self._snapshot = self._reader.register_script(_SNAPSHOT_LUA)
        self._subscribers: set[Subscription] = set()
        self._mirror = _LiveMirror(replay_events_per_call, replay_ttl_s)
        self._task: asyncio.Task[None] | None = None
        self._last_id = "0-0"
        self._mirror_after: tuple[int, int] | None = None  # after a resync: entries up to here are in it
        self._publish_down_until = 0.0
        self._closed_dropped = 0
        self.published = 0
        self.publish_errors = 0
        self.received = 0
        self.delivered = 0
        self.malformed = 0
        self.reconnects = 0
        self.gaps = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the live calls' replay state and start the reader. Raises if Redis is unreachable."""
        if self._task is not None:
            return
        try:
            self._last_id = await self._load_snapshot()
        except RedisError as exc:
            raise RedisBusUnavailable(f"event bus: cannot use Redis at {self._where()}: {exc}") from exc
        self._task = asyncio.create_task(self._read_loop(), name=f"redis-bus-reader-{self._stream}")
        self._task.add_done_callback(self._reader_stopped)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in list(self._subscribers):
            self.unsubscribe(sub)
        self._mirror.clear()
        await self._reader.aclose()
        await self._redis.aclose()

    # ------------------------------------------------------------------ publish

    async def publish(self, event: Event) -> None:
        """XADD the event and update the replay keys in one transaction; never raises on Redis errors."""
        if time.monotonic() < self._publish_down_until:
            self.publish_errors += 1
            return
        data = event.model_dump_json()
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xadd(self._stream, {FIELD: data}, maxlen=self._maxlen, approximate=True)
                self._queue_replay_update(pipe, event, data)
                await pipe.execute()
        except RedisError as exc:
            self._publish_failed(exc)
            return
        if self.publish_errors and self._publish_down_until:
            log.warning("event bus: publishing to Redis works again (%d events lost so far)", self.publish_errors)
        self._publish_down_until = 0.0
        self.published += 1

    def _queue_replay_update(self, pipe: Pipeline, event: Event, data: str) -> None:
        live, start = self._replay_keys(event.call_id)
        if isinstance(event, CallStartedEvent):
            pipe.delete(live)
            pipe.set(start, data, ex=self._ttl_s)
            pipe.sadd(self._live_set, event.call_id)
        elif isinstance(event, CallEndedEvent):
            pipe.delete(live, start)
            pipe.srem(self._live_set, event.call_id)
        elif self._replay_per_call > 0:
            # A call that was never started (or has ended) gets an orphan list; it is never replayed
            # (not in the live set) and expires with the TTL.
            pipe.rpush(live, data)
            pipe.ltrim(live, -self._replay_per_call, -1)
            pipe.expire(live, self._ttl_s)
            pipe.expire(start, self._ttl_s)

    def _replay_keys(self, call_id: str) -> tuple[str, str]:
        return f"{self._prefix}:live:{call_id}", f"{self._prefix}:livestart:{call_id}"

    def _publish_failed(self, exc: RedisError) -> None:
        self.publish_errors += 1
        if not self._publish_down_until:
            log.error("event bus: publishing to Redis at %s failed, consoles miss events: %s", self._where(), exc)
        self._publish_down_until = time.monotonic() + self._retry_after_s

    # ------------------------------------------------------------------ subscribe

    def subscribe(self, accept: EventFilter, *, replay_live: bool = True) -> Subscription:
        """Like ``InMemoryBus.subscribe``: replay of live calls (from the local mirror), then live events."""
        # Subscription only calls bus.unsubscribe(sub), which RedisBus has too.
        sub = Subscription(cast("InMemoryBus", self), accept, self._queue_size)
        if replay_live:
            for event in self._mirror.replay():
                sub.offer(event)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub not in self._subscribers:
            return
        self._subscribers.discard(sub)
        self._closed_dropped += sub.dropped
        if sub.dropped:
            log.warning("a console subscriber was too slow and lost %d events", sub.dropped)

    def stats(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "publish_errors": self.publish_errors,
            "received": self.received,
            "delivered": self.delivered,
            "dropped": self._closed_dropped + sum(sub.dropped for sub in self._subscribers),
            "malformed": self.malformed,
            "reconnects": self.reconnects,
            "gaps": self.gaps,
            "subscribers": len(self._subscribers),
            "live_calls": len(self._mirror),
            "reader_running": self.running,
        }

    # ------------------------------------------------------------------ reader

    async def _load_snapshot(self) -> str:
        """Replace the mirror with Redis's replay keys; return the stream id they are current to."""
        last_id, calls = await self._snapshot(keys=[self._stream, self._live_set], args=[f"{self._prefix}:"])
        self._mirror.load(call for raw in calls if (call := self._parse_call(raw)) is not None)
        return last_id.decode() if isinstance(last_id, bytes) else str(last_id)

    def _parse_call(self, raw: list[Any]) -> tuple[Event, list[Event]] | None:
        start = self._parse(raw[0], "replay start")
        if start is None:
            return None
        recent = [event for item in raw[1] if (event := self._parse(item, "replay entry")) is not None]
        return start, recent

    async def _read_loop(self) -> None:
        delay = self._backoff[0]
        resuming = False
        while True:
            try:
                if resuming:
                    await self._check_for_gap()
                    log.info("event bus reader reconnected to Redis, continuing after %s", self._last_id)
                    resuming = False
                reply = await self._reader.xread({self._stream: self._last_id}, count=READ_COUNT, block=READ_BLOCK_MS)
            except RedisError as exc:
                self.reconnects += 0 if resuming else 1  # outages, not attempts
                log.warning("event bus reader lost Redis at %s (%s); retrying in %.1fs", self._where(), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff[1])
                resuming = True
                continue
            delay = self._backoff[0]
            for _stream, entries in cast(XReadReply, reply or []):
                for entry_id, fields in entries:
                    self._dispatch(entry_id, fields)

    async def _check_for_gap(self) -> None:
        """After a reconnect: if the stream was trimmed past our last id, events may be lost; resync."""
        try:
            info = await self._reader.xinfo_stream(self._stream)
        except ResponseError:  # no stream (yet, or Redis lost it): nothing to catch up on
            return
        first = info.get("first-entry")
        trimmed = info.get("entries-added", math.inf) > info.get("length", 0)  # entries-added: Redis >= 7
        if first and trimmed and _stream_id(first[0]) > _stream_id(self._last_id):
            self.gaps += 1
            log.error("event bus reader fell more than %d events behind; consoles missed some", self._maxlen)
            # What is still in the stream is delivered; the mirror restarts from Redis's replay keys,
            # which already include the entries up to the snapshot's id.
            self._mirror_after = _stream_id(await self._load_snapshot())

    def _dispatch(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        self._last_id = entry_id.decode()
        raw = fields.get(FIELD.encode())
        event = None if raw is None else self._parse(raw, f"stream entry {self._last_id}")
        if event is None:
            if raw is None:
                self.malformed += 1
                log.warning("event bus: stream entry %s has no %r field; skipped", self._last_id, FIELD)
            return
        self.received += 1
        if self._mirror_after is None or _stream_id(entry_id) > self._mirror_after:
            self._mirror_after = None
            self._mirror.apply(event)
        for sub in list(self._subscribers):
            if sub.accept(event):  # offer() checks again; filters are cheap and this keeps "delivered" honest
                sub.offer(event)
                self.delivered += 1

    def _parse(self, raw: bytes | str, what: str) -> Event | None:
        try:
            return parse_event(raw)
        except pydantic.ValidationError as exc:
            self.malformed += 1
            # No input in the log: events carry call transcripts (personal data).
            first = exc.errors(include_url=False, include_input=False)[0]
            log.warning("event bus: %s is not a valid event (%s at %s); skipped", what, first["msg"], first["loc"])
            return None

    def _reader_stopped(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("event bus reader stopped: consoles get no more events", exc_info=exc)

    def _where(self) -> str:
        kwargs = self._redis.connection_pool.connection_kwargs
        if "path" in kwargs:  # unix socket
            return str(kwargs["path"])
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
