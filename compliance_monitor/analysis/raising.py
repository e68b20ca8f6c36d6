"""Stage: a finding is archived first, then published; a partial's finding is later confirmed or withdrawn."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from compliance_monitor.analysis.chain import Stage
from compliance_monitor.analysis.frames import Candidate, Confirmed, FindingKey, Frame, Raised, Withdrawn, finding_key
from compliance_monitor.archive.sqlite import Archive
from compliance_monitor.detect.engine import RuleSet
from compliance_monitor.messages import Event, Finding, FindingConfirmedEvent, FindingEvent, FindingWithdrawnEvent

WITHDRAWN = "最终转写未出现该内容（部分转写听错或已修正）"  # why a finding raised on a partial is withdrawn

Publish = Callable[[Event], Awaitable[None]]


class RaiseStage(Stage):
    def __init__(self, call_id: str, agent_id: str, rules: RuleSet, archive: Archive, publish: Publish) -> None:
        self._call_id, self._agent_id = call_id, agent_id
        self._rules = rules
        self._archive, self._publish = archive, publish
        self._provisional_ids: dict[FindingKey, int] = {}  # a partial's finding → its archive id

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        if isinstance(frame, Candidate):
            finding_id = await self._raise(frame.finding, frame.segment_id)
            if frame.provisional:
                self._provisional_ids[finding_key(frame.finding)] = finding_id
            yield Raised(finding_id, frame.finding)
        elif isinstance(frame, Confirmed):
            finding_id = self._provisional_ids.pop(finding_key(frame.finding))
            # The finding now quotes the final's words, which the archived transcript holds.
            await self._archive.link_finding(finding_id, frame.segment_id, frame.finding)
            await self._publish(self._confirmed_event(frame.finding, finding_id, frame.segment_id))
        elif isinstance(frame, Withdrawn):
            await self._withdraw(frame.finding)
            yield frame  # the policy ends the cool-downs it started
        else:
            yield frame

    async def _raise(self, finding: Finding, segment_id: int | None) -> int:
        finding_id = await self._archive.add_finding(finding, segment_id)
        await self._publish(
            FindingEvent(
                call_id=self._call_id,
                agent_id=self._agent_id,
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
                suggestion=self._suggestion(finding),
            )
        )
        return finding_id

    def _confirmed_event(self, final: Finding, finding_id: int, segment_id: int | None) -> FindingConfirmedEvent:
        return FindingConfirmedEvent(
            call_id=self._call_id,
            agent_id=self._agent_id,
            finding_id=finding_id,
            speaker=final.speaker,
            segment_no=final.segment_no,
            segment_id=segment_id,
            matched_text=final.matched_text,
            span=final.span,
            t0=final.t0,
            t1=final.t1,
        )

    def _suggestion(self, finding: Finding) -> str:
        """The rule's compliant alternative; a model finding borrows the first one its category's rules give."""
        rules = self._rules.engine.rules
        rule = rules.get(finding.rule_id)
        if rule is not None:
            return rule.suggestion
        same = (r.suggestion for r in rules.values() if r.category == finding.category and r.suggestion)
        return next(same, "")

    async def _withdraw(self, finding: Finding) -> None:
        """It stays in the archive, marked withdrawn, and the console and the collector's screen are told."""
        finding_id = self._provisional_ids.pop(finding_key(finding))
        await self._archive.withdraw_finding(self._call_id, finding_id, WITHDRAWN)
        await self._publish(
            FindingWithdrawnEvent(
                call_id=self._call_id,
                agent_id=self._agent_id,
                finding_id=finding_id,
                speaker=finding.speaker,
                segment_no=finding.segment_no,
                reason=WITHDRAWN,
            )
        )
