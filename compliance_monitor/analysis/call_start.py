"""Stage: findings made when the call started (calling hours, contact frequency), held until someone speaks.

A call that never carries speech is not a call to the debtor, and must not credit a calling-hours finding to
whatever agent id the bridge sent; so they are raised just before the first final that said something.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from compliance_monitor.analysis.chain import Stage
from compliance_monitor.analysis.frames import Candidate, Frame, Heard
from compliance_monitor.messages import Finding


class CallStartStage(Stage):
    def __init__(self) -> None:
        self._held: list[Finding] = []
        self._released = False

    def hold(self, findings: Iterable[Finding]) -> None:
        self._held.extend(findings)

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        if isinstance(frame, Heard) and frame.transcript.final and frame.text.text and not self._released:
            self._released = True
            held, self._held = self._held, []
            for finding in held:
                yield Candidate(finding, None)
        yield frame
