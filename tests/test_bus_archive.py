"""Unit tests for the in-memory event bus (compliance_monitor.bus.memory) and the SQLite archive
(compliance_monitor.archive.sqlite)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from compliance_monitor.archive.sqlite import SCHEMA, Archive, highlight
from compliance_monitor.bus.memory import InMemoryBus
from compliance_monitor.messages import (
    Action,
    ActionKind,
    CallEndedEvent,
    CallStarted,
    CallStartedEvent,
    Event,
    Finding,
    Severity,
    Speaker,
    Transcript,
    TranscriptEvent,
)
from compliance_monitor.text.normalise import normalise
from compliance_monitor.text.tokenise import Tokenizer

pytestmark = pytest.mark.unit

USER_DICT = Path(__file__).parents[1] / "rules" / "user_dict.txt"


# --------------------------------------------------------------------------- bus


def started(call_id: str) -> CallStartedEvent:
    return CallStartedEvent(call_id=call_id, agent_id="a1", bridge="pcm", speakers=[Speaker.AGENT, Speaker.CUSTOMER])


def line(call_id: str, n: int, speaker: Speaker = Speaker.AGENT) -> TranscriptEvent:
    return TranscriptEvent(
        call_id=call_id, speaker=speaker, segment_no=n, text=f"第{n}句", t0=n, t1=n + 1.0, final=True
    )


def drain(queue: asyncio.Queue[Event]) -> list[Event]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def describe(events: list[Event]) -> list[tuple[str, str, int | None]]:
    return [(e.type, e.call_id, getattr(e, "segment_no", None)) for e in events]


async def test_late_subscriber_gets_live_calls_replayed() -> None:
    bus = InMemoryBus()
    await bus.publish(started("live"))
    await bus.publish(line("live", 0))
    await bus.publish(started("over"))
    await bus.publish(line("over", 0))
    await bus.publish(line("live", 1))
    await bus.publish(CallEndedEvent(call_id="over", reason="hangup"))

    sub = bus.subscribe(lambda e: True)
    assert describe(drain(sub.queue)) == [
        ("call_started", "live", None),
        ("transcript", "live", 0),
        ("transcript", "live", 1),
    ]
    await bus.publish(line("live", 2))
    assert describe(drain(sub.queue)) == [("transcript", "live", 2)]
    assert bus.published == 7


async def test_replay_keeps_the_start_of_a_long_call() -> None:
    bus = InMemoryBus(replay_events_per_call=3)
    await bus.publish(started("c"))
    for n in range(10):
        await bus.publish(line("c", n))
    events = drain(bus.subscribe(lambda e: True).queue)
    assert describe(events) == [("call_started", "c", None)] + [("transcript", "c", n) for n in (7, 8, 9)]


async def test_subscribe_without_replay() -> None:
    bus = InMemoryBus()
    await bus.publish(started("c"))
    sub = bus.subscribe(lambda e: True, replay_live=False)
    assert sub.queue.empty()


async def test_filter_applies_to_replay_and_live_events() -> None:
    bus = InMemoryBus()
    await bus.publish(started("mine"))
    await bus.publish(started("theirs"))
    await bus.publish(line("mine", 0))
    await bus.publish(line("theirs", 0))
    sub = bus.subscribe(lambda e: e.call_id == "mine")
    await bus.publish(line("theirs", 1))
    await bus.publish(line("mine", 1, Speaker.CUSTOMER))
    assert describe(drain(sub.queue)) == [
        ("call_started", "mine", None),
        ("transcript", "mine", 0),
        ("transcript", "mine", 1),
    ]


async def test_full_queue_drops_oldest_and_counts() -> None:
    bus = InMemoryBus(subscriber_queue_size=3)
    sub = bus.subscribe(lambda e: True)
    await bus.publish(started("c"))
    for n in range(5):
        await bus.publish(line("c", n))
    assert sub.dropped == 3
    assert describe(drain(sub.queue)) == [("transcript", "c", n) for n in (2, 3, 4)]


async def test_unsubscribe_and_async_iteration() -> None:
    bus = InMemoryBus()
    sub = bus.subscribe(lambda e: True)
    await bus.publish(started("c"))
    iterator = sub.__aiter__()
    first = await asyncio.wait_for(iterator.__anext__(), 1)
    assert first.type == "call_started"
    sub.close()
    await bus.publish(line("c", 0))
    assert sub.queue.empty()
    await iterator.aclose()
    await bus.aclose()


# --------------------------------------------------------------------------- archive


@pytest.fixture
async def archive(tmp_path: Path, tokenizer: Tokenizer) -> AsyncIterator[Archive]:
    arc = Archive(tmp_path / "archive.sqlite3", tokenizer.cut_for_search)
    await arc.open()
    yield arc
    await arc.aclose()


def call(call_id: str, agent_id: str = "a7", wall_time: float = 1000.0) -> CallStarted:
    return CallStarted(call_id, agent_id, "twilio", (Speaker.CUSTOMER, Speaker.AGENT), {"queue": "M1"}, wall_time)


def transcript(call_id: str, text: str, n: int, speaker: Speaker = Speaker.AGENT, t0: float = 0.0) -> Transcript:
    return Transcript(call_id, speaker, n, text, t0, t0 + 2.0, True, avg_logprob=-0.2)


def make_finding(call_id: str, n: int, text: str, category: str = "threat", severity: Severity = Severity.HIGH):
    return Finding(
        call_id=call_id,
        speaker=Speaker.AGENT,
        segment_no=n,
        rule_id=f"{category}.x",
        category=category,
        severity=severity,
        matched_text=text,
        span=(0, len(text)),
        t0=0.0,
        t1=2.0 + n,
        explanation="supervisor",
        collector_explanation="collector",
    )


async def add(archive: Archive, tokenizer: Tokenizer, call_id: str, text: str, n: int, **kw: object) -> int:
    return await archive.add_segment(transcript(call_id, text, n, **kw), normalise(text, tokenizer))  # type: ignore[arg-type]


async def test_write_and_read_back_a_call(archive: Archive, tokenizer: Tokenizer) -> None:
    await archive.start_call(call("c1"))
    s0 = await add(archive, tokenizer, "c1", "你好，我是某某银行的", 0, t0=0.0)
    s1 = await add(archive, tokenizer, "c1", "你不还钱后果自負", 1, t0=3.0)
    f = make_finding("c1", 1, "后果自负")
    fid = await archive.add_finding(f, s1)
    aid = await archive.add_action(Action("c1", ActionKind.WARN_COLLECTOR, f, "collector warned"), fid)
    await archive.end_call("c1", "hangup", 2000.0)

    got = await archive.get_call("c1")
    assert got is not None
    assert got["call"]["call_id"] == "c1"
    assert got["call"]["agent_id"] == "a7"
    assert got["call"]["metadata"] == {"queue": "M1"}
    assert (got["call"]["started_at"], got["call"]["ended_at"], got["call"]["end_reason"]) == (1000.0, 2000.0, "hangup")
    assert got["call"]["status"] == "ended"
    assert [s["segment_id"] for s in got["segments"]] == [s0, s1]
    assert got["segments"][1]["text"] == "你不还钱后果自负"  # normalised
    assert got["segments"][1]["raw_text"] == "你不还钱后果自負"
    (finding,) = got["findings"]
    assert finding["finding_id"] == fid
    assert finding["segment_id"] == s1
    assert (finding["rule_id"], finding["category"], finding["severity"]) == ("threat.x", "threat", "high")
    assert (finding["span_start"], finding["span_end"]) == (0, 4)
    (action,) = got["actions"]
    assert (action["action_id"], action["action"], action["finding_id"]) == (aid, "warn_collector", fid)
    assert action["actor"] == "policy"
    assert await archive.get_call("nope") is None


async def test_list_calls_by_status(archive: Archive) -> None:
    await archive.start_call(call("old", wall_time=100.0))
    await archive.start_call(call("live", wall_time=200.0))
    await archive.end_call("old", "hangup", 150.0)
    for f in (
        make_finding("old", 0, "x", severity=Severity.WARN),
        make_finding("old", 1, "y", severity=Severity.CRITICAL),
    ):
        await archive.add_finding(f, None)

    everything = await archive.list_calls()
    assert [c["call_id"] for c in everything] == ["live", "old"]  # newest first
    assert [c["call_id"] for c in await archive.list_calls("live")] == ["live"]
    (old,) = await archive.list_calls("ended")
    assert old["call_id"] == "old"
    assert old["status"] == "ended"
    assert old["n_findings"] == 2
    assert old["max_severity"] == "critical"
    assert everything[0]["status"] == "live"
    assert everything[0]["max_severity"] is None
    assert len(await archive.list_calls(limit=1)) == 1


async def test_withdrawn_finding_is_kept_but_no_longer_counts(archive: Archive) -> None:
    await archive.start_call(call("c1"))
    kept = await archive.add_finding(make_finding("c1", 0, "x", severity=Severity.WARN), None)
    heard_wrong = await archive.add_finding(make_finding("c1", 1, "y", severity=Severity.CRITICAL), None)
    await archive.withdraw_finding("c1", heard_wrong, "final transcript does not say it")

    (listed,) = await archive.list_calls()
    assert (listed["n_findings"], listed["max_severity"]) == (1, "warn")
    got = await archive.get_call("c1")
    assert got is not None
    by_id = {f["finding_id"]: f for f in got["findings"]}
    assert by_id[kept]["withdrawn_at"] is None
    assert by_id[heard_wrong]["withdrawn_at"] is not None
    assert by_id[heard_wrong]["withdrawn_reason"] == "final transcript does not say it"
    assert [e["kind"] for e in await archive.audit_entries("c1")][-1] == "finding_withdrawn"
    assert await archive.verify_chain() == (True, len(await archive.audit_entries("c1")))


async def test_an_archive_from_before_withdrawal_gets_the_columns(tmp_path: Path, tokenizer: Tokenizer) -> None:
    path = tmp_path / "old.sqlite3"
    old_schema = SCHEMA.replace(",\n    withdrawn_at REAL, withdrawn_reason TEXT", "")
    assert "withdrawn_at" not in old_schema
    with sqlite3.connect(path) as db:
        db.executescript(old_schema)
        db.execute("INSERT INTO calls VALUES ('c0', 'a1', 'pcm', '{}', 1.0, NULL, NULL)")
        db.execute(
            "INSERT INTO findings(call_id, speaker, segment_no, rule_id, category, severity, matched_text, "
            "span_start, span_end, t0, t1, explanation, source, score, created_at) "
            "VALUES ('c0', 'agent', 0, 'r', 'threat', 'high', 'x', 0, 1, 0, 1, 'e', 'rule', 1.0, 1.0)"
        )
    arc = Archive(path, tokenizer.cut_for_search)
    await arc.open()
    try:
        got = await arc.get_call("c0")
        assert got is not None and got["findings"][0]["withdrawn_at"] is None
        assert (await arc.list_calls())[0]["n_findings"] == 1
    finally:
        await arc.aclose()


async def test_search_by_jieba_word(archive: Archive, tokenizer: Tokenizer) -> None:
    await archive.start_call(call("c1"))
    sid = await add(archive, tokenizer, "c1", "请您尽快还款", 0)
    await add(archive, tokenizer, "c1", "我们下周再联系", 1)
    (hit,) = await archive.search("还款")
    assert hit["segment_id"] == sid
    assert hit["call_id"] == "c1"
    assert hit["agent_id"] == "a7"
    assert hit["snippet"] == "请您尽快<mark>还款</mark>"
    assert hit["text"] == "请您尽快还款"
    assert await archive.search("违约金") == []
    assert await archive.search("，。 ") == []  # punctuation only: no terms


async def test_search_sub_word_of_a_compound(archive: Archive, tokenizer: Tokenizer) -> None:
    await archive.start_call(call("c1"))
    sid = await add(archive, tokenizer, "c1", "再不还就司法拘留", 0)
    assert [h["segment_id"] for h in await archive.search("拘留")] == [sid]
    assert [h["segment_id"] for h in await archive.search("司法拘留")] == [sid]


async def test_search_escapes_html(archive: Archive, tokenizer: Tokenizer) -> None:
    await archive.start_call(call("c1"))
    await add(archive, tokenizer, "c1", "<script>alert(1)</script>请您尽快还款", 0)
    for query in ("还款", "<script>", "script"):
        (hit,) = await archive.search(query)
        assert "<script>" not in hit["snippet"], query
        assert "&lt;script&gt;" in hit["snippet"] or "&lt;<mark>script</mark>&gt;" in hit["snippet"], query
        assert "<mark>" in hit["snippet"]
    assert highlight("a<b & c", ["b"]) == "a&lt;<mark>b</mark> &amp; c"
    assert highlight("<i>", []) == "&lt;i&gt;"


async def test_search_filters_by_speaker_and_category(archive: Archive, tokenizer: Tokenizer) -> None:
    await archive.start_call(call("c1"))
    agent = await add(archive, tokenizer, "c1", "请您尽快还款，不然后果自负", 0)
    customer = await add(archive, tokenizer, "c1", "我下个月还款", 1, speaker=Speaker.CUSTOMER)
    plain = await add(archive, tokenizer, "c1", "还款可以分期", 2)
    await archive.add_finding(make_finding("c1", 0, "后果自负"), agent)

    assert {h["segment_id"] for h in await archive.search("还款")} == {agent, customer, plain}
    assert [h["segment_id"] for h in await archive.search("还款", speaker="customer")] == [customer]
    assert {h["segment_id"] for h in await archive.search("还款", speaker="agent")} == {agent, plain}
    (hit,) = await archive.search("还款", category="threat")
    assert hit["segment_id"] == agent
    assert hit["categories"] == ["threat"]
    assert await archive.search("还款", category="abuse") == []


async def test_search_single_character_falls_back_to_substring(archive: Archive, tokenizer: Tokenizer) -> None:
    await archive.start_call(call("c1"))
    sid = await add(archive, tokenizer, "c1", "请您尽快还款", 0)
    (hit,) = await archive.search("还")  # not a token of its own: 还款 is one word
    assert hit["segment_id"] == sid
    assert hit["snippet"] == "请您尽快<mark>还</mark>款"
    assert await archive.search("还", speaker="customer") == []


async def test_audit_chain_intact_then_tampered(archive: Archive, tokenizer: Tokenizer) -> None:
    await archive.start_call(call("c1"))
    sid = await add(archive, tokenizer, "c1", "请您尽快还款", 0)
    f = make_finding("c1", 0, "还款")
    fid = await archive.add_finding(f, sid)
    await archive.add_action(Action("c1", ActionKind.ALERT_SUPERVISOR, f, "alert"), fid)
    await archive.end_call("c1", "hangup", 2000.0)

    assert await archive.verify_chain() == (True, 5)
    entries = await archive.audit_entries("c1")
    assert [e["kind"] for e in entries] == ["call_started", "segment", "finding", "action", "call_ended"]
    assert all(e["prev_hash"] == p["hash"] for p, e in zip(entries, entries[1:], strict=False))

    # Rewrite what the transcript said, behind the archive's back. The compact chain keeps no second
    # copy of the text: a segment entry's body is its row, so editing the row breaks the chain.
    with sqlite3.connect(archive.path) as db:
        db.execute("UPDATE segments SET text = replace(text, '还款', '还钱')")
    intact, checked = await archive.verify_chain()
    assert not intact
    assert checked == 1  # the call_started entry before it still verifies


async def test_audit_chain_detects_rewritten_payload(archive: Archive, tokenizer: Tokenizer) -> None:
    await archive.start_call(call("c1"))
    sid = await add(archive, tokenizer, "c1", "请您尽快还款", 0)
    await archive.add_finding(make_finding("c1", 0, "还款"), sid)
    with sqlite3.connect(archive.path) as db:
        payload = db.execute("SELECT payload FROM audit WHERE kind='finding'").fetchone()[0]
        db.execute("UPDATE audit SET payload=? WHERE kind='finding'", (payload.replace("还款", "还钱"),))
    assert await archive.verify_chain() == (False, 2)


async def test_audit_chain_detects_deleted_segment_row(archive: Archive, tokenizer: Tokenizer) -> None:
    await archive.start_call(call("c1"))
    sid = await add(archive, tokenizer, "c1", "请您尽快还款", 0)
    with sqlite3.connect(archive.path) as db:
        db.execute("DELETE FROM segments WHERE segment_id = ?", (sid,))
    assert await archive.verify_chain() == (False, 1)


async def test_audit_chain_detects_deleted_entry(archive: Archive, tokenizer: Tokenizer) -> None:
    await archive.start_call(call("c1"))
    await add(archive, tokenizer, "c1", "第一句", 0)
    await add(archive, tokenizer, "c1", "第二句", 1)
    with sqlite3.connect(archive.path) as db:
        db.execute("DELETE FROM audit WHERE audit_id = 2")
    assert await archive.verify_chain() == (False, 1)


async def test_audit_chain_continues_after_reopen(tmp_path: Path, tokenizer: Tokenizer) -> None:
    path = tmp_path / "a.sqlite3"
    first = Archive(path, tokenizer.cut_for_search)
    await first.open()
    await first.start_call(call("c1"))
    await first.aclose()
    second = Archive(path, tokenizer.cut_for_search)
    await second.open()
    await second.end_call("c1", "hangup", 2000.0)
    assert await second.verify_chain() == (True, 2)
    (c,) = await second.list_calls("ended")
    assert c["call_id"] == "c1"
    await second.aclose()
