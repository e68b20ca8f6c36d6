"""The live pipeline, in data-flow order, in one place.

    bridge adapter ─AudioChunk→ [per speaker: bounded queue → VAD → ASR (shared scheduler)]
        ─Transcript→ normalise + jieba → rules → policy → archive (first) → bus (then)

``Services`` holds what all calls share (one ASR model, rules, archive, bus). ``CallSession`` is one
call: a task per speaker for audio and one for analysis, all cancelled together. ``monitor.Monitor``
owns the live calls; a call that fails is logged and ended without touching the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

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
    FindingConfirmedEvent,
    FindingEvent,
    FindingWithdrawnEvent,
    MonitoringLostEvent,
    NormalisedText,
    Outcome,
    Severity,
    Speaker,
    Transcript,
    TranscriptEvent,
)
from compliance_monitor.policy.engine import PolicyEngine
from compliance_monitor.privacy.mask import mask_event
from compliance_monitor.text.normalise import normalise
from compliance_monitor.text.tokenise import Tokenizer

log = logging.getLogger(__name__)

WITHDRAWN = "最终转写未出现该内容（部分转写听错或已修正）"  # why a finding raised on a partial is withdrawn
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


@dataclass(frozen=True, slots=True)
class _Said:
    """A final of one speaker, kept as context for the next ones."""

    t0: float
    t1: float
    text: NormalisedText


def _same_breath(said: Sequence[_Said], t0: float, max_gap_s: float) -> tuple[NormalisedText, ...]:
    """The speaker's last finals that run up to ``t0`` with no pause longer than ``max_gap_s``, oldest first.

    The classifier joins them to the new final: a pause cut one sentence into several finals. After a longer
    silence (the other party spoke) the earlier talk is another sentence, and joining it only adds false alarms.
    """
    recent: list[NormalisedText] = []
    start = t0
    for earlier in reversed(said):
        if start - earlier.t1 > max_gap_s:
            break
        recent.append(earlier.text)
        start = earlier.t0
    return tuple(reversed(recent))


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
        self.spoke = False  # a final transcript said something: until then nothing accuses the collector
        self._deferred: list[Finding] = []  # call-start findings (calling hours, frequency), held until speech
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
        engine = services.rules.engine
        self._omissions = OmissionTracker(self.call_id, engine.omission_rules)
        # Recent finals per speaker, for rules and the classifier that read across consecutive segments.
        window = max(1, engine.max_context - 1, services.model.context if services.model else 0)
        self._context: dict[Speaker, deque[_Said]] = {sp: deque(maxlen=window) for sp in started.speakers}
        self._last_t = 0.0
        floor = s.policy.check_partials_from
        self._partial_floor = None if floor == "never" else Severity(floor).rank
        # Findings raised on partials, by (rule, speaker, segment): their archive ids, until the final says.
        self._from_partials: dict[tuple[str, str, int], tuple[int, Finding]] = {}
        self._partials_shown: set[tuple[Speaker, int]] = set()  # segments whose partials the feeds have seen
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
        if not self.spoke:
            return  # no audio or nothing said: an aborted or junk call accuses no collector of an omission
        for finding in self._omissions.due(self._last_t, call_over=True):
            await self._raise(finding, None)

    async def check_call_start(self) -> None:
        """Calling hours and frequency, in the debtor's local time, checked at the start of the call.

        The findings are held until someone speaks (``analyse``): a call that never carries speech is not
        a call to the debtor, and must not credit a calling-hours finding to whatever agent id the bridge sent.
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
        self._deferred = check_call_start(rules, self.started, tz, calls_today)

    async def analyse(self, tr: Transcript) -> None:
        svc = self.services
        text = normalise(tr.text, svc.tokenizer)
        if not text.text:
            if tr.final:  # the final heard nothing after all
                await self._end_unsaid(tr)
            return
        if tr.final and not self.spoke:
            self.spoke = True
            for finding in self._deferred:
                await self._raise(finding, None)
            self._deferred = []
        segment_id = await svc.archive.add_segment(tr, text) if tr.final else None
        await self._publish_transcript(tr, text.text, segment_id)
        self._last_t = max(self._last_t, tr.t1)
        said = self._context[tr.speaker]
        context = tuple(earlier.text for earlier in said)
        if tr.final:
            rule_findings = svc.rules.detect(tr, text, context)
            for finding in rule_findings:
                key = (finding.rule_id, finding.speaker.value, finding.segment_no)
                if (partial := self._from_partials.pop(key, None)) is not None:
                    # The final confirms it: the finding now quotes the final's words, which the archive holds.
                    await svc.archive.link_finding(partial[0], segment_id, finding)
                    await self._publish(self._confirmed_event(finding, partial[0], segment_id))
                elif svc.policy.is_new(finding):
                    await self._raise(finding, segment_id)
            await self._withdraw_unconfirmed(tr)
            if svc.model is not None:
                named = {f.category for f in rule_findings}
                recent = _same_breath(said, tr.t0, svc.settings.classifier.context_gap_s)
                for finding in await svc.model.detect(tr, text, recent):
                    if finding.category not in named and svc.policy.is_new(finding):
                        await self._raise(finding, segment_id)
            said.append(_Said(tr.t0, tr.t1, text))
            self._omissions.observe(tr.speaker, tr.t0, text)
        elif self._partial_floor is not None:
            # Serious findings need not wait for the end of a long turn: check the partial hypothesis.
            for finding in svc.rules.detect(tr, text, context):
                if finding.severity.rank >= self._partial_floor and svc.policy.is_new(finding):
                    key = (finding.rule_id, finding.speaker.value, finding.segment_no)
                    self._from_partials[key] = (await self._raise(finding, None), finding)
        for finding in self._omissions.due(self._last_t):
            await self._raise(finding, None)

    async def _end_unsaid(self, final: Transcript) -> None:
        """A segment whose final transcript is empty: its partials' findings are withdrawn, and feeds that
        showed its partials are told it ended with nothing said."""
        await self._withdraw_unconfirmed(final)
        if (final.speaker, final.segment_no) in self._partials_shown:
            await self._publish_transcript(final, "", None)

    async def _publish_transcript(self, tr: Transcript, text: str, segment_id: int | None) -> None:
        await self._publish(
            TranscriptEvent(
                call_id=self.call_id,
                agent_id=self.agent_id,
                speaker=tr.speaker,
                segment_no=tr.segment_no,
                text=text,
                t0=tr.t0,
                t1=tr.t1,
                final=tr.final,
                segment_id=segment_id,
                asr_s=round(tr.asr_latency_s, 3) if tr.final else None,
            )
        )
        if tr.final:
            self._partials_shown.discard((tr.speaker, tr.segment_no))
        else:
            self._partials_shown.add((tr.speaker, tr.segment_no))

    async def _withdraw_unconfirmed(self, final: Transcript) -> None:
        """Findings this segment's partials raised that its final does not: the ASR revised what it heard.

        They stay in the archive, marked withdrawn, and the console and the collector's screen are told.
        """
        said = (final.speaker.value, final.segment_no)
        for key in [k for k in self._from_partials if k[1:] == said]:
            finding_id, finding = self._from_partials.pop(key)
            self.services.policy.withdraw(finding)
            await self.services.archive.withdraw_finding(self.call_id, finding_id, WITHDRAWN)
            await self._publish(
                FindingWithdrawnEvent(
                    call_id=self.call_id,
                    agent_id=self.agent_id,
                    finding_id=finding_id,
                    speaker=final.speaker,
                    segment_no=final.segment_no,
                    reason=WITHDRAWN,
                )
            )

    async def _raise(self, finding: Finding, segment_id: int | None) -> int:
        svc = self.services
        finding_id = await svc.archive.add_finding(finding, segment_id)
        await self._publish(self._finding_event(finding, finding_id))
        for action in svc.policy.decide(finding):
            await self._act(action, finding_id)
        return finding_id

    def _confirmed_event(self, final: Finding, finding_id: int, segment_id: int | None) -> FindingConfirmedEvent:
        return FindingConfirmedEvent(
            call_id=self.call_id,
            agent_id=self.agent_id,
            finding_id=finding_id,
            speaker=final.speaker,
            segment_no=final.segment_no,
            segment_id=segment_id,
            matched_text=final.matched_text,
            span=final.span,
            t0=final.t0,
            t1=final.t1,
        )

    def _finding_event(self, finding: Finding, finding_id: int) -> FindingEvent:
        return FindingEvent(
            call_id=self.call_id,
            agent_id=self.agent_id,
            finding_id=finding_id,
            speaker=finding.speaker,
            segment_no=finding.segment_no,
            rule_id=finding.rule_id,
            category=finding.category,
            severity=finding.severity,
            matched_text=finding.matched_text,
            span=finding.span,
            t0=finding.t0,
            t1=finding.t1,
            explanation=finding.explanation,
            collector_explanation=finding.collector_explanation,
            source=finding.source,
            score=finding.score,
            rule_source=finding.rule_source,
        )

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
        await self._publish(
            ActionEvent(
                call_id=self.call_id,
                agent_id=self.agent_id,
                action_id=action_id,
                action=action.kind,
                finding_id=finding_id,
                category=action.finding.category,
                severity=action.finding.severity,
                reason=action.reason,
                outcome=outcome,
            )
        )
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
        await self._publish(
            ActionEvent(
                call_id=self.call_id,
                agent_id=self.agent_id,
                action_id=action_id,
                action=ActionKind.HALT_CALL,
                finding_id=finding_id,
                category=None,
                severity=None,
                reason=f"{actor}: {reason}",
                outcome=Outcome.PENDING,
            )
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
        await self._publish(
            ActionEvent(
                call_id=self.call_id,
                agent_id=self.agent_id,
                action_id=alert_id,
                action=ActionKind.ALERT_SUPERVISOR,
                finding_id=finding_id,
                category=action.finding.category,
                severity=action.finding.severity,
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
        await self._publish(
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
                lambda: self._publish(
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

    async def aclose(self) -> None:
        """Stop the transcribers' tasks of a session that never ran (its start failed)."""
        for tr in self._transcribers.values():
            await tr.aclose()

    async def _publish(self, event: Event) -> None:
        # What leaves the detect stage carries masked personal numbers; the archive keeps the raw evidence.
        await self.services.bus.publish(mask_event(event))
