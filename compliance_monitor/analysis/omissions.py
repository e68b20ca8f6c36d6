"""Stage: what must be said and was not (mandatory disclosures), due by a deadline or at the end of the call.

Each item said is published as it is said (the collector's checklist ticks it off). The last reader of
``Segment``: it consumes them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from compliance_monitor.analysis.chain import Stage
from compliance_monitor.analysis.frames import Candidate, Frame, Segment
from compliance_monitor.detect.calls import OmissionTracker
from compliance_monitor.messages import DisclosureEvent, Event

Publish = Callable[[Event], Awaitable[None]]


class OmissionStage(Stage):
    def __init__(self, call_id: str, agent_id: str, tracker: OmissionTracker, publish: Publish) -> None:
        self._call_id, self._agent_id = call_id, agent_id
        self._tracker, self._publish = tracker, publish
        self._last_t = 0.0
        self._spoke = False

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        if not isinstance(frame, Segment):
            yield frame
            return
        tr = frame.transcript
        self._last_t = max(self._last_t, tr.t1)
        if tr.final:
            self._spoke = True
            for rule, item in self._tracker.observe(tr.speaker, tr.t0, frame.text):
                await self._publish(
                    DisclosureEvent(
                        call_id=self._call_id,
                        agent_id=self._agent_id,
                        rule_id=rule.id,
                        item=item.name,
                        speaker=tr.speaker,
                        t0=tr.t0,
                    )
                )
        for finding in self._tracker.due(self._last_t):
            yield Candidate(finding, None)

    async def flush(self) -> AsyncIterator[Frame]:
        if not self._spoke:
            return  # no audio or nothing said: an aborted or junk call accuses no collector of an omission
        for finding in self._tracker.due(self._last_t, call_over=True):
            yield Candidate(finding, None)
