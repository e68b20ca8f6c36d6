"""Stage: what was heard is archived (finals) and published to the live feeds, with the speaker's context."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

from compliance_monitor.analysis.chain import Stage
from compliance_monitor.analysis.frames import Frame, Heard, Said, Segment, Unsaid
from compliance_monitor.archive.sqlite import Archive
from compliance_monitor.messages import Event, Speaker, Transcript, TranscriptEvent

Publish = Callable[[Event], Awaitable[None]]


class SegmentStage(Stage):
    def __init__(
        self,
        call_id: str,
        agent_id: str,
        speakers: tuple[Speaker, ...],
        window: int,
        archive: Archive,
        publish: Publish,
    ) -> None:
        self._call_id, self._agent_id = call_id, agent_id
        self._archive, self._publish = archive, publish
        # Recent finals per speaker, for rules and the classifier that read across consecutive segments.
        self._said: dict[Speaker, deque[Said]] = {sp: deque(maxlen=window) for sp in speakers}
        self._partials_shown: set[tuple[Speaker, int]] = set()  # segments whose partials the feeds have seen
        self.spoke = False  # a final said something: until then nothing accuses the collector

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        if not isinstance(frame, Heard):
            yield frame
            return
        tr, text = frame.transcript, frame.text
        if not text.text:
            if tr.final:  # the final heard nothing after all: feeds that showed its partials are told
                if (tr.speaker, tr.segment_no) in self._partials_shown:
                    await self._publish_transcript(tr, "", None)
                yield Unsaid(tr)
            return
        segment_id = await self._archive.add_segment(tr, text) if tr.final else None
        await self._publish_transcript(tr, text.text, segment_id)
        said = self._said[tr.speaker]
        earlier = tuple(said)
        first = tr.final and not self.spoke
        if tr.final:
            said.append(Said(tr.t0, tr.t1, text))
            self.spoke = True
        yield Segment(tr, text, segment_id, earlier, first_speech=first)

    async def _publish_transcript(self, tr: Transcript, text: str, segment_id: int | None) -> None:
        await self._publish(
            TranscriptEvent(
                call_id=self._call_id,
                agent_id=self._agent_id,
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
