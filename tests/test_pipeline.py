"""The analysis side of a call session, driven with transcripts: what partial findings become at the final."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from compliance_monitor.archive.sqlite import Archive
from compliance_monitor.asr.scheduler import AsrScheduler
from compliance_monitor.bus.memory import InMemoryBus, Subscription
from compliance_monitor.detect.engine import RuleSet
from compliance_monitor.messages import (
    ActionEvent,
    CallStarted,
    ControlResult,
    Event,
    FindingConfirmedEvent,
    FindingEvent,
    FindingWithdrawnEvent,
    Outcome,
    Speaker,
    Transcript,
    TranscriptEvent,
)
from compliance_monitor.pipeline import CallSession, Services
from compliance_monitor.policy.engine import PolicyEngine
from compliance_monitor.text.tokenise import Tokenizer
from tests.conftest import make_settings

pytestmark = pytest.mark.unit

THREAT = "你再不还我们就派人去你家"  # threat.visit_home_or_work, high: checked on partials


class NoBridge:
    async def hangup(self, reason: str) -> ControlResult:
        return ControlResult(Outcome.DONE)

    async def warn_agent(self, prompt: str) -> ControlResult:
        return ControlResult(Outcome.NOT_SUPPORTED)

    async def lost(self, reason: str) -> None:
        pass


@pytest.fixture
async def session(tmp_path: Path, tokenizer: Tokenizer) -> AsyncIterator[CallSession]:
    settings = make_settings(tmp_path, rules={"packs": ["cn_collection"]})
    archive = Archive(settings.archive.path, tokenizer.cut_for_search)
    await archive.open()
    services = Services(
        settings=settings,
        asr=cast(AsrScheduler, None),  # transcripts are handed in; no audio is decoded
        tokenizer=tokenizer,
        rules=RuleSet(settings.rules),
        policy=PolicyEngine(settings.policy),
        archive=archive,
        bus=InMemoryBus(),
    )
    started = CallStarted("c1", "a7", "pcm", (Speaker.AGENT, Speaker.CUSTOMER), {}, time.time())
    await archive.start_call(started)
    yield CallSession(started, services, NoBridge())
    await archive.aclose()


def said(segment_no: int, text: str, final: bool) -> Transcript:
    return Transcript("c1", Speaker.AGENT, segment_no, text, 2.0 * segment_no, 2.0 * segment_no + 1.5, final)


def drain(sub: Subscription) -> list[Event]:
    events = []
    while not sub.queue.empty():
        events.append(sub.queue.get_nowait())
    return events


async def test_a_partial_finding_the_final_does_not_bear_out_is_withdrawn(session: CallSession) -> None:
    feed = cast(InMemoryBus, session.services.bus).subscribe(lambda _event: True, replay_live=False)
    await session.analyse(said(3, THREAT, final=False))  # misheard, then revised
    await session.analyse(said(3, "您再不还我们就安排同事给您回电", final=True))
    await session.analyse(said(4, THREAT, final=False))  # heard right: the final confirms it
    await session.analyse(said(4, THREAT, final=True))
    await session.analyse(said(5, THREAT, final=False))  # the final heard nothing after all
    await session.analyse(said(5, "", final=True))

    events = drain(feed)
    raised = {e.segment_no: e.finding_id for e in events if isinstance(e, FindingEvent)}
    withdrawn = [e for e in events if isinstance(e, FindingWithdrawnEvent)]
    assert sorted(raised) == [3, 4, 5]  # each raised once, on its partial
    assert [(e.segment_no, e.finding_id) for e in withdrawn] == [(3, raised[3]), (5, raised[5])]
    assert all(e.reason and e.agent_id == "a7" for e in withdrawn)
    # segment 3's withdrawal ended the cool-down it started: segment 4, said 2 s later, warns again
    acted_on = {e.finding_id for e in events if isinstance(e, ActionEvent)}
    assert {raised[3], raised[4]} <= acted_on

    call = await session.services.archive.get_call("c1")
    assert call is not None
    rows = {f["finding_id"]: f for f in call["findings"]}
    assert rows[raised[4]]["withdrawn_at"] is None and rows[raised[4]]["segment_id"] is not None
    assert rows[raised[3]]["withdrawn_at"] is not None and rows[raised[5]]["withdrawn_at"] is not None
    (listed,) = await session.services.archive.list_calls()
    assert listed["n_findings"] == 1
    # the feeds that showed segment 5's partial are told it ended with nothing said
    (ended_empty,) = [e for e in events if isinstance(e, TranscriptEvent) and e.final and e.segment_no == 5]
    assert ended_empty.text == "" and ended_empty.segment_id is None


async def test_a_confirmed_finding_quotes_the_final_words_in_its_event_and_the_archive(session: CallSession) -> None:
    feed = cast(InMemoryBus, session.services.bus).subscribe(lambda _event: True, replay_live=False)
    await session.analyse(said(2, "你再不还我们就派人上门", final=False))  # the partial: 派人上门
    await session.analyse(said(2, "你再不还我们就派人去你家", final=True))  # the final, same rule: 去你家

    events = drain(feed)
    (raised,) = [e for e in events if isinstance(e, FindingEvent)]  # one finding, not a second one at the final
    (confirmed,) = [e for e in events if isinstance(e, FindingConfirmedEvent)]
    assert (raised.matched_text, confirmed.matched_text) == ("派人上门", "去你家")
    assert confirmed.finding_id == raised.finding_id and confirmed.segment_id is not None
    call = await session.services.archive.get_call("c1")
    assert call is not None
    (row,) = call["findings"]
    (segment,) = call["segments"]
    assert row["matched_text"] == "去你家" and row["matched_text"] in segment["text"]
    assert (row["span_start"], row["span_end"]) == confirmed.span
    # the row no longer says what its 'finding' entry says; the 'finding_confirmed' entry records the change
    report = await session.services.archive.verify_report()
    assert report["ok"], report


async def test_an_empty_final_of_a_segment_nobody_saw_publishes_nothing(session: CallSession) -> None:
    feed = cast(InMemoryBus, session.services.bus).subscribe(lambda _event: True, replay_live=False)
    await session.analyse(said(1, "", final=True))  # noise: no partial was shown either
    assert drain(feed) == []
