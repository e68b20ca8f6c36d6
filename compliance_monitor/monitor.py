"""The table of live calls, and the one path by which any bridge holds a call.

A bridge (the websockets, the AudioSocket TCP server; ARI and FreeSWITCH next) turns its start message into a
fully validated ``CallStarted`` (``ingest/base.py``) and then holds the call with::

    async with monitor.live_call(started, control) as session:
        ...  # session.push(audio); session.end_input(reason) on the bridge's own stop

``live_call`` claims the bridge's call id synchronously (no await between the check and the claim, so
five simultaneous starts with one id give one call), archives the call, and on leaving — normally, on a
protocol error, on a deadline, on a bug, on cancellation — always releases it. No failure after
registration leaves a call live.

Call ids: one live connection per id; a second start with the id of an attached call is refused (1008).
A bridge that drops without a stop may reconnect with the same id within ``ingest.reconnect_grace_s``
and continues the same call (same archive row, same transcribers). A start after a call's input has
ended is a new call: the archive never overwrites one, so it is archived, published and halted under a
new key ``<call_id>~2`` (``~3``...), with the bridge's id kept as ``metadata.bridge_call_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from compliance_monitor.ingest.base import BridgeStats, CloseCode, ProtocolError
from compliance_monitor.messages import CallEndedEvent, CallStarted, CallStartedEvent, Outcome
from compliance_monitor.pipeline import CallControl, CallSession, Services
from compliance_monitor.privacy.mask import mask_event

log = logging.getLogger(__name__)


class Monitor:
    """Owns the live calls. Bridges open and end calls here; the API halts them here."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.calls: dict[str, CallSession] = {}  # by call_id as published and archived
        self._claims: dict[str, CallSession | None] = {}  # by the bridge's call id; None while opening
        self._grace: dict[str, asyncio.TimerHandle] = {}  # dropped bridges that may still reconnect
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_call_done: Callable[[CallSession], Awaitable[None]] | None = None
        self.bridge_stats = BridgeStats()

    @property
    def live_count(self) -> int:
        return len(self.calls) + sum(1 for claimed in self._claims.values() if claimed is None)

    # ------------------------------------------------------------------ the bridge side

    @contextlib.asynccontextmanager
    async def live_call(self, started: CallStarted, control: CallControl) -> AsyncIterator[CallSession]:
        session = await self._attach(started, control)
        error: str | None = None
        try:
            yield session
        except ProtocolError as exc:
            error = f"protocol_error:{exc.code}"
            raise
        except asyncio.CancelledError:
            error = "cancelled"
            raise
        except BaseException:
            error = "bridge_error"
            raise
        finally:
            self._release(session, error)

    async def _attach(self, started: CallStarted, control: CallControl) -> CallSession:
        key = started.call_id
        if key in self._claims:
            claimed = self._claims[key]
            if claimed is None or claimed.attached:
                raise ProtocolError("duplicate_call", f"call {key} is already live on another connection")
            if not claimed.input_ended:
                return self._resume(claimed, started, control)
            # Its input is over (it is draining): this start is a new call under a new archive key.
        limit = self.services.settings.ingest.max_live_calls
        if self.live_count >= limit:
            raise ProtocolError("too_many_calls", f"{limit} live calls already", CloseCode.TRY_AGAIN_LATER)
        self._claims[key] = None  # claimed before the first await
        try:
            session = await self._open(started, control)
        except BaseException:
            if key in self._claims and self._claims[key] is None:
                del self._claims[key]
            raise
        self._claims[key] = session
        return session

    def _resume(self, session: CallSession, started: CallStarted, control: CallControl) -> CallSession:
        if set(started.speakers) != set(session.started.speakers):
            raise ProtocolError("reconnect_mismatch", f"call {started.call_id} resumed with other speakers")
        if timer := self._grace.pop(session.bridge_call_id, None):
            timer.cancel()
        session.attached, session.control = True, control
        self.bridge_stats.calls_resumed += 1
        log.info("call %s: bridge reconnected", session.call_id)
        return session

    def _release(self, session: CallSession, error: str | None) -> None:
        """The connection carrying ``session`` is gone: end its input, or wait a while for a reconnect."""
        session.attached = False
        if session.input_ended:
            return
        if session.halting:  # the bridge closed because we are hanging up (see CallSession._hangup)
            session.end_input("halted")
            return
        grace = self.services.settings.ingest.reconnect_grace_s
        if error is None and grace > 0:  # dropped without a stop: a bridge may reconnect
            loop = asyncio.get_running_loop()
            self._grace[session.bridge_call_id] = loop.call_later(grace, self._grace_over, session)
        else:
            session.end_input(error or "hangup")

    def _grace_over(self, session: CallSession) -> None:
        if self._grace.get(session.bridge_call_id) is not None and not session.attached:
            del self._grace[session.bridge_call_id]
            session.end_input("hangup")

    # ------------------------------------------------------------------ one call's life

    async def _open(self, started: CallStarted, control: CallControl) -> CallSession:
        archive = self.services.archive
        bridge_call_id = started.call_id
        key = await archive.start_call(started)
        if key != bridge_call_id:
            started = dataclasses.replace(
                started, call_id=key, metadata={**started.metadata, "bridge_call_id": bridge_call_id}
            )
        try:
            session = CallSession(started, self.services, control)
        except BaseException:
            await archive.end_call(key, "start_failed", time.time(), "no_audio")
            raise
        session.bridge_call_id = bridge_call_id
        self.calls[key] = session
        # From here the task owns the call: whatever fails in it, its finally unregisters the call.
        task = asyncio.create_task(self._run_call(session), name=f"call-{key}")
        session.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.bridge_stats.calls_started += 1
        return session

    async def _announce(self, session: CallSession) -> None:
        started = session.started
        await self.services.bus.publish(
            mask_event(
                CallStartedEvent(
                    call_id=started.call_id,
                    agent_id=started.agent_id,
                    bridge=started.bridge,
                    speakers=list(started.speakers),
                    metadata=started.metadata,
                )
            )
        )
        await session.check_call_start()

    async def _run_call(self, session: CallSession) -> None:
        drain_s = self.services.settings.ingest.drain_timeout_s
        run: asyncio.Task[None] | None = None
        ended = asyncio.create_task(session._ended.wait())
        try:
            await self._announce(session)
            run = asyncio.create_task(session.run(), name=f"call-{session.call_id}-stages")
            await asyncio.wait({run, ended}, return_when=asyncio.FIRST_COMPLETED)
            # Input is over: everything already accepted is still transcribed, within a deadline.
            await asyncio.wait_for(run, drain_s)
        except TimeoutError:
            log.error("call %s: draining took longer than %.0fs; pending audio dropped", session.call_id, drain_s)
        except asyncio.CancelledError:
            if run is not None:
                run.cancel()
            raise
        except Exception as exc:  # one broken call must not take the others down; it is logged with its id
            log.exception("call %s failed", session.call_id)
            await session.lose("pipeline_error", _describe(exc))
        finally:
            ended.cancel()
            session.end_input(session.end_reason if session.input_ended else "pipeline_error")
            if run is None:
                await session.aclose()
            await session.settle_controls()
            await self._finish(session)

    async def _finish(self, session: CallSession) -> None:
        svc = self.services
        self.calls.pop(session.call_id, None)
        if self._claims.get(session.bridge_call_id) is session:
            del self._claims[session.bridge_call_id]
            if timer := self._grace.pop(session.bridge_call_id, None):
                timer.cancel()
        svc.policy.end_call(session.call_id)
        self.bridge_stats.frames_dropped += session.chunks_dropped
        content = session.content
        if content == "no_audio":
            self.bridge_stats.calls_without_audio += 1
        elif content == "no_speech":
            self.bridge_stats.calls_without_speech += 1
        if session.lost_reason is not None:
            self.bridge_stats.calls_unmonitored += 1
        try:
            await svc.archive.end_call(session.call_id, session.end_reason, time.time(), content)
            await svc.bus.publish(
                CallEndedEvent(call_id=session.call_id, agent_id=session.agent_id, reason=session.end_reason)
            )
        except Exception:  # the call is unregistered whatever happens here; the archive says why it is not ended
            log.exception("call %s: recording its end failed", session.call_id)
        if self.on_call_done:
            await self.on_call_done(session)

    # ------------------------------------------------------------------ the API side

    async def halt(self, call_id: str, reason: str, actor: str, finding_id: int | None = None) -> Outcome | None:
        """The bridge's outcome, or None when the call is not live or a hangup is already under way."""
        session = self.calls.get(call_id)
        if session is None:
            return None
        return await session.halt(reason, actor, finding_id)

    async def aclose(self) -> None:
        for timer in self._grace.values():
            timer.cancel()
        self._grace.clear()
        for session in list(self.calls.values()):
            session.end_input("server_shutdown")
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _describe(exc: BaseException) -> str:
    """One line for the supervisor: the first real error inside a task group's exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    where = {"sqlite3": "archive", "redis": "event bus"}.get(type(exc).__module__.split(".")[0], "pipeline")
    return f"{where} failure: {type(exc).__name__}: {exc}"[:300]
