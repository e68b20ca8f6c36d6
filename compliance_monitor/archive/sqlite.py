"""The archive: calls, transcript segments, findings, actions, and a tamper-evident audit chain.

SQLite by default (one file, WAL). One thread owns the connection; every public method is async
and runs there, so the event loop never waits on disk. Full-text search indexes jieba tokens in a
contentless FTS5 table (SQLite has no Chinese word breaker; we bring our own).
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from compliance_monitor.messages import Action, CallStarted, Finding, NormalisedText, Transcript

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY, agent_id TEXT, bridge TEXT NOT NULL, metadata TEXT NOT NULL,
    started_at REAL NOT NULL, ended_at REAL, end_reason TEXT
);
CREATE TABLE IF NOT EXISTS segments (
    segment_id INTEGER PRIMARY KEY, call_id TEXT NOT NULL REFERENCES calls(call_id),
    speaker TEXT NOT NULL, segment_no INTEGER NOT NULL, t0 REAL NOT NULL, t1 REAL NOT NULL,
    raw_text TEXT NOT NULL, text TEXT NOT NULL, tokens TEXT NOT NULL, avg_logprob REAL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS segments_call ON segments(call_id, t0);
CREATE VIRTUAL TABLE IF NOT EXISTS segments_fts USING fts5(tokens, content='', tokenize='unicode61');
CREATE TABLE IF NOT EXISTS findings (
    finding_id INTEGER PRIMARY KEY, call_id TEXT NOT NULL REFERENCES calls(call_id),
    segment_id INTEGER REFERENCES segments(segment_id), speaker TEXT NOT NULL, segment_no INTEGER NOT NULL,
    rule_id TEXT NOT NULL, category TEXT NOT NULL, severity TEXT NOT NULL, matched_text TEXT NOT NULL,
    span_start INTEGER NOT NULL, span_end INTEGER NOT NULL, t0 REAL NOT NULL, t1 REAL NOT NULL,
    explanation TEXT NOT NULL, source TEXT NOT NULL, score REAL NOT NULL, created_at REAL NOT NULL,
    withdrawn_at REAL, withdrawn_reason TEXT
);
CREATE INDEX IF NOT EXISTS findings_call ON findings(call_id);
CREATE TABLE IF NOT EXISTS actions (
    action_id INTEGER PRIMARY KEY, call_id TEXT NOT NULL REFERENCES calls(call_id),
    finding_id INTEGER REFERENCES findings(finding_id), action TEXT NOT NULL, reason TEXT NOT NULL,
    actor TEXT NOT NULL, created_at REAL NOT NULL, outcome TEXT, outcome_detail TEXT, outcome_at REAL
);
CREATE TABLE IF NOT EXISTS audit (
    audit_id INTEGER PRIMARY KEY, kind TEXT NOT NULL, ref_id TEXT NOT NULL, payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL, created_at REAL NOT NULL
);
"""

_STANDING = "f.call_id = c.call_id AND f.withdrawn_at IS NULL"  # a call's findings, less the withdrawn
_SEVERITY_ORDER = "CASE severity WHEN 'critical' THEN 3 WHEN 'high' THEN 2 WHEN 'warn' THEN 1 ELSE 0 END"
GENESIS = "0" * 64


def _add_missing_columns(db: sqlite3.Connection, table: str, columns: dict[str, str]) -> None:
    """Columns added after an archive was created: an older file gets them, its rows keep their values."""
    present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    for name, kind in columns.items():
        if name not in present:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


class Archive:
    def __init__(self, path: Path, search_tokenizer: Callable[[str], Iterable[str]]) -> None:
        self.path = path
        self._tokenize = search_tokenizer
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive")
        self._db: sqlite3.Connection | None = None
        self._last_hash = GENESIS

    # ------------------------------------------------------------------ plumbing

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(SCHEMA)
        _add_missing_columns(db, "findings", {"withdrawn_at": "REAL", "withdrawn_reason": "TEXT"})
        # content: 'speech' | 'no_speech' | 'no_audio', set when the call ends (see Archive.end_call)
        _add_missing_columns(db, "calls", {"content": "TEXT"})
        # What each action did to the phone call (messages.Outcome), and why the monitor stopped listening to a call.
        _add_missing_columns(db, "actions", {"outcome": "TEXT", "outcome_detail": "TEXT", "outcome_at": "REAL"})
        _add_missing_columns(db, "calls", {"unmonitored_at": "REAL", "unmonitored_reason": "TEXT"})
        row = db.execute("SELECT hash FROM audit ORDER BY audit_id DESC LIMIT 1").fetchone()
        self._last_hash = row["hash"] if row else GENESIS
        self._db = db

    async def aclose(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("archive is not open")
        return self._db

    def _audit(self, kind: str, ref_id: object, payload: dict[str, Any]) -> None:
        """Append to the hash chain: each entry commits to the one before it."""
        body = json.dumps(payload, ensure_ascii=False, sort_keys=True, default=str)
        digest = hashlib.sha256(f"{self._last_hash}|{kind}|{ref_id}|{body}".encode()).hexdigest()
        self.db.execute(
            "INSERT INTO audit(kind, ref_id, payload, prev_hash, hash, created_at) VALUES (?,?,?,?,?,?)",
            (kind, str(ref_id), body, self._last_hash, digest, time.time()),
        )
        self._last_hash = digest

    def _write(self, fn: Callable[[], T]) -> T:
        with self.db:  # one transaction: the row and its audit entry land together
            self.db.execute("BEGIN")
            return fn()

    # ------------------------------------------------------------------ writes

    async def start_call(self, call: CallStarted) -> str:
        """Archive a new call; returns its archive key. An id already archived is never overwritten: a call
        that reuses one (a bridge's retry after the call ended) gets ``<call_id>~2``, ``~3``, ..."""

        def write() -> str:
            key = call.call_id
            for n in range(2, 10_000):
                if self.db.execute("SELECT 1 FROM calls WHERE call_id=?", (key,)).fetchone() is None:
                    break
                key = f"{call.call_id}~{n}"
            metadata = call.metadata if key == call.call_id else {**call.metadata, "bridge_call_id": call.call_id}
            self.db.execute(
                "INSERT INTO calls(call_id, agent_id, bridge, metadata, started_at) VALUES (?,?,?,?,?)",
                (key, call.agent_id, call.bridge, json.dumps(metadata, ensure_ascii=False), call.wall_time),
            )
            self._audit("call_started", key, {"agent_id": call.agent_id, "bridge": call.bridge})
            return key

        return await self._run(self._write, write)

    async def end_call(self, call_id: str, reason: str, ended_at: float, content: str | None = None) -> None:
        """``content``: 'speech', 'no_speech' (audio, nothing said) or 'no_audio' (the bridge sent none)."""

        def write() -> None:
            self.db.execute(
                "UPDATE calls SET ended_at=?, end_reason=?, content=? WHERE call_id=?",
                (ended_at, reason, content, call_id),
            )
            self._audit("call_ended", call_id, {"reason": reason, "content": content})

        await self._run(self._write, write)

    async def add_segment(self, tr: Transcript, text: NormalisedText) -> int:
        def write() -> int:
            tokens = " ".join(t for t in self._tokenize(text.text) if t.strip())
            cur = self.db.execute(
                "INSERT INTO segments(call_id, speaker, segment_no, t0, t1, raw_text, text, tokens, "
                "avg_logprob, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    tr.call_id,
                    tr.speaker.value,
                    tr.segment_no,
                    tr.t0,
                    tr.t1,
                    text.raw,
                    text.text,
                    tokens,
                    tr.avg_logprob,
                    time.time(),
                ),
            )
            segment_id = int(cur.lastrowid or 0)
            self.db.execute("INSERT INTO segments_fts(rowid, tokens) VALUES (?, ?)", (segment_id, tokens))
            self._audit(
                "segment",
                segment_id,
                {"call_id": tr.call_id, "speaker": tr.speaker.value, "t0": tr.t0, "t1": tr.t1, "text": text.text},
            )
            return segment_id

        return await self._run(self._write, write)

    async def add_finding(self, f: Finding, segment_id: int | None) -> int:
        def write() -> int:
            cur = self.db.execute(
                "INSERT INTO findings(call_id, segment_id, speaker, segment_no, rule_id, category, severity, "
                "matched_text, span_start, span_end, t0, t1, explanation, source, score, created_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    f.call_id,
                    segment_id,
                    f.speaker.value,
                    f.segment_no,
                    f.rule_id,
                    f.category,
                    f.severity.value,
                    f.matched_text,
                    f.span[0],
                    f.span[1],
                    f.t0,
                    f.t1,
                    f.explanation,
                    f.source,
                    f.score,
                    time.time(),
                ),
            )
            finding_id = int(cur.lastrowid or 0)
            self._audit(
                "finding",
                finding_id,
                {"call_id": f.call_id, "rule_id": f.rule_id, "category": f.category, "matched_text": f.matched_text},
            )
            return finding_id

        return await self._run(self._write, write)

    async def link_finding(self, finding_id: int, segment_id: int | None) -> None:
        """A finding raised on a partial transcript, confirmed by the final segment: record which one."""
        if segment_id is None:
            return

        def write() -> None:
            self.db.execute("UPDATE findings SET segment_id = ? WHERE finding_id = ?", (segment_id, finding_id))
            self._audit("finding_confirmed", finding_id, {"segment_id": segment_id})

        await self._run(self._write, write)

    async def withdraw_finding(self, call_id: str, finding_id: int, reason: str) -> None:
        """A finding raised on a partial transcript that the final one does not bear out: kept, marked withdrawn."""

        def write() -> None:
            self.db.execute(
                "UPDATE findings SET withdrawn_at = ?, withdrawn_reason = ? WHERE finding_id = ?",
                (time.time(), reason, finding_id),
            )
            self._audit("finding_withdrawn", finding_id, {"call_id": call_id, "reason": reason})

        await self._run(self._write, write)

    async def add_action(
        self, action: Action, finding_id: int | None, actor: str = "policy", outcome: str | None = None
    ) -> int:
        return await self.add_manual_action(
            action.call_id, action.kind.value, action.reason, finding_id, actor, outcome
        )

    async def add_manual_action(
        self, call_id: str, kind: str, reason: str, finding_id: int | None, actor: str, outcome: str | None = None
    ) -> int:
        def write() -> int:
            cur = self.db.execute(
                "INSERT INTO actions(call_id, finding_id, action, reason, actor, created_at, outcome) "
                "VALUES (?,?,?,?,?,?,?)",
                (call_id, finding_id, kind, reason, actor, time.time(), outcome),
            )
            action_id = int(cur.lastrowid or 0)
            self._audit(
                "action",
                action_id,
                {"call_id": call_id, "action": kind, "actor": actor, "reason": reason, "outcome": outcome},
            )
            return action_id

        return await self._run(self._write, write)

    async def set_action_outcome(self, call_id: str, action_id: int, outcome: str, detail: str = "") -> None:
        """What the bridge did with an action archived as pending (the call ended, the prompt played, or not)."""

        def write() -> None:
            self.db.execute(
                "UPDATE actions SET outcome = ?, outcome_detail = ?, outcome_at = ? WHERE action_id = ?",
                (outcome, detail, time.time(), action_id),
            )
            self._audit("action_outcome", action_id, {"call_id": call_id, "outcome": outcome, "detail": detail})

        await self._run(self._write, write)

    async def mark_unmonitored(self, call_id: str, reason: str) -> None:
        """The monitor stopped listening to a call that may go on: kept on the call for audit and review."""

        def write() -> None:
            self.db.execute(
                "UPDATE calls SET unmonitored_at = ?, unmonitored_reason = ? WHERE call_id = ?",
                (time.time(), reason, call_id),
            )
            self._audit("call_unmonitored", call_id, {"call_id": call_id, "reason": reason})

        await self._run(self._write, write)

    # ------------------------------------------------------------------ reads

    async def list_calls(self, status: str = "all", limit: int = 50) -> list[dict[str, Any]]:
        where = {"live": "WHERE ended_at IS NULL", "ended": "WHERE ended_at IS NOT NULL"}.get(status, "")

        def read() -> list[dict[str, Any]]:
            rows = self.db.execute(
                f"SELECT c.*, (SELECT COUNT(*) FROM findings f WHERE {_STANDING}) AS n_findings, "
                f"(SELECT severity FROM findings f WHERE {_STANDING} ORDER BY {_SEVERITY_ORDER} DESC "
                f"LIMIT 1) AS max_severity FROM calls c {where} ORDER BY started_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [_call_row(r) for r in rows]

        return await self._run(read)

    async def count_calls(self, debtor_id: str, since: float) -> int:
        """Calls to this debtor started since ``since`` (this one included), for frequency rules."""

        def read() -> int:
            row = self.db.execute(
                "SELECT COUNT(*) FROM calls WHERE started_at >= ? AND COALESCE(content, 'speech') = 'speech' "
                "AND (json_extract(metadata, '$.debtor_id') = ? "
                "OR json_extract(metadata, '$.custom_parameters.debtor_id') = ?)",
                (since, debtor_id, debtor_id),
            ).fetchone()
            return int(row[0])

        return await self._run(read)

    async def get_call(self, call_id: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            call = self.db.execute("SELECT * FROM calls WHERE call_id=?", (call_id,)).fetchone()
            if call is None:
                return None
            segs = self.db.execute(
                "SELECT segment_id, speaker, segment_no, t0, t1, text, raw_text FROM segments "
                "WHERE call_id=? ORDER BY t0",
                (call_id,),
            ).fetchall()
            finds = self.db.execute(
                "SELECT finding_id, segment_id, segment_no, speaker, rule_id, category, severity, matched_text, "
                "span_start, span_end, t0, t1, explanation, source, score, withdrawn_at, withdrawn_reason "
                "FROM findings WHERE call_id=? "
                "ORDER BY t1",
                (call_id,),
            ).fetchall()
            acts = self.db.execute(
                "SELECT action_id, action, finding_id, reason, actor, created_at AS ts, outcome, outcome_detail "
                "FROM actions "
                "WHERE call_id=? ORDER BY action_id",
                (call_id,),
            ).fetchall()
            return {
                "call": _call_row(call),
                "segments": [dict(r) for r in segs],
                "findings": [dict(r) for r in finds],
                "actions": [dict(r) for r in acts],
            }

        return await self._run(read)

    async def audit_entries(self, call_id: str) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            rows = self.db.execute(
                "SELECT * FROM audit WHERE json_extract(payload, '$.call_id') = ? OR "
                "(kind IN ('call_started', 'call_ended') AND ref_id = ?) ORDER BY audit_id",
                (call_id, call_id),
            ).fetchall()
            return [dict(r) for r in rows]

        return await self._run(read)

    async def verify_chain(self) -> tuple[bool, int]:
        """Recompute every hash; returns (intact, entries checked)."""

        def read() -> tuple[bool, int]:
            prev, n = GENESIS, 0
            for row in self.db.execute("SELECT * FROM audit ORDER BY audit_id"):
                expect = hashlib.sha256(f"{prev}|{row['kind']}|{row['ref_id']}|{row['payload']}".encode()).hexdigest()
                if row["prev_hash"] != prev or row["hash"] != expect:
                    return False, n
                prev, n = row["hash"], n + 1
            return True, n

        return await self._run(read)

    async def search(
        self, query: str, *, speaker: str | None = None, category: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        terms = [t for t in dict.fromkeys(self._tokenize(query)) if t.strip() and not _PUNCT.fullmatch(t)]
        if not terms:
            return []

        def read() -> list[dict[str, Any]]:
            filters, args = "", []
            if speaker:
                filters += " AND s.speaker = ?"
                args.append(speaker)
            if category:
                filters += " AND EXISTS (SELECT 1 FROM findings f WHERE f.segment_id = s.segment_id AND f.category = ?)"
                args.append(category)
            match = " ".join('"' + t.replace('"', '""') + '"' for t in terms)
            rows = self.db.execute(
                "SELECT s.*, c.agent_id, c.started_at FROM segments_fts JOIN segments s ON s.segment_id = "
                f"segments_fts.rowid JOIN calls c USING (call_id) WHERE segments_fts MATCH ? {filters} "
                "ORDER BY bm25(segments_fts), s.segment_id DESC LIMIT ?",
                (match, *args, limit),
            ).fetchall()
            if not rows:  # a term shorter than the indexed words (一个字): substring scan, bounded
                rows = self.db.execute(
                    "SELECT s.*, c.agent_id, c.started_at FROM segments s JOIN calls c USING (call_id) "
                    f"WHERE s.text LIKE ? {filters} ORDER BY s.segment_id DESC LIMIT ?",
                    (f"%{query.strip()}%", *args, limit),
                ).fetchall()
            out = []
            for r in rows:
                cats = [
                    c[0]
                    for c in self.db.execute(
                        "SELECT DISTINCT category FROM findings WHERE segment_id=?", (r["segment_id"],)
                    )
                ]
                out.append(
                    {
                        "segment_id": r["segment_id"],
                        "call_id": r["call_id"],
                        "agent_id": r["agent_id"],
                        "speaker": r["speaker"],
                        "t0": r["t0"],
                        "t1": r["t1"],
                        "text": r["text"],
                        "snippet": highlight(r["text"], [*terms, query.strip()]),
                        "started_at": r["started_at"],
                        "categories": cats,
                    }
                )
            return out

        return await self._run(read)


_PUNCT = re.compile(r"[\W_]+")


def highlight(text: str, terms: Iterable[str]) -> str:
    """HTML-escaped text with every occurrence of a term wrapped in <mark>."""
    words = sorted({t for t in terms if t}, key=len, reverse=True)
    if not words:
        return html.escape(text)
    pattern = re.compile("|".join(re.escape(w) for w in words))
    out, pos = [], 0
    for m in pattern.finditer(text):
        out += [html.escape(text[pos : m.start()]), "<mark>", html.escape(m.group(0)), "</mark>"]
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _call_row(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["metadata"] = json.loads(d.get("metadata") or "{}")
    d["status"] = "live" if d.get("ended_at") is None else "ended"
    return d
