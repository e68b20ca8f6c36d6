"""The live pipeline, in data-flow order, in one place.

    bridge adapter ─AudioChunk→ [per speaker: bounded queue → VAD → ASR (shared scheduler)]
        ─Transcript→ analysis_chain: normalise + jieba → call-start findings → archive + publish the segment
        → rules → classifier → omissions → archive + publish findings → policy ─Decided→ act on the call

``Services`` holds what all calls share (one ASR model, rules, archive, bus). ``CallSession`` is one
call: a task per speaker for audio and one for analysis, all cancelled together. ``monitor.Monitor``
owns the live calls; a call that fails is logged and ended without touching the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from compliance_monitor.analysis.call_start import CallStartStage
from compliance_monitor.analysis.chain import Chain
from compliance_monitor.analysis.frames import Decided, Frame
from compliance_monitor.analysis.model import ModelStage
from compliance_monitor.analysis.normalise import NormaliseStage
from compliance_monitor.analysis.omissions import OmissionStage
from compliance_monitor.analysis.policy import PolicyStage
from compliance_monitor.analysis.raising import RaiseStage
from compliance_monitor.analysis.rules import RuleStage
from compliance_monitor.analysis.segments import SegmentStage
from compliance_monitor.archive.sqlite import Archive
from compliance_monitor.asr.scheduler import AsrScheduler
from compliance_monitor.asr.stream import SpeakerTranscriber
from compliance_monitor.bus.memory import InMemoryBus
from compliance_monitor.bus.redis_bus import RedisBus
from compliance_monitor.config import Settings
from compliance_monitor.detect.calls import OmissionTracker, check_call_start, debtor_info, local_midnight
from compliance_monitor.detect.engine import RuleSet
from compliance_monitor.detect.model import ModelDetector
from compliance_monitor.ingest.base import ProtocolError
from compliance_monitor.messages import (
    Action,
    ActionEvent,
    ActionKind,
    ActionOutcomeEvent,
    AudioChunk,
    CallStarted,
    ControlResult,
    Event,
    Finding,
    MonitoringLostEvent,
    Outcome,
    Severity,
    Speaker,
    Transcript,
)
from compliance_monitor.policy.engine import PolicyEngine
from compliance_monitor.privacy.mask import mask_event
from compliance_monitor.text.tokenise import Tokenizer

log = logging.getLogger(__name__)

MAX_BATCH_CHUNKS = 50  # chunks per VAD hop: one speaker's backlog must not hold the shared VAD thread for long


class CallControl(Protocol):
    """The bridge side of a call: what the monitor can do to the phone call. Every bridge implements it.

    The far end hanging up reaches the pipeline as the parser's ``CallEnded`` (Twilio/PCM ``stop``, AudioSocket
    ``0x00``) or as the transport going away; the methods here go the other way.
    """

    async def hangup(self, reason: str) -> ControlResult:
        """End the phone call itself (not only the media stream). DONE only once the PBX/carrier accepted it."""
        ...

    async def warn_agent(self, prompt: str) -> ControlResult:
        """A short tone or prompt only the collector hears; NOT_SUPPORTED where the bridge cannot reach them alone."""
        ...

    async def lost(self, reason: str) -> None:
        """The monitor stopped listening to this call: tell the peer (error frame, close code) and close."""
        ...


@dataclass
class Services:
    settings: Settings
    asr: AsrScheduler
    tokenizer: Tokenizer
    rules: RuleSet
    policy: PolicyEngine
    archive: Archive
    bus: InMemoryBus | RedisBus
    model: ModelDetector | None = None


def analysis_chain(session: CallSession, services: Services) -> Chain:
    """After ASR, the stages one call's transcripts go through, in data-flow order (see ``analysis``)."""
    s, engine = services.settings, services.rules.engine
    started, call_id, agent_id = session.started, session.call_id, session.agent_id
    floor = s.policy.check_partials_from
    window = max(1, engine.max_context - 1, services.model.context if services.model else 0)
    return Chain(
        [
            NormaliseStage(services.tokenizer),
            CallStartStage(),
            SegmentStage(call_id, agent_id, started.speakers, window, services.archive, session.publish),
            RuleStage(services.rules, services.policy, None if floor == "never" else Severity(floor).rank),
            ModelStage(services.model, services.policy, s.classifier.context_gap_s),
            OmissionStage(call_id, agent_id, OmissionTracker(call_id, engine.omission_rules), session.publish),
            RaiseStage(call_id, agent_id, services.rules, services.archive, session.publish),
            PolicyStage(services.policy),
        ],
        sink=session.carry_out,
    )


class CallSession:
    def __init__(self, started: CallStarted, services: Services, control: CallControl) -> None:
        self.started = started
        self.call_id = started.call_id
        self.agent_id = started.agent_id
        self.services = services
        self.control = control
        self.halting = False  # a hangup is under way or done: a second halt is not sent
        self.lost_reason: str | None = None  # set once the call is no longer monitored (see ``lose``)
        self._control_tasks: set[asyncio.Task[None]] = set()  # hangups and prompts, off the analysis path
        self.attached = True  # a bridge connection carries this call now (see Monitor.live_call)
        self.chunks_dropped = 0
        self.audio_s = 0.0  # audio the bridge delivered: a call with none is archived as 'no_audio'
        s = services.settings
        self._audio: dict[Speaker, asyncio.Queue[AudioChunk | None]] = {
            sp: asyncio.Queue(s.ingest.chunk_queue_size) for sp in started.speakers
        }
        # The queue is bounded in audio too, not only in chunks: 250 one-second frames would be 16 MB a speaker.
        self._max_queued_s = s.ingest.chunk_queue_size * 0.02
        self._queued_s = dict.fromkeys(started.speakers, 0.0)
        self._room = {sp: asyncio.Event() for sp in started.speakers}
        self._transcripts: asyncio.Queue[Transcript | None] = asyncio.Queue(256)
        self._transcribers = {
            sp: SpeakerTranscriber(self.call_id, sp, services.asr, s.vad, s.asr, self._transcripts)
            for sp in started.speakers
        }
        self._chain = analysis_chain(self, services)
        self._segments = self._chain.stage(SegmentStage)
        self._call_start = self._chain.stage(CallStartStage)
        self._ended = asyncio.Event()
        self.end_reason = "unknown"
        self.task: asyncio.Task[None] | None = None
        self.bridge_call_id = started.call_id  # the id the bridge sent; call_id may be a new archive key (~2)

    # ------------------------------------------------------------------ input side

    async def push(self, chunk: AudioChunk) -> None:
        """Backpressure: waits while this speaker's queue is full (the bridge reads slower)."""
        queue = self._audio.get(chunk.speaker)
        if queue is None:
            raise ProtocolError("unknown_speaker", f"no stream for speaker {chunk.speaker}")
        room = self._room[chunk.speaker]
        while self._queued_s[chunk.speaker] >= self._max_queued_s and not self._ended.is_set():
            room.clear()
            if not await self._room_within(room):
                stall = self.services.settings.ingest.stall_timeout_s
                await self.lose("pipeline_stalled", f"{chunk.speaker} audio queue full for {stall:g} s")
        if self._ended.is_set():
            self.chunks_dropped += 1  # after hang-up or a pipeline failure: nothing reads it
            return
        self.audio_s += chunk.duration
        self._queued_s[chunk.speaker] += chunk.duration
        await queue.put(chunk)

    async def _room_within(self, room: asyncio.Event) -> bool:
        try:
            async with asyncio.timeout(self.services.settings.ingest.stall_timeout_s):
                await room.wait()
            return True
        except TimeoutError:
            return False

    def _taken(self, chunk: AudioChunk) -> AudioChunk:
        self._queued_s[chunk.speaker] -= chunk.duration
        self._room[chunk.speaker].set()
        return chunk

    @property
    def input_ended(self) -> bool:
        return self._ended.is_set()

    @property
    def content(self) -> str:
        """What the call held, for the archive: 'speech', 'no_speech' or 'no_audio'."""
        return "speech" if self.spoke else "no_speech" if self.audio_s > 0 else "no_audio"

    def end_input(self, reason: str) -> None:
        if self._ended.is_set():
            return
        self.end_reason = reason
        self._ended.set()
        for room in self._room.values():
            room.set()
        for queue in self._audio.values():
            # A full queue needs no sentinel: the speaker loop checks _ended once it has drained it.
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    # ------------------------------------------------------------------ the stages

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                speakers = [tg.create_task(self._speaker_loop(sp), name=f"{self.call_id}-{sp}") for sp in self._audio]
                tg.create_task(self._analysis_loop(), name=f"{self.call_id}-analysis")
                await asyncio.gather(*speakers)
                await self._transcripts.put(None)
        finally:
            for tr in self._transcribers.values():
                await tr.aclose()

    async def _speaker_loop(self, speaker: Speaker) -> None:
        queue, transcriber = self._audio[speaker], self._transcribers[speaker]
        while not (self._ended.is_set() and queue.empty()):
            chunk = await queue.get()
            if chunk is None:
                break
            batch = [self._taken(chunk)]
            # Whatever else is already queued goes through VAD in the same executor hop, up to a bound.
            while not queue.empty() and len(batch) < MAX_BATCH_CHUNKS:
                nxt = queue.get_nowait()
                if nxt is None:
                    await transcriber.push(batch)
                    await transcriber.finish()
                    return
                batch.append(self._taken(nxt))
            await transcriber.push(batch)
        await transcriber.finish()

    async def _analysis_loop(self) -> None:
        while (transcript := await self._transcripts.get()) is not None:
            await self.analyse(transcript)
        await self._chain.end_input()

    async def analyse(self, transcript: Transcript) -> None:
        """One transcript, partial or final, through the analysis chain (``analysis_chain``)."""
        await self._chain.push(transcript)

    @property
    def spoke(self) -> bool:
        """A final transcript said something: until then nothing accuses the collector."""
        return self._segments.spoke

    async def check_call_start(self) -> None:
        """Calling hours and frequency, in the debtor's local time, checked at the start of the call.

        The findings are held until someone speaks (``CallStartStage``).
        """
        svc = self.services
        rules = svc.rules.engine.call_start_rules
        if not rules:
            return
        debtor_id, tz = debtor_info(self.started, svc.settings.rules.default_timezone)
        calls_today = None
        if debtor_id is not None:
            since = local_midnight(self.started.wall_time, tz)
            calls_today = await svc.archive.count_calls(debtor_id, since)
        self._call_start.hold(check_call_start(rules, self.started, tz, calls_today))

    async def carry_out(self, frame: Frame) -> None:
        """The end of the analysis chain: the policy's decisions act on the call."""
        if isinstance(frame, Decided):
            await self._act(frame.action, frame.finding_id)

    async def _act(self, action: Action, finding_id: int) -> None:
        policy = self.services.settings.policy
        outcome: Outcome | None = None
        if action.kind is ActionKind.HALT_CALL:
            # Without auto_halt the policy only recommends: the console shows it awaiting a supervisor.
            outcome = Outcome.PENDING if policy.auto_halt and not self.halting else Outcome.RECOMMENDED
        elif action.kind is ActionKind.WARN_COLLECTOR and policy.audio_warnings:
            outcome = Outcome.PENDING
        if outcome is Outcome.PENDING and action.kind is ActionKind.HALT_CALL:
            self.halting = True  # before any await: a supervisor's halt now is 'already halting'
        action_id = await self.services.archive.add_action(action, finding_id, outcome=outcome)
        await self._publish_action(action_id, action.kind, action.reason, outcome, action.finding, finding_id)
        if outcome is not Outcome.PENDING:
            return
        # The bridge may take seconds (a REST call to the carrier, a paced prompt): analysis does not wait for it.
        if action.kind is ActionKind.HALT_CALL:
            self._spawn(self._auto_hangup(action_id, action, finding_id))
        else:
            prompt = action.finding.collector_explanation or action.reason
            self._spawn(self._warn(action_id, prompt))

    async def halt(self, reason: str, actor: str, finding_id: int | None = None) -> Outcome | None:
        """A supervisor's halt: archived and published, then the bridge ends the phone call. ``finding_id``: the
        finding whose recommended halt this confirms (the action then belongs to that finding's alert).

        Returns the bridge's outcome, or None when a hangup is already under way. When the bridge cannot end
        the call (failed, not supported) the call is still live and still monitored, and may be halted again.
        """
        if self.halting:
            return None
        self.halting = True  # before the first await: two clicks send one hangup
        action_id = await self.services.archive.add_manual_action(
            self.call_id, ActionKind.HALT_CALL.value, reason, finding_id, actor, Outcome.PENDING
        )
        await self._publish_action(
            action_id, ActionKind.HALT_CALL, f"{actor}: {reason}", Outcome.PENDING, finding_id=finding_id
        )
        return await self._hangup(action_id, reason)

    async def _hangup(self, action_id: int, reason: str) -> Outcome:
        self.halting = True
        result = await self._ask(self.control.hangup, reason)
        if result.outcome is Outcome.DONE:
            self.end_input("halted")
        else:
            self.halting = False  # the call goes on: it stays monitored, and a supervisor may try again
        await self._record_outcome(action_id, ActionKind.HALT_CALL, result)
        return result.outcome

    async def _auto_hangup(self, action_id: int, action: Action, finding_id: int) -> None:
        """The policy's own halt: a failed hangup is retried with backoff (``policy.halt_attempts``); if every
        try failed the supervisor is alerted that the call goes on unhalted. Not retried: a bridge that cannot
        halt at all (not_supported), a call already ended, or one a supervisor is halting meanwhile."""
        policy = self.services.settings.policy
        outcome = await self._hangup(action_id, action.reason)
        tries = 1
        while outcome is Outcome.FAILED and tries < policy.halt_attempts and not self.input_ended:
            await asyncio.sleep(policy.halt_retry_backoff_s * 2 ** (tries - 1))
            if self.halting or self.input_ended:
                return
            self.halting = True
            tries += 1
            log.warning("call %s: automatic halt failed, try %d of %d", self.call_id, tries, policy.halt_attempts)
            outcome = await self._hangup(action_id, f"{action.reason} (try {tries})")
        if outcome is Outcome.DONE or self.input_ended:
            return
        reason = f"automatic halt failed after {tries} tries: the call continues unhalted; 自动挂断失败，通话仍在进行"
        alert_id = await self.services.archive.add_manual_action(
            self.call_id, ActionKind.ALERT_SUPERVISOR.value, reason, finding_id, "policy"
        )
        await self._publish_action(alert_id, ActionKind.ALERT_SUPERVISOR, reason, outcome, action.finding, finding_id)

    async def _publish_action(
        self,
        action_id: int,
        kind: ActionKind,
        reason: str,
        outcome: Outcome | None,
        finding: Finding | None = None,
        finding_id: int | None = None,
    ) -> None:
        await self.publish(
            ActionEvent(
                call_id=self.call_id,
                agent_id=self.agent_id,
                action_id=action_id,
                action=kind,
                finding_id=finding_id,
                category=finding.category if finding else None,
                severity=finding.severity if finding else None,
                reason=reason,
                outcome=outcome,
            )
        )

    async def _warn(self, action_id: int, prompt: str) -> None:
        result = await self._ask(self.control.warn_agent, prompt)
        await self._record_outcome(action_id, ActionKind.WARN_COLLECTOR, result)

    async def _ask(self, request: Callable[[str], Awaitable[ControlResult]], arg: str) -> ControlResult:
        """One request to the bridge, bounded in time; whatever it raises is a failed outcome, not a dead call."""
        timeout = self.services.settings.policy.control_timeout_s
        try:
            async with asyncio.timeout(timeout):
                return await request(arg)
        except TimeoutError:
            return ControlResult(Outcome.FAILED, f"the bridge did not answer within {timeout:g} s")
        except Exception as exc:
            log.exception("call %s: bridge control failed", self.call_id)
            return ControlResult(Outcome.FAILED, f"{type(exc).__name__}: {exc}"[:300])

    async def _record_outcome(self, action_id: int, kind: ActionKind, result: ControlResult) -> None:
        await self.services.archive.set_action_outcome(self.call_id, action_id, result.outcome.value, result.detail)
        await self.publish(
            ActionOutcomeEvent(
                call_id=self.call_id,
                agent_id=self.agent_id,
                action_id=action_id,
                action=kind,
                outcome=result.outcome,
                detail=result.detail,
            )
        )

    def _spawn(self, work: Awaitable[object]) -> None:
        task = asyncio.ensure_future(self._logged(work))
        self._control_tasks.add(task)
        task.add_done_callback(self._control_tasks.discard)

    async def _logged(self, work: Awaitable[object]) -> None:
        try:
            await work
        except Exception:  # the outcome could not be archived or published; the call itself goes on
            log.exception("call %s: recording a bridge action failed", self.call_id)

    async def settle_controls(self) -> None:
        """Wait for hangups and prompts in flight, so their outcomes are archived before the call's end."""
        if self._control_tasks:
            policy = self.services.settings.policy
            retries = policy.halt_retry_backoff_s * (2 ** (policy.halt_attempts - 1) - 1)
            timeout = policy.control_timeout_s * policy.halt_attempts + retries + 5
            await asyncio.wait(set(self._control_tasks), timeout=timeout)

    async def lose(self, end_reason: str, why: str) -> None:
        """The monitor can no longer listen to this call, which may go on: never in silence.

        The supervisor gets a ``monitoring_lost`` event, the archive marks the call, and the bridge is told
        (error frame / close code). Each step on its own: the failure that brought us here may be the bus or
        the archive itself.
        """
        if self.lost_reason is not None:
            return
        self.lost_reason = why
        self.end_input(end_reason)
        log.error("call %s is no longer monitored: %s", self.call_id, why)
        message = f"call {self.call_id} is no longer monitored ({why}); 本通话已不在监控中"
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            (
                "alert",
                lambda: self.publish(
                    MonitoringLostEvent(
                        call_id=self.call_id, agent_id=self.agent_id, reason=end_reason, message=message
                    )
                ),
            ),
            ("archive", lambda: self.services.archive.mark_unmonitored(self.call_id, why)),
            ("bridge", lambda: self.control.lost(why)),
        ]
        for name, step in steps:
            try:
                async with asyncio.timeout(self.services.settings.policy.control_timeout_s):
                    await step()
            except Exception:
                log.exception("call %s: monitoring lost, and the %s could not be told", self.call_id, name)

    def leg_lost(self, speaker: Speaker | None, why: str) -> None:
        """One party's connection failed while the other's goes on: half the call is no longer heard. Say so."""
        self._spawn(self._tell_leg_lost(speaker.value if speaker else "call", why))

    async def _tell_leg_lost(self, party: str, why: str) -> None:
        message = f"the {party} leg of call {self.call_id} is no longer monitored ({why}); 该通话一方已不在监控中"
        log.error("call %s: %s", self.call_id, message)
        action_id = await self.services.archive.add_manual_action(
            self.call_id, ActionKind.ALERT_SUPERVISOR.value, message, None, "monitor"
        )
        await self._publish_action(action_id, ActionKind.ALERT_SUPERVISOR, message, None)
        lost = MonitoringLostEvent(
            call_id=self.call_id, agent_id=self.agent_id, reason=f"leg_lost:{party}", message=message
        )
        await self.publish(lost)

    async def aclose(self) -> None:
        """Stop the transcribers' tasks of a session that never ran (its start failed)."""
        for tr in self._transcribers.values():
            await tr.aclose()

    async def publish(self, event: Event) -> None:
        # What leaves the detect stage carries masked personal numbers; the archive keeps the raw evidence.
        await self.services.bus.publish(mask_event(event))
