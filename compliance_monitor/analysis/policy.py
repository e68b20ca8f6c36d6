"""Stage: the policy decides what each raised finding calls for (warn, alert, halt), with its cool-downs."""

from __future__ import annotations

from collections.abc import AsyncIterator

from compliance_monitor.analysis.chain import Stage
from compliance_monitor.analysis.frames import Decided, Frame, Raised, Withdrawn
from compliance_monitor.policy.engine import PolicyEngine


class PolicyStage(Stage):
    def __init__(self, policy: PolicyEngine) -> None:
        self._policy = policy

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        if isinstance(frame, Raised):
            for action in self._policy.decide(frame.finding):
                yield Decided(action, frame.finding_id)
        elif isinstance(frame, Withdrawn):
            self._policy.withdraw(frame.finding)  # the rule acts again when it is really said
        else:
            yield frame
