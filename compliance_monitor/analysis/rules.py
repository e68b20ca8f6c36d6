"""Stage: the rule packs read each segment (with the speaker's recent finals as context).

Finals raise what is new; serious findings are raised on partials already (``policy.check_partials_from``),
and the final then confirms or withdraws them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from compliance_monitor.analysis.chain import Stage
from compliance_monitor.analysis.frames import (
    Candidate,
    Confirmed,
    FindingKey,
    Frame,
    RulesChecked,
    Segment,
    Unsaid,
    Withdrawn,
    finding_key,
)
from compliance_monitor.detect.engine import RuleSet
from compliance_monitor.messages import Finding, Transcript
from compliance_monitor.policy.engine import PolicyEngine


class RuleStage(Stage):
    def __init__(self, rules: RuleSet, policy: PolicyEngine, partial_floor: int | None) -> None:
        self._rules, self._policy = rules, policy
        self._partial_floor = partial_floor  # severity rank checked on partials; None: finals only
        self._provisional: dict[FindingKey, Finding] = {}  # raised on partials, until the final says

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        if isinstance(frame, Segment):
            findings = await self._detect(frame)
            if frame.transcript.final:
                for out in self._on_final(frame, findings):
                    yield out
                yield RulesChecked(frame, frozenset(f.category for f in findings))
                return
            for finding in self._serious_and_new(findings):
                self._provisional[finding_key(finding)] = finding
                yield Candidate(finding, None, provisional=True)
            yield frame
        elif isinstance(frame, Unsaid):
            for out in self._unconfirmed(frame.transcript):
                yield out
        else:
            yield frame

    async def _detect(self, segment: Segment) -> list[Finding]:
        if not segment.transcript.final and self._partial_floor is None:
            return []
        context = tuple(earlier.text for earlier in segment.earlier)
        return await asyncio.to_thread(self._rules.detect, segment.transcript, segment.text, context)

    def _on_final(self, segment: Segment, findings: list[Finding]) -> list[Frame]:
        out: list[Frame] = []
        for finding in findings:
            if self._provisional.pop(finding_key(finding), None) is not None:
                out.append(Confirmed(finding, segment.segment_id))
            elif self._policy.is_new(finding):
                out.append(Candidate(finding, segment.segment_id))
        out.extend(self._unconfirmed(segment.transcript))
        return out

    def _serious_and_new(self, findings: list[Finding]) -> list[Finding]:
        floor = self._partial_floor
        assert floor is not None
        return [f for f in findings if f.severity.rank >= floor and self._policy.is_new(f)]

    def _unconfirmed(self, final: Transcript) -> list[Frame]:
        """Findings this segment's partials raised that its final does not: the ASR revised what it heard."""
        said = (final.speaker.value, final.segment_no)
        return [Withdrawn(self._provisional.pop(k)) for k in [k for k in self._provisional if k[1:] == said]]
