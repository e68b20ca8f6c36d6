"""In-process event bus: fan-out of console events to websocket subscribers.

Each subscriber has a bounded queue. A slow browser must never stall a call's pipeline, so when a
subscriber's queue is full the oldest event is dropped and counted (the console shows the gap).
Recent events of each live call are kept (bounded) so a console that connects mid-call can rebuild
its view from events alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable

from compliance_monitor.messages import CallEndedEvent, CallStartedEvent, Event

log = logging.getLogger(__name__)

EventFilter = Callable[[Event], bool]


class Subscription:
    def __init__(self, bus: InMemoryBus, accept: EventFilter, maxsize: int) -> None:
        self._bus = bus
        self.accept = accept
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.dropped = 0

    def offer(self, event: Event) -> None:
        if not self.accept(event):
            return
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            yield await self.queue.get()

    def close(self) -> None:
        self._bus.unsubscribe(self)


class InMemoryBus:
    def __init__(self, subscriber_queue_size: int = 1000, replay_events_per_call: int = 300) -> None:
        self._subscribers: set[Subscription] = set()
        self._recent: dict[str, tuple[Event, deque[Event]]] = {}
        self._queue_size = subscriber_queue_size
        self._replay_per_call = replay_events_per_call
        self.published = 0

    async def publish(self, event: Event) -> None:
        self.published += 1
        if isinstance(event, CallStartedEvent):
            # The start event is kept apart so a long call's replay still begins with it.
            self._recent[event.call_id] = (event, deque(maxlen=self._replay_per_call))
        elif isinstance(event, CallEndedEvent):
            self._recent.pop(event.call_id, None)
        elif (recent := self._recent.get(event.call_id)) is not None:
            recent[1].append(event)
        for sub in list(self._subscribers):
            sub.offer(event)

    def subscribe(self, accept: EventFilter, *, replay_live: bool = True) -> Subscription:
        sub = Subscription(self, accept, self._queue_size)
        if replay_live:
            for start, events in self._recent.values():
                for event in (start, *events):
                    sub.offer(event)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)
        if sub.dropped:
            log.warning("a console subscriber was too slow and lost %d events", sub.dropped)

    async def aclose(self) -> None:
        self._subscribers.clear()
        self._recent.clear()
