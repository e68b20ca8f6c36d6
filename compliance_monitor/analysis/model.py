"""Stage: the classifier reads each final for what the rule packs cannot name, adding only other categories."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from compliance_monitor.analysis.chain import Stage
from compliance_monitor.analysis.frames import Candidate, Frame, RulesChecked, Said
from compliance_monitor.detect.model import ModelDetector
from compliance_monitor.messages import NormalisedText
from compliance_monitor.policy.engine import PolicyEngine


def same_breath(said: Sequence[Said], t0: float, max_gap_s: float) -> tuple[NormalisedText, ...]:
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


class ModelStage(Stage):
    """Passes each checked final on as its ``Segment``; without a model it only does that."""

    def __init__(self, model: ModelDetector | None, policy: PolicyEngine, context_gap_s: float) -> None:
        self._model, self._policy, self._gap = model, policy, context_gap_s

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        if not isinstance(frame, RulesChecked):
            yield frame
            return
        segment = frame.segment
        if self._model is not None:
            tr = segment.transcript
            recent = same_breath(segment.earlier, tr.t0, self._gap)
            for finding in await self._model.detect(tr, segment.text, recent):
                if finding.category not in frame.named and self._policy.is_new(finding):
                    yield Candidate(finding, segment.segment_id)
        yield segment
