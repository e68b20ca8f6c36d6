"""Archive at scale (issue 21): substring and phrase search, filters, cursor pages, query plans, migration of
an older archive, and reads that never hold back a write."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from compliance_monitor.api import rest
from compliance_monitor.archive import archive_from_url, audit
from compliance_monitor.archive.search import Cursor, Filters, Tier, choose_drive, page_sql
from compliance_monitor.archive.sqlite import Archive
from compliance_monitor.archive.textindex import grams, match_expr, normalise_query
from compliance_monitor.messages import Action, ActionKind, CallStarted, Finding, Severity, Speaker, Transcript
from compliance_monitor.text.normalise import normalise
from compliance_monitor.text.tokenise import Tokenizer
from tests.conftest import make_settings

pytestmark = pytest.mark.unit

TEXTS = [
    "我们已经向法院提交了起诉书",  # 起诉 inside 起诉书: jieba keeps 起诉书 whole
    "再不还钱就起诉你",
    "不起诉也可以，先还一部分",
    "我们会联系你的家人",
    "你的家人我们会去联系",  # the words, not the phrase
    "联系家人之前再给你一次机会",
    "ETC 账户 12345，请核对",
    "還款日是下週一",  # traditional: normalised to 还款日是下周一
    "好的，谢谢。",
    "法院传票明天送到你单位",
]


class Clock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def archive(tmp_path: Path, tokenizer: Tokenizer, clock: Clock) -> AsyncIterator[Archive]:
    arc = Archive(tmp_path / "archive.sqlite3", tokenizer.cut_for_search, clock=clock)
    await arc.open()
    yield arc
    await arc.aclose()


def started(call_id: str, agent: str = "a1") -> CallStarted:
    return CallStarted(call_id, agent, "pcm", (Speaker.AGENT, Speaker.CUSTOMER), {}, 1000.0)


async def say(arc: Archive, tok: Tokenizer, call_id: str, text: str, n: int, speaker: Speaker = Speaker.AGENT) -> int:
    tr = Transcript(call_id, speaker, n, text, float(n), n + 1.0, True)
    return await arc.add_segment(tr, normalise(text, tok))


def finding(call_id: str, n: int, category: str, severity: Severity = Severity.HIGH) -> Finding:
    return Finding(call_id, Speaker.AGENT, n, f"{category}.r", category, severity, "x", (0, 1), 0.0, 1.0, "e")


async def like_ids(arc: Archive, query: str) -> set[int]:
    q = normalise_query(query)  # as the text was: ，→ , and traditional → simplified
    return await arc._read(
        lambda db: {r[0] for r in db.execute("SELECT segment_id FROM segments WHERE text LIKE ?", (f"%{q}%",))}
    )


async def phrase_ids(arc: Archive, q: str) -> set[int]:
    page = await arc.search_page(q, limit=10_000)
    return {r["segment_id"] for r in page.results if r["match"] == "phrase"}


# --------------------------------------------------------------------------- text matching


def test_grams_follow_the_fts5_token_characters() -> None:
    assert grams("还钱，ok") == ("还 钱 o k", "还钱 ok")
    assert match_expr(["起诉"]) == 'bi : "起诉"'
    assert match_expr(["还"]) == 'uni : "还"'
    assert match_expr(["你好，我"]) == 'bi : "你好" AND uni : "我"'
    assert match_expr(["，。"]) is None


async def test_substring_recall_matches_a_like_scan(archive: Archive, tokenizer: Tokenizer) -> None:
    await archive.start_call(started("c1"))
    for n, text in enumerate(TEXTS):
        await say(archive, tokenizer, "c1", text, n)
    queries = [
        "起诉",
        "诉",
        "起诉书",
        "家人",
        "联系",
        "还款",
        "下周一",
        "ETC",
        "12345",
        "345，请",
        "法院传票",
        "你的家",
    ]
    for q in queries:
        expected = await like_ids(archive, q)
        assert expected, q
        assert await phrase_ids(archive, q) == expected, q
    assert len(await phrase_ids(archive, "起诉")) == 3  # 起诉书, 起诉你, 不起诉


async def test_query_is_normalised_like_the_text(archive: Archive, tokenizer: Tokenizer) -> None:
    await archive.start_call(started("c1"))
    sid = await say(archive, tokenizer, "c1", "還款日是下週一", 0)
    assert [h["segment_id"] for h in await archive.search("還款")] == [sid]  # traditional query, simplified text
    assert [h["segment_id"] for h in await archive.search("etc 账")] == []
    etc = await say(archive, tokenizer, "c1", "ETC 账户", 1)
    assert [h["segment_id"] for h in await archive.search("etc 账")] == [etc]  # ASCII case folded, as LIKE


async def test_phrase_matches_rank_before_scattered_words(archive: Archive, tokenizer: Tokenizer) -> None:
    await archive.start_call(started("c1"))
    ids = [await say(archive, tokenizer, "c1", text, n) for n, text in enumerate(TEXTS)]
    hits = await archive.search("我们会联系你的家人")
    assert [(h["segment_id"], h["match"]) for h in hits] == [(ids[3], "phrase"), (ids[4], "words")]
    assert hits[0]["snippet"] == "<mark>我们会联系你的家人</mark>"


# --------------------------------------------------------------------------- filters


async def seeded(archive: Archive, tokenizer: Tokenizer, clock: Clock) -> dict[str, int]:
    await archive.start_call(started("c1", "a1"))
    await archive.start_call(started("c2", "a2"))
    ids: dict[str, int] = {}
    clock.t = 1000.0
    ids["a1_agent"] = await say(archive, tokenizer, "c1", "请您尽快还款，不然后果自负", 0)
    clock.t = 2000.0
    ids["a1_customer"] = await say(archive, tokenizer, "c1", "我下个月还款", 1, Speaker.CUSTOMER)
    clock.t = 3000.0
    ids["a2_agent"] = await say(archive, tokenizer, "c2", "还款可以分期，我们联系你家人", 0)
    clock.t = 4000.0
    ids["a2_plain"] = await say(archive, tokenizer, "c2", "今天先还一部分", 1)
    threat = await archive.add_finding(finding("c1", 0, "threat", Severity.HIGH), ids["a1_agent"])
    await archive.add_action(Action("c1", ActionKind.HALT_CALL, finding("c1", 0, "threat"), "halt"), threat)
    await archive.add_finding(finding("c2", 0, "third_party_disclosure", Severity.CRITICAL), ids["a2_agent"])
    return ids


async def found(archive: Archive, query: str | None, **filters: Any) -> set[int]:
    return {h["segment_id"] for h in (await archive.search_page(query, **filters)).results}


async def test_every_filter(archive: Archive, tokenizer: Tokenizer, clock: Clock) -> None:
    ids = await seeded(archive, tokenizer, clock)
    assert await found(archive, "还款") == {ids["a1_agent"], ids["a1_customer"], ids["a2_agent"]}
    assert await found(archive, "还款", speaker="customer") == {ids["a1_customer"]}
    assert await found(archive, "还款", agent="a2") == {ids["a2_agent"]}
    assert await found(archive, None, agent="a2") == {ids["a2_agent"], ids["a2_plain"]}
    assert await found(archive, None, category="threat") == {ids["a1_agent"]}  # category only
    assert await found(archive, "还款", category="third_party_disclosure") == {ids["a2_agent"]}
    assert await found(archive, "分期", category="threat") == set()
    assert await found(archive, None, severity="critical") == {ids["a2_agent"]}
    assert await found(archive, None, action="halt_call") == {ids["a1_agent"]}
    assert await found(archive, "还款", action="warn_collector") == set()
    assert await found(archive, None, since=2000.0, until=3000.0) == {ids["a1_customer"], ids["a2_agent"]}
    assert await found(archive, "还", since=3500.0) == {ids["a2_plain"]}
    assert await found(archive, "还款", until=999.0) == set()
    assert await found(archive, "还款", agent="a1", speaker="agent", since=500.0, category="threat") == {
        ids["a1_agent"]
    }
    (hit,) = (await archive.search_page(None, category="threat")).results
    assert hit["categories"] == ["threat"]
    assert hit["agent_id"] == "a1"


async def test_an_action_on_a_partial_finding_follows_it_to_its_segment(archive: Archive, tokenizer: Tokenizer) -> None:
    await archive.start_call(started("c1"))
    raised = await archive.add_finding(finding("c1", 0, "threat"), None)  # raised on a partial transcript
    await archive.add_action(Action("c1", ActionKind.WARN_COLLECTOR, finding("c1", 0, "threat"), "w"), raised)
    sid = await say(archive, tokenizer, "c1", "不还钱后果自负", 0)
    await archive.link_finding(raised, sid)  # the final confirms it
    assert await found(archive, None, action="warn_collector") == {sid}
    assert await found(archive, "后果", action="warn_collector", category="threat") == {sid}


async def test_archive_times_never_go_back(archive: Archive, tokenizer: Tokenizer, clock: Clock) -> None:
    await archive.start_call(started("c1"))
    clock.t = 5000.0
    first = await say(archive, tokenizer, "c1", "第一句", 0)
    clock.t = 4000.0  # the wall clock stepped back
    second = await say(archive, tokenizer, "c1", "第二句", 1)
    got = await archive.get_call("c1")
    assert got is not None
    assert await found(archive, None, since=5000.0) == {first, second}


# --------------------------------------------------------------------------- cursor pages


async def test_cursor_pages_cover_every_match_once(archive: Archive, tokenizer: Tokenizer) -> None:
    await archive.start_call(started("c1"))
    items = [
        (Transcript("c1", Speaker.AGENT, n, text, n, n + 1, True), normalise(text, tokenizer))
        for n in range(120)
        for text in ["请尽快还款" if n % 3 else "还款的话我们会联系你"]
    ]
    ids = await archive.add_segments(items)
    seen: list[int] = []
    sizes = []
    cursor = None
    while True:
        page = await archive.search_page("还款", limit=50, cursor=cursor)
        sizes.append(len(page.results))
        seen += [h["segment_id"] for h in page.results]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sizes == [50, 50, 20]
    assert seen == sorted(ids, reverse=True)  # newest first, no repeats, none left out
    with pytest.raises(ValueError):
        await archive.search_page("还款", cursor="not-a-cursor")


async def test_cursor_crosses_from_phrase_to_word_matches(archive: Archive, tokenizer: Tokenizer) -> None:
    await archive.start_call(started("c1"))
    phrase = [await say(archive, tokenizer, "c1", "我们会联系你的家人", n) for n in range(3)]
    words = [await say(archive, tokenizer, "c1", "家人那边我们也会联系", n) for n in range(3, 6)]
    first = await archive.search_page("我们会联系你的家人", limit=3)
    assert [h["segment_id"] for h in first.results] == phrase[::-1]
    assert first.next_cursor is not None and Cursor.decode(first.next_cursor) == Cursor(0, phrase[0])
    second = await archive.search_page("我们会联系你的家人", limit=3, cursor=first.next_cursor)
    assert [(h["segment_id"], h["match"]) for h in second.results] == [(i, "words") for i in words[::-1]]
    assert second.next_cursor is None


# --------------------------------------------------------------------------- query plans


def plan(db: sqlite3.Connection, sql: str, args: list[Any]) -> str:
    return " | ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql, args))


PHRASE, ALL = Tier("phrase", ("还款",)), Tier("all", ())


@pytest.mark.parametrize(
    ("tier", "filters", "drive", "expect"),
    [
        (PHRASE, Filters(), "text", "SCAN g VIRTUAL TABLE INDEX"),
        (PHRASE, Filters(agent="a1", speaker="agent"), "text", "SCAN g VIRTUAL TABLE INDEX"),
        (PHRASE, Filters(category="threat"), "text", "INDEX findings_category (category=? AND segment_id=?)"),
        (PHRASE, Filters(action="halt_call"), "text", "INDEX actions_finding (finding_id=? AND action=?)"),
        (ALL, Filters(agent="a1"), "segments", "INDEX segments_agent (agent_id=? AND rowid>? AND rowid<?)"),
        (ALL, Filters(since=1.0, until=2.0), "segments", "INTEGER PRIMARY KEY (rowid>? AND rowid<?)"),
        (ALL, Filters(speaker="agent"), "segments", "INTEGER PRIMARY KEY (rowid>? AND rowid<?)"),
        (ALL, Filters(category="threat"), "findings", "COVERING INDEX findings_category (category=? AND segment_id>?"),
        (PHRASE, Filters(category="threat"), "findings", "COVERING INDEX findings_category (category=?"),
        (ALL, Filters(severity="high"), "findings", "COVERING INDEX findings_severity (severity=? AND segment_id>?"),
        (ALL, Filters(action="halt_call"), "actions", "INDEX actions_kind (action=? AND segment_id>?"),
        (PHRASE, Filters(action="halt_call", category="threat"), "actions", "INDEX actions_kind (action=?"),
        (ALL, Filters(action="halt_call", category="threat"), "findings", "INDEX actions_finding (finding_id=?"),
    ],
)
async def test_every_filter_has_an_index_and_no_sort(
    archive: Archive, tier: Tier, filters: Filters, drive: str, expect: str
) -> None:
    sql, args = page_sql(tier, filters, 0, 10**12, 51, drive)
    got = await archive._read(lambda db: plan(db, sql, args))
    assert expect in got, got
    assert "TEMP B-TREE" not in got, got  # pages come off the index in order: nothing is sorted
    assert "SCAN s" not in got and "SCAN f" not in got, got


async def test_the_plan_walks_the_fewer_rows(archive: Archive, tokenizer: Tokenizer) -> None:
    await archive.start_call(started("c1"))
    ids = await archive.add_segments(
        [
            (Transcript("c1", Speaker.AGENT, n, t, n, n + 1, True), normalise(t, tokenizer))
            for n, t in enumerate(["请尽快还款"] * 30 + ["法院传票明天送到"])
        ]
    )
    await archive.add_findings([(finding("c1", n, "threat"), sid) for n, sid in enumerate(ids[:20])])

    def drive(tier: Tier, f: Filters) -> Any:
        return archive._read(lambda db: choose_drive(db, tier, f, 0, 10**12))

    assert await drive(Tier("phrase", ("传票",)), Filters(category="threat")) == "text"  # 1 match < 20 findings
    assert await drive(Tier("phrase", ("还款",)), Filters(category="threat")) == "findings"  # 30 matches > 20
    assert await drive(ALL, Filters(category="threat")) == "findings"
    assert await drive(Tier("phrase", ("传票",)), Filters(agent="a1")) == "text"  # 1 match < 31 segments of a1
    await archive.start_call(started("c2", "a2"))
    other = await say(archive, tokenizer, "c2", "还款吗", 0)
    assert await drive(PHRASE, Filters(agent="a2")) == "segments"  # 1 segment of a2 < 31 matches
    assert await found(archive, "还款", agent="a2") == {other}
    assert await drive(ALL, Filters(agent="a1")) == "segments"
    assert await drive(ALL, Filters(action="halt_call")) == "actions"
    assert await drive(ALL, Filters(action="halt_call", category="threat")) == "actions"  # no actions: 0 < 20
    assert await found(archive, "传票", category="threat") == set()
    assert await found(archive, "还款", category="threat") == set(ids[:20])


async def test_page_lookups_use_indexes(archive: Archive) -> None:
    lookups = {
        "SELECT segment_id, category FROM findings WHERE segment_id IN (?,?)": "findings_segment",
        "SELECT hash FROM audit WHERE kind = 'segment' AND ref_id IN (?,?)": "audit_ref",
        "SELECT * FROM findings WHERE call_id = ?": "findings_call",
        "SELECT * FROM actions WHERE call_id = ?": "actions_call",
    }
    for sql, index in lookups.items():
        got = await archive._read(lambda db, sql=sql: plan(db, sql, [1] * sql.count("?")))
        assert index in got, (sql, got)


def test_a_segment_entry_body_is_rebuilt_exactly() -> None:
    for call_id, speaker, t0, t1, text in [
        ("c1", "agent", 0.0, 1.5, "请您尽快还款"),
        ('c"2\\', "customer", 1e-7, 12345.678901234567, '他说"好的"\n\t，<b>\u2028'),
    ]:
        row = {"payload": None, "s_call_id": call_id, "s_speaker": speaker, "s_t0": t0, "s_t1": t1, "s_text": text}
        assert audit.entry_body(row) == audit.body_json(audit.segment_payload(call_id, speaker, t0, t1, text))


# --------------------------------------------------------------------------- migration

LEGACY_SCHEMA = """
CREATE TABLE calls (call_id TEXT PRIMARY KEY, agent_id TEXT, bridge TEXT NOT NULL, metadata TEXT NOT NULL,
    started_at REAL NOT NULL, ended_at REAL, end_reason TEXT);
CREATE TABLE segments (segment_id INTEGER PRIMARY KEY, call_id TEXT NOT NULL REFERENCES calls(call_id),
    speaker TEXT NOT NULL, segment_no INTEGER NOT NULL, t0 REAL NOT NULL, t1 REAL NOT NULL,
    raw_text TEXT NOT NULL, text TEXT NOT NULL, tokens TEXT NOT NULL, avg_logprob REAL, created_at REAL NOT NULL);
CREATE INDEX segments_call ON segments(call_id, t0);
CREATE VIRTUAL TABLE segments_fts USING fts5(tokens, content='', tokenize='unicode61');
CREATE TABLE findings (finding_id INTEGER PRIMARY KEY, call_id TEXT NOT NULL REFERENCES calls(call_id),
    segment_id INTEGER REFERENCES segments(segment_id), speaker TEXT NOT NULL, segment_no INTEGER NOT NULL,
    rule_id TEXT NOT NULL, category TEXT NOT NULL, severity TEXT NOT NULL, matched_text TEXT NOT NULL,
    span_start INTEGER NOT NULL, span_end INTEGER NOT NULL, t0 REAL NOT NULL, t1 REAL NOT NULL,
    explanation TEXT NOT NULL, source TEXT NOT NULL, score REAL NOT NULL, created_at REAL NOT NULL);
CREATE INDEX findings_call ON findings(call_id);
CREATE TABLE actions (action_id INTEGER PRIMARY KEY, call_id TEXT NOT NULL REFERENCES calls(call_id),
    finding_id INTEGER REFERENCES findings(finding_id), action TEXT NOT NULL, reason TEXT NOT NULL,
    actor TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE audit (audit_id INTEGER PRIMARY KEY, kind TEXT NOT NULL, ref_id TEXT NOT NULL, payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL, created_at REAL NOT NULL);
"""


def legacy_archive(path: Path) -> None:
    """An archive as the previous version wrote it: jieba-token FTS, full audit payloads, hex hashes."""
    prev = "0" * 64

    def audit(db: sqlite3.Connection, kind: str, ref: str, payload: dict[str, Any]) -> None:
        nonlocal prev
        body = json.dumps(payload, ensure_ascii=False, sort_keys=True, default=str)
        digest = hashlib.sha256(f"{prev}|{kind}|{ref}|{body}".encode()).hexdigest()
        db.execute(
            "INSERT INTO audit(kind, ref_id, payload, prev_hash, hash, created_at) VALUES (?,?,?,?,?,?)",
            (kind, ref, body, prev, digest, 1.0),
        )
        prev = digest

    with sqlite3.connect(path) as db:
        db.executescript(LEGACY_SCHEMA)
        db.execute("INSERT INTO calls VALUES ('old', 'a9', 'pcm', '{}', 100.0, NULL, NULL)")
        audit(db, "call_started", "old", {"agent_id": "a9", "bridge": "pcm"})
        for n, text in enumerate(["我们已经向法院提交了起诉书", "请您尽快还款"]):
            db.execute(
                "INSERT INTO segments(call_id, speaker, segment_no, t0, t1, raw_text, text, tokens, avg_logprob, "
                "created_at) VALUES ('old', 'agent', ?, ?, ?, ?, ?, ?, -0.2, ?)",
                (n, n, n + 1.0, text, text, "起诉书 法院", 100.0 + n),
            )
            db.execute("INSERT INTO segments_fts(rowid, tokens) VALUES (?, '起诉书 法院')", (n + 1,))
            payload = {"call_id": "old", "speaker": "agent", "t0": float(n), "t1": n + 1.0, "text": text}
            audit(db, "segment", str(n + 1), payload)
        db.execute(
            "INSERT INTO findings(call_id, segment_id, speaker, segment_no, rule_id, category, severity, "
            "matched_text, span_start, span_end, t0, t1, explanation, source, score, created_at) "
            "VALUES ('old', 1, 'agent', 0, 'r', 'threat', 'high', '起诉', 0, 2, 0, 1, 'e', 'rule', 1.0, 101.0)"
        )
        audit(db, "finding", "1", {"call_id": "old", "rule_id": "r", "category": "threat", "matched_text": "起诉"})
        db.execute("INSERT INTO actions VALUES (1, 'old', 1, 'warn_collector', 'w', 'policy', 102.0)")
        audit(db, "action", "1", {"call_id": "old", "action": "warn_collector", "actor": "policy", "reason": "w"})


async def test_an_older_archive_migrates_on_open(tmp_path: Path, tokenizer: Tokenizer) -> None:
    path = tmp_path / "old.sqlite3"
    legacy_archive(path)
    arc = archive_from_url(f"sqlite:///{path}", tokenizer.cut_for_search)
    await arc.open()
    try:
        assert await arc.verify_chain() == (True, 5)
        assert [h["segment_id"] for h in await arc.search("起诉")] == [1]  # the old index kept 起诉书 whole
        assert await found(arc, None, agent="a9", category="threat") == {1}  # agent backfilled, finding indexed
        assert await found(arc, "起诉", action="warn_collector") == {1}  # the action's segment backfilled
        assert await found(arc, "起诉", category="threat") == {1}  # the finding's copy of the text backfilled
        new = await say(arc, tokenizer, "old", "还款日是下周一", 2)  # the old NOT NULL tokens column still exists
        await arc.end_call("old", "hangup", 200.0)
        assert await found(arc, "还款") == {2, new}
        assert await arc.verify_chain() == (True, 7)  # old entries and compact new ones, one chain
        entries = await arc.audit_entries("old")
        assert [e["kind"] for e in entries] == [
            "call_started",
            "segment",
            "segment",
            "finding",
            "action",
            "segment",
            "call_ended",
        ]
        assert all(e["prev_hash"] == p["hash"] for p, e in zip(entries, entries[1:], strict=False))
        assert json.loads(entries[5]["payload"])["text"] == "还款日是下周一"
    finally:
        await arc.aclose()
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "segments_fts" not in tables and "audit_legacy" not in tables
    again = Archive(path, tokenizer.cut_for_search)  # a second open finds nothing left to migrate
    await again.open()
    assert await again.verify_chain() == (True, 7)
    await again.aclose()


# --------------------------------------------------------------------------- reads and writes apart


async def test_a_long_read_does_not_hold_back_a_write(archive: Archive, tokenizer: Tokenizer) -> None:
    await archive.start_call(started("c1"))
    first = await say(archive, tokenizer, "c1", "第一句还款", 0)
    reading, release = threading.Event(), threading.Event()

    def long_read(db: sqlite3.Connection) -> int:
        n = int(db.execute("SELECT count(*) FROM segments").fetchone()[0])
        reading.set()
        release.wait(30)  # a slow search, holding its snapshot open
        return n + int(db.execute("SELECT count(*) FROM segments").fetchone()[0])

    held = asyncio.ensure_future(archive._read(long_read))
    assert await asyncio.to_thread(reading.wait, 30)
    # the write completes while the read is still running (the guard only stops a deadlock hanging the suite)
    second = await asyncio.wait_for(say(archive, tokenizer, "c1", "第二句还款", 1), 30)
    assert not held.done()
    assert await found(archive, "还款") == {first, second}  # another reader sees the committed write
    release.set()
    assert await held == 2  # the held snapshot saw one row, before and after the write


async def test_concurrent_writes_are_group_committed_and_fail_alone(archive: Archive, tokenizer: Tokenizer) -> None:
    await archive.start_call(started("c1"))
    writes = [say(archive, tokenizer, "c1", f"第{n}句", n) for n in range(20)]
    writes.insert(7, say(archive, tokenizer, "no-such-call", "外键不存在", 0))  # fails its foreign key
    got = await asyncio.gather(*writes, return_exceptions=True)
    errors = [g for g in got if isinstance(g, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], sqlite3.IntegrityError)
    ids = [g for g in got if isinstance(g, int)]
    assert len(set(ids)) == 20
    call = await archive.get_call("c1")
    assert call is not None and {s["segment_id"] for s in call["segments"]} == set(ids)
    assert await archive.verify_chain() == (True, 21)  # the failed write left no entry in the chain


# --------------------------------------------------------------------------- API


@pytest.fixture
async def api(archive: Archive, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(rest.router)
    app.state.monitor = SimpleNamespace(services=SimpleNamespace(archive=archive, settings=make_settings(tmp_path)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


async def test_api_search_filters_and_cursor(
    api: httpx.AsyncClient, archive: Archive, tokenizer: Tokenizer, clock: Clock
) -> None:
    ids = await seeded(archive, tokenizer, clock)
    body = (await api.get("/api/search", params={"category": "threat"})).json()  # category only
    assert [r["segment_id"] for r in body["results"]] == [ids["a1_agent"]] and body["next_cursor"] is None
    params = {"q": "还款", "agent": "a1", "severity": "high", "action": "halt_call", "from": "1000", "to": "1500"}
    assert [r["segment_id"] for r in (await api.get("/api/search", params=params)).json()["results"]] == [
        ids["a1_agent"]
    ]
    iso = {"q": "还", "from": "1970-01-01T00:50:00", "to": "1970-01-01"}  # a bare date `to` covers its day
    assert {r["segment_id"] for r in (await api.get("/api/search", params=iso)).json()["results"]} == {
        ids["a2_agent"],
        ids["a2_plain"],
    }
    first = (await api.get("/api/search", params={"q": "还款", "limit": 2})).json()
    assert len(first["results"]) == 2 and first["next_cursor"]
    rest_ = (await api.get("/api/search", params={"q": "还款", "limit": 2, "cursor": first["next_cursor"]})).json()
    assert [r["segment_id"] for r in rest_["results"]] == [ids["a1_agent"]] and rest_["next_cursor"] is None
    assert (await api.get("/api/search")).status_code == 422  # nothing to search for
    assert (await api.get("/api/search", params={"q": "还款", "cursor": "zz"})).status_code == 422
    assert (await api.get("/api/search", params={"q": "还款", "from": "yesterday"})).status_code == 422
