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

Legs: a PBX may deliver one connection per party (Asterisk: an AudioSocket per leg, from the dialplan or from
ARI's per-leg snoops). Such a start names its ``leg`` and lists every leg of the call in ``speakers``; the
first leg opens the call, the others join it (one connection per leg: a second one for an attached leg is
a duplicate, one for a dropped leg within the grace is a reconnect). Each leg's audio must carry its own
speaker. The call's input ends when every leg that joined has ended (its hang-up frame, or its grace ran
out) or on a halt. Halts and warnings go to a control the PBX registered for the call (``expect_call``,
e.g. ARI's) or else to the legs' own connections: the hang-up to each leg, the warning to the agent's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from compliance_monitor.ingest.base import BridgeStats, CloseCode, ProtocolError
from compliance_monitor.messages import (
    AudioChunk,
    CallEndedEvent,
    CallStarted,
    CallStartedEvent,
    ControlResult,
    MonitoringLostEvent,
    Outcome,
    Speaker,
)
from compliance_monitor.pipeline import CallControl, CallSession, Services
from compliance_monitor.privacy.mask import mask_event

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class _Leg:
    """One connection's share of a call: the whole call (``speaker`` None) or one party's leg."""

    speaker: Speaker | None
    control: CallControl
    attached: bool = True
    ended: bool = False
    grace: asyncio.TimerHandle | None = None


def _failed(reason: str) -> bool:
    """A connection's end that is no hang-up (see ``Monitor.live_call``): its audio stopped, not its phone call."""
    return reason.startswith("protocol_error:") or reason in ("bridge_error", "cancelled")


class CallLeg:
    """What a bridge connection holds while it carries a call (``Monitor.live_call``): its leg of the session."""

    def __init__(self, monitor: Monitor, session: CallSession, leg: _Leg) -> None:
        self.monitor, self.session, self._leg = monitor, session, leg

    @property
    def input_ended(self) -> bool:
        return self.session.input_ended or self._leg.ended

    async def push(self, chunk: AudioChunk) -> None:
        if self._leg.speaker is not None and chunk.speaker is not self._leg.speaker:
            raise ProtocolError("wrong_leg", f"{chunk.speaker} audio on the {self._leg.speaker} leg")
        await self.session.push(chunk)

    def end_input(self, reason: str) -> None:
        """The bridge's own stop: for a leg, that party hung up; the call ends with its last leg."""
        self.monitor._end_leg(self.session, self._leg, reason)


class _LegControls:
    """``CallControl`` of a call whose legs came on separate connections, or whose PBX registered a control."""

    def __init__(self, legs: list[_Leg], pbx: CallControl | None) -> None:
        self.legs, self.pbx = legs, pbx

    def _attached(self) -> list[_Leg]:
        return [leg for leg in self.legs if leg.attached and not leg.ended]

    async def hangup(self, reason: str) -> ControlResult:
        if self.pbx is not None:
            return await self.pbx.hangup(reason)
        legs = self._attached()
        if not legs:
            return ControlResult(Outcome.FAILED, "no leg of this call is connected")
        # All legs at once: the legs are bridged, so the PBX may end the others as soon as one is hung up, and a
        # leg asked later would find its connection already gone.
        results = await asyncio.gather(*(leg.control.hangup(reason) for leg in legs))
        done = [r for r in results if r.outcome is Outcome.DONE]
        failed = [r for r in results if r.outcome is not Outcome.DONE]
        if not done:
            return ControlResult(failed[0].outcome, "; ".join(r.detail or r.outcome.value for r in failed)[:300])
        detail = f"hung up {len(done)} of {len(legs)} leg(s): " + "; ".join(r.detail for r in done)
        if failed:  # the bridged call ends with the leg that was hung up; say what the others answered
            detail += " | not reached: " + "; ".join(r.detail or r.outcome.value for r in failed)
        return ControlResult(Outcome.DONE, detail[:300])

    async def warn_agent(self, prompt: str) -> ControlResult:
        if self.pbx is not None:
            return await self.pbx.warn_agent(prompt)
        agent = [leg for leg in self._attached() if leg.speaker in (Speaker.AGENT, None)]
        if not agent:
            return ControlResult(Outcome.NOT_SUPPORTED, "no connection carries the collector's leg of this call")
        return await agent[0].control.warn_agent(prompt)

    async def lost(self, reason: str) -> None:
        if self.pbx is not None:
            await self.pbx.lost(reason)
        for leg in self._attached():
            await leg.control.lost(reason)


class Monitor:
    """Owns the live calls. Bridges open and end calls here; the API halts them here."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.calls: dict[str, CallSession] = {}  # by call_id as published and archived
        self._claims: dict[str, CallSession] = {}  # by the bridge's call id
        self._opening: dict[str, asyncio.Future[CallSession]] = {}  # claimed, being archived
        self._legs: dict[CallSession, list[_Leg]] = {}
        self._expected: dict[str, CallControl] = {}  # controls the PBX side registered, by bridge call id
        self._unheard: dict[str, list[tuple[Speaker, str]]] = {}  # legs the PBX side could not tap, not yet open
        self._untapped: dict[str, str | None] = {}  # calls the PBX side could not tap at all -> agent id
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_call_done: Callable[[CallSession], Awaitable[None]] | None = None
        self.bridge_stats = BridgeStats()

    @property
    def live_count(self) -> int:
        return len(self.calls) + len(self._opening)

    def expect_call(self, bridge_call_id: str, control: CallControl) -> None:
        """The PBX side (ARI) controls this call: its halts and warnings go there, not to the legs' sockets."""
        self._expected[bridge_call_id] = control

    def forget_call(self, bridge_call_id: str) -> None:
        self._expected.pop(bridge_call_id, None)
        self._unheard.pop(bridge_call_id, None)
        self._untapped.pop(bridge_call_id, None)

    def leg_unmonitored(self, bridge_call_id: str, speaker: Speaker, why: str) -> None:
        """The PBX side could not tap one party of a call it bridged: the call's supervisor alert says so, now if
        the call is open, else as soon as the other party's audio opens it."""
        session = self._claims.get(bridge_call_id)
        if session is not None and not session.input_ended:
            session.leg_lost(speaker, why)
        else:
            self._unheard.setdefault(bridge_call_id, []).append((speaker, why))

    def call_unmonitored(self, bridge_call_id: str, agent_id: str | None, why: str) -> None:
        """No party of a call the PBX bridged could be tapped: nothing will open it here, so tell supervisors now."""
        self._unheard.pop(bridge_call_id, None)
        self._untapped[bridge_call_id] = agent_id
        message = f"call {bridge_call_id} is not monitored ({why}); 本通话未被监控"
        log.error("%s", message)
        event = MonitoringLostEvent(call_id=bridge_call_id, agent_id=agent_id, reason=why, message=message)
        self._spawn_publish(event, f"unmonitored-{bridge_call_id}")

    def _spawn_publish(self, event: MonitoringLostEvent | CallEndedEvent, name: str) -> None:
        """Published off the caller's path (the ARI event reader); a failing bus is logged, never raised there."""

        async def publish() -> None:
            try:
                await self.services.bus.publish(event)
            except Exception:
                log.exception("call %s: publishing %s failed", event.call_id, event.type)

        task = asyncio.create_task(publish(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def end_call(self, bridge_call_id: str, reason: str) -> bool:
        """The PBX says the call is over (ARI: a leg hung up): its input ends now. False if it is not live."""
        session = self._claims.get(bridge_call_id)
        if bridge_call_id in self._untapped:  # the consoles showed it as not monitored: they hear it end too
            ended = CallEndedEvent(call_id=bridge_call_id, agent_id=self._untapped.pop(bridge_call_id), reason=reason)
            self._spawn_publish(ended, f"ended-{bridge_call_id}")
        if session is None or session.input_ended:
            return False
        # During our own hangup the PBX reports each leg going before the hangup request returns: it is the halt.
        session.end_input("halted" if session.halting else reason)
        return True

    # ------------------------------------------------------------------ the bridge side

    @contextlib.asynccontextmanager
    async def live_call(self, started: CallStarted, control: CallControl) -> AsyncIterator[CallLeg]:
        session, leg = await self._attach(started, control)
        error: str | None = None
        try:
            yield CallLeg(self, session, leg)
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
            self._release(session, leg, error)

    async def _attach(self, started: CallStarted, control: CallControl) -> tuple[CallSession, _Leg]:
        key = started.call_id
        if started.leg is not None and started.leg not in started.speakers:
            raise ProtocolError("unknown_leg", f"leg {started.leg} is not one of the call's {started.speakers}")
        while (opening := self._opening.get(key)) is not None:
            if started.leg is None:
                raise ProtocolError("duplicate_call", f"call {key} is already live on another connection")
            # Another leg of this call is being opened: join it once it is (or open it, if that failed).
            with contextlib.suppress(Exception):
                await asyncio.shield(opening)
        claimed = self._claims.get(key)
        if claimed is not None and not claimed.input_ended:
            return claimed, self._join(claimed, started, control)
        if claimed is not None and claimed.attached:
            raise ProtocolError("duplicate_call", f"call {key} is already live on another connection")
        # No call, or its input is over (it is draining): this start is a new call under a new archive key.
        limit = self.services.settings.ingest.max_live_calls
        if self.live_count >= limit:
            raise ProtocolError("too_many_calls", f"{limit} live calls already", CloseCode.TRY_AGAIN_LATER)
        opening = asyncio.get_running_loop().create_future()
        self._opening[key] = opening  # claimed before the first await
        try:
            leg = _Leg(started.leg, control)
            session = await self._open(started, leg)
        except BaseException as exc:
            opening.set_exception(exc if isinstance(exc, Exception) else ProtocolError("start_failed", "cancelled"))
            opening.exception()  # retrieved: nobody may be waiting for it
            raise
        finally:
            del self._opening[key]
        opening.set_result(session)
        self._claims[key] = session
        return session, leg

    def _join(self, session: CallSession, started: CallStarted, control: CallControl) -> _Leg:
        """A connection for a call that is live: another leg, or a dropped one coming back."""
        key = started.call_id
        legs = self._legs[session]
        if (started.leg is None) != (session.started.leg is None) or set(started.speakers) != set(
            session.started.speakers
        ):
            raise ProtocolError("reconnect_mismatch", f"call {key} resumed with other speakers or legs")
        leg = next((leg for leg in legs if leg.speaker is started.leg), None)
        if leg is None:
            leg = _Leg(started.leg, control)
            legs.append(leg)
            session.attached = True
            log.info("call %s: the %s leg joined", session.call_id, started.leg)
            return leg
        if leg.attached:
            raise ProtocolError("duplicate_call", f"call {key} is already live on another connection")
        if leg.ended:
            raise ProtocolError("leg_ended", f"the {started.leg} leg of call {key} has hung up")
        if leg.grace is not None:
            leg.grace.cancel()
            leg.grace = None
        leg.attached, leg.control = True, control
        session.attached = True
        self.bridge_stats.calls_resumed += 1
        log.info("call %s: bridge reconnected", session.call_id)
        return leg

    def _release(self, session: CallSession, leg: _Leg, error: str | None) -> None:
        """The connection carrying ``leg`` is gone: end its input, or wait a while for a reconnect."""
        leg.attached = False
        session.attached = any(other.attached for other in self._legs.get(session, ()))
        if session.input_ended or leg.ended:
            return
        if session.halting:  # the bridge closed because we are hanging up (see CallSession._hangup)
            session.end_input("halted")
            return
        grace = self.services.settings.ingest.reconnect_grace_s
        if error is None and grace > 0:  # dropped without a stop: a bridge may reconnect
            leg.grace = asyncio.get_running_loop().call_later(grace, self._grace_over, session, leg)
        else:
            self._end_leg(session, leg, error or "hangup")

    def _grace_over(self, session: CallSession, leg: _Leg) -> None:
        leg.grace = None
        if not leg.attached:
            self._end_leg(session, leg, "hangup")

    def _end_leg(self, session: CallSession, leg: _Leg, reason: str) -> None:
        leg.ended = True
        if leg.grace is not None:
            leg.grace.cancel()
            leg.grace = None
        if all(other.ended for other in self._legs.get(session, ())):
            session.end_input(reason)
        elif _failed(reason):  # that party's audio failed, not its phone: the call goes on half-heard
            session.leg_lost(leg.speaker, reason)
        else:
            log.info("call %s: the %s leg ended (%s); the call goes on", session.call_id, leg.speaker, reason)

    # ------------------------------------------------------------------ one call's life

    async def _open(self, started: CallStarted, leg: _Leg) -> CallSession:
        archive = self.services.archive
        bridge_call_id = started.call_id
        legs = [leg]
        pbx = self._expected.get(bridge_call_id)
        control: CallControl = leg.control if pbx is None and leg.speaker is None else _LegControls(legs, pbx)
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
        self._legs[session] = legs
        for speaker, why in self._unheard.pop(bridge_call_id, ()):
            session.leg_lost(speaker, why)
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
        for leg in self._legs.pop(session, ()):
            if leg.grace is not None:
                leg.grace.cancel()
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
        for legs in self._legs.values():
            for leg in legs:
                if leg.grace is not None:
                    leg.grace.cancel()
                    leg.grace = None
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
