"""The archive: calls, transcript segments, findings, actions, and a tamper-evident audit chain.

SQLite by default (one file, WAL). Writes and reads never share a thread:
- one writer thread owns the write connection. Concurrent writes (every live call's finals) are
  group-committed: each waits in a queue, the writer runs all that are waiting in one transaction
  (each in its own savepoint) and answers them after the COMMIT, so a caller still gets its id only
  once its row is durable.
- reads (search, call views, exports) run on a small pool of read-only connections; WAL lets them
  read a consistent snapshot while the writer commits, so no search can hold back a live call.
Every public method is async; the event loop never waits on disk. Search indexes character grams
(see textindex) in a contentless FTS5 table.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from compliance_monitor.archive import audit
from compliance_monitor.archive.alerts import ALERT_TABLES, AlertArchive
from compliance_monitor.archive.search import MAX_ID, Cursor, Filters, Tier, choose_drive, id_bounds, page_sql, tiers
from compliance_monitor.archive.textindex import grams
from compliance_monitor.messages import Action, CallStarted, Finding, NormalisedText, Transcript

log = logging.getLogger(__name__)

T = TypeVar("T")
Read = Callable[[sqlite3.Connection], T]

TABLES = """
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY, agent_id TEXT, bridge TEXT NOT NULL, metadata TEXT NOT NULL,
    started_at REAL NOT NULL, ended_at REAL, end_reason TEXT
);
CREATE TABLE IF NOT EXISTS segments (
    segment_id INTEGER PRIMARY KEY, call_id TEXT NOT NULL REFERENCES calls(call_id),
    speaker TEXT NOT NULL, segment_no INTEGER NOT NULL, t0 REAL NOT NULL, t1 REAL NOT NULL,
    raw_text TEXT NOT NULL, text TEXT NOT NULL, avg_logprob REAL,
    created_at REAL NOT NULL, agent_id TEXT
);
-- contentless, no per-row sizes: matches are confirmed on the segment row and ranked by tier and recency, not bm25
CREATE VIRTUAL TABLE IF NOT EXISTS segments_grams USING fts5(uni, bi, content='', columnsize=0, tokenize='unicode61');
CREATE VIRTUAL TABLE IF NOT EXISTS segments_grams_vocab USING fts5vocab(segments_grams, 'row');
CREATE TABLE IF NOT EXISTS findings (
    finding_id INTEGER PRIMARY KEY, call_id TEXT NOT NULL REFERENCES calls(call_id),
    segment_id INTEGER REFERENCES segments(segment_id), speaker TEXT NOT NULL, segment_no INTEGER NOT NULL,
    rule_id TEXT NOT NULL, category TEXT NOT NULL, severity TEXT NOT NULL, matched_text TEXT NOT NULL,
    span_start INTEGER NOT NULL, span_end INTEGER NOT NULL, t0 REAL NOT NULL, t1 REAL NOT NULL,
    explanation TEXT NOT NULL, source TEXT NOT NULL, score REAL NOT NULL, created_at REAL NOT NULL,
    withdrawn_at REAL, withdrawn_reason TEXT,
    segment_text TEXT  -- the segment's text, copied: text + category/severity is answered from one index
);
CREATE TABLE IF NOT EXISTS actions (
    action_id INTEGER PRIMARY KEY, call_id TEXT NOT NULL REFERENCES calls(call_id),
    finding_id INTEGER REFERENCES findings(finding_id), action TEXT NOT NULL, reason TEXT NOT NULL,
    actor TEXT NOT NULL, created_at REAL NOT NULL, outcome TEXT, outcome_detail TEXT, outcome_at REAL,
    segment_id INTEGER  -- the finding's segment, copied so that an action filter walks an index in id order
);
CREATE TABLE IF NOT EXISTS audit (
    audit_id INTEGER PRIMARY KEY, kind TEXT NOT NULL, ref_id TEXT NOT NULL,
    payload TEXT,     -- NULL: a segment entry, its body is the segment row
    prev_hash TEXT,   -- NULL: the hash of the entry before (stored only before compaction)
    hash BLOB NOT NULL, created_at REAL NOT NULL,
    call_id TEXT, actor TEXT,  -- the call it concerns, the person who did it
    v INTEGER                  -- 2: the hash covers the whole row (audit.entry_hash_v2), NULL: older formula
);
CREATE TABLE IF NOT EXISTS users (
    user_id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL, agent_id TEXT,
    password_hash TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_tokens (
    token_id INTEGER PRIMARY KEY, label TEXT NOT NULL, role TEXT NOT NULL, agent_id TEXT,
    token_hash TEXT NOT NULL UNIQUE,  -- sha256 of the secret, which is shown once
    disabled INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, created_by TEXT
);
CREATE TABLE IF NOT EXISTS sessions (
    session_hash TEXT PRIMARY KEY, user_name TEXT NOT NULL, created_at REAL NOT NULL,
    last_seen REAL NOT NULL, ip TEXT
);
"""

# Every filter the search API offers has an index that returns rows in segment-id order.
INDEXES = """
CREATE INDEX IF NOT EXISTS calls_started ON calls(started_at);
CREATE INDEX IF NOT EXISTS segments_call ON segments(call_id, t0);
CREATE INDEX IF NOT EXISTS segments_agent ON segments(agent_id);
CREATE INDEX IF NOT EXISTS findings_call ON findings(call_id);
CREATE INDEX IF NOT EXISTS findings_segment ON findings(segment_id);
CREATE INDEX IF NOT EXISTS findings_category ON findings(category, segment_id, segment_text);
CREATE INDEX IF NOT EXISTS findings_severity ON findings(severity, segment_id, segment_text);
CREATE INDEX IF NOT EXISTS actions_finding ON actions(finding_id, action);
CREATE INDEX IF NOT EXISTS actions_call ON actions(call_id);
CREATE INDEX IF NOT EXISTS actions_kind ON actions(action, segment_id);
CREATE INDEX IF NOT EXISTS audit_ref ON audit(kind, ref_id);
CREATE INDEX IF NOT EXISTS audit_call ON audit(call_id);
"""

SCHEMA = TABLES + INDEXES

_STANDING = "f.call_id = c.call_id AND f.withdrawn_at IS NULL"  # a call's findings, less the withdrawn
_SEVERITY_ORDER = "CASE severity WHEN 'critical' THEN 3 WHEN 'high' THEN 2 WHEN 'warn' THEN 1 ELSE 0 END"
GENESIS = audit.GENESIS
CHECKPOINT_EVERY_S = 0.5
_MIGRATE_BATCH = 5000


@dataclass(frozen=True, slots=True)
class SearchPage:
    results: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(slots=True)
class _Op:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _columns(db: sqlite3.Connection, table: str) -> dict[str, sqlite3.Row]:
    return {row[1]: row for row in db.execute(f"PRAGMA table_info({table})")}


def _add_missing_columns(db: sqlite3.Connection, table: str, columns: dict[str, str]) -> list[str]:
    """Columns added after an archive was created: an older file gets them, its rows keep their values."""
    present = _columns(db, table)
    added = [name for name in columns if name not in present]
    for name in added:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {columns[name]}")
    return added


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA busy_timeout=10000")
    db.execute("PRAGMA mmap_size=2147483648")  # readers share the OS page cache instead of copying pages
    return db


class Archive(AlertArchive):
    def __init__(
        self,
        path: Path,
        search_tokenizer: Callable[[str], Iterable[str]],
        *,
        readers: int = 2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._tokenize = search_tokenizer
        self._clock = clock  # archive times; the bench replays a month through it
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-write")
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="archive-read")
        self._reader_dbs: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._lock = threading.Lock()
        self._queue: list[_Op] = []
        self._draining = False
        self._db: sqlite3.Connection | None = None
        self._checkpointer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-checkpoint")
        self._checkpoint_db: sqlite3.Connection | None = None
        self._checkpoint_busy = False
        self._checkpoint_at = 0.0
        # The chain head: _last_* is what the open transaction has written, _head what has committed.
        self._last_hash = GENESIS
        self._last_id = 0
        self._head: tuple[int, str, float] = (0, GENESIS, 0.0)
        self._last_time = 0.0
        self._segment_sql = _segment_insert(legacy_tokens=False)

    # ------------------------------------------------------------------ plumbing

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._writer, self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = _connect(self.path)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a row is on disk before its event is published, even across a power cut; group commit
        # pays the fsync once per batch of waiting writes.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run on their own thread (_maybe_checkpoint)
        with db:
            db.execute("BEGIN IMMEDIATE")
            self._migrate(db)
        row = db.execute("SELECT audit_id, hash, created_at FROM audit ORDER BY audit_id DESC LIMIT 1").fetchone()
        if row:
            self._head = (row["audit_id"], audit.as_hex(row["hash"]), row["created_at"])
        self._last_id, self._last_hash = self._head[0], self._head[1]
        row = db.execute("SELECT created_at FROM segments ORDER BY segment_id DESC LIMIT 1").fetchone()
        self._last_time = row["created_at"] if row else 0.0
        self._segment_sql = _segment_insert("tokens" in _columns(db, "segments"))
        self._db = db

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Bring an archive written by an older version up to this schema, keeping every row."""
        had_grams = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'segments_grams'").fetchone() is not None
        _run_script(db, TABLES)
        _add_missing_columns(db, "findings", {"withdrawn_at": "REAL", "withdrawn_reason": "TEXT"})
        # content: 'speech' | 'no_speech' | 'no_audio', set when the call ends (see Archive.end_call)
        _add_missing_columns(db, "calls", {"content": "TEXT"})
        # What each action did to the phone call (messages.Outcome), and why the monitor stopped listening to a call.
        _add_missing_columns(db, "actions", {"outcome": "TEXT", "outcome_detail": "TEXT", "outcome_at": "REAL"})
        _add_missing_columns(db, "calls", {"unmonitored_at": "REAL", "unmonitored_reason": "TEXT"})
        _add_missing_columns(db, "audit", {"call_id": "TEXT", "actor": "TEXT", "v": "INTEGER"})
        if _add_missing_columns(db, "segments", {"agent_id": "TEXT"}):
            db.execute(
                "UPDATE segments SET agent_id = (SELECT c.agent_id FROM calls c WHERE c.call_id = segments.call_id)"
            )
        if _add_missing_columns(db, "findings", {"segment_text": "TEXT"}):
            db.execute(
                "UPDATE findings SET segment_text = (SELECT s.text FROM segments s WHERE s.segment_id = "
                "findings.segment_id) WHERE segment_id IS NOT NULL"
            )
        if _add_missing_columns(db, "actions", {"segment_id": "INTEGER"}):
            db.execute(
                "UPDATE actions SET segment_id = "
                "(SELECT f.segment_id FROM findings f WHERE f.finding_id = actions.finding_id)"
            )
        if _columns(db, "audit")["payload"]["notnull"]:
            _compact_audit_table(db)
        if not had_grams:
            _index_grams(db)
        db.execute("DROP TABLE IF EXISTS segments_fts")  # jieba-token index of older archives
        _run_script(db, ALERT_TABLES)  # alert state and notes (archive.alerts)
        _run_script(db, INDEXES)

    async def aclose(self) -> None:
        if self._db is None:
            return
        await self._write(lambda db: None)  # everything queued before the close is committed
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._readers.shutdown, True)
        for db in self._reader_dbs:
            db.close()
        self._reader_dbs.clear()
        await loop.run_in_executor(None, self._checkpointer.shutdown, True)
        if self._checkpoint_db is not None:
            self._checkpoint_db.close()
        await loop.run_in_executor(self._writer, self._close_writer)
        self._writer.shutdown(wait=True)

    def _close_writer(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        """The write connection (writer thread only)."""
        if self._db is None:
            raise RuntimeError("archive is not open")
        return self._db

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Queue a write; resolved once the transaction holding it has committed."""
        loop = asyncio.get_running_loop()
        op = _Op(fn, loop.create_future(), loop)
        with self._lock:
            self._queue.append(op)
            start, self._draining = not self._draining, True
        if start:
            self._writer.submit(self._drain)
        result: T = await op.future
        return result

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._draining = False
                    return
            self._commit(batch)

    def _commit(self, batch: list[_Op]) -> None:
        """One transaction for all queued writes; a failing write rolls back alone (its savepoint)."""
        db, outcomes = self.db, []
        try:
            db.execute("BEGIN IMMEDIATE")
            for op in batch:
                outcomes.append(self._apply(db, op))
            db.execute("COMMIT")
            if self._last_id != self._head[0]:
                self._head = (self._last_id, self._last_hash, self._last_time)  # advances only once committed
        except BaseException as exc:  # the commit itself failed: nothing in the batch is archived
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._last_id, self._last_hash = self._head[0], self._head[1]
            outcomes = [(False, exc)] * len(batch)
        for op, (ok, value) in zip(batch, outcomes, strict=True):
            op.loop.call_soon_threadsafe(_settle, op.future, ok, value)
        self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        """Copy the WAL back into the database from another thread, at most every CHECKPOINT_EVERY_S.

        SQLite's own auto-checkpoint runs inside the COMMIT that crosses its threshold, so some live
        call's final would wait for it (and, with readers holding snapshots, for the fsync of the file)."""
        now = time.monotonic()
        if self._checkpoint_busy or now - self._checkpoint_at < CHECKPOINT_EVERY_S:
            return
        self._checkpoint_busy, self._checkpoint_at = True, now
        self._checkpointer.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            if self._checkpoint_db is None:
                self._checkpoint_db = _connect(self.path)
            # PASSIVE: copies what no reader still needs, never waits for readers or the writer
            self._checkpoint_db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            log.exception("archive checkpoint failed; the WAL stays longer, nothing is lost")
        finally:
            self._checkpoint_busy = False

    def _apply(self, db: sqlite3.Connection, op: _Op) -> tuple[bool, Any]:
        chain_before = self._last_id, self._last_hash
        db.execute("SAVEPOINT op")
        try:
            value = op.fn(db)
        except Exception as exc:
            db.execute("ROLLBACK TO op")
            db.execute("RELEASE op")
            self._last_id, self._last_hash = chain_before
            return False, exc
        db.execute("RELEASE op")
        return True, value

    async def _read(self, fn: Read[T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._in_snapshot, fn)

    def _in_snapshot(self, fn: Read[T]) -> T:
        db = self._reader()
        db.execute("BEGIN")  # one snapshot for every statement of the read
        try:
            return fn(db)
        finally:
            db.execute("COMMIT")

    def _reader(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            if self._db is None:
                raise RuntimeError("archive is not open")
            db = _connect(self.path)
            db.execute("PRAGMA query_only=ON")
            self._local.db = db
            with self._lock:
                self._reader_dbs.append(db)
        return db

    def _now(self) -> float:
        # Never backwards: segment ids and archive times rise together, which turns a date range
        # into an id range (search.id_bounds).
        self._last_time = max(self._clock(), self._last_time)
        return self._last_time

    def _audit(
        self,
        kind: str,
        ref_id: object,
        payload: dict[str, Any],
        *,
        stored: bool = True,
        call_id: str | None = None,
        actor: str | None = None,
    ) -> int:
        """Append to the hash chain (writer thread, inside the transaction): the entry's hash covers its whole
        row and the hash before it. Returns the new audit_id."""
        body = audit.body_json(payload)
        audit_id, at = self._last_id + 1, self._now()
        digest = audit.entry_hash_v2(self._last_hash, audit_id, kind, ref_id, call_id, actor, at, body)
        self.db.execute(
            "INSERT INTO audit(audit_id, kind, ref_id, payload, hash, created_at, call_id, actor, v) "
            "VALUES (?,?,?,?,?,?,?,?,2)",
            (audit_id, kind, str(ref_id), body if stored else None, bytes.fromhex(digest), at, call_id, actor),
        )
        self._last_id, self._last_hash = audit_id, digest
        return audit_id

    async def record_audit(
        self, kind: str, actor: str, payload: dict[str, Any], call_id: str | None = None, ref_id: object = None
    ) -> int:
        """Record something a person did (halt, ack, note, search, export, login, unmask, ...); returns audit_id.

        ``actor`` is the username (``Principal.user``); it is stored in its own hashed column and in the payload."""

        def write(db: sqlite3.Connection) -> int:
            ref = ref_id if ref_id is not None else (call_id or "")
            return self._audit(kind, ref, {**payload, "actor": actor}, call_id=call_id, actor=actor)

        return await self._write(write)

    def audit_head(self) -> dict[str, Any]:
        """The last committed entry: anchor it elsewhere to detect a rewrite of the whole chain."""
        audit_id, digest, at = self._head
        return {"audit_id": audit_id, "hash": digest, "created_at": at}

    # ------------------------------------------------------------------ writes

    async def start_call(self, call: CallStarted) -> str:
        """Archive a new call; returns its archive key. An id already archived is never overwritten: a call
        that reuses one (a bridge's retry after the call ended) gets ``<call_id>~2``, ``~3``, ..."""

        def write(db: sqlite3.Connection) -> str:
            key = call.call_id
            for n in range(2, 10_000):
                if db.execute("SELECT 1 FROM calls WHERE call_id=?", (key,)).fetchone() is None:
                    break
                key = f"{call.call_id}~{n}"
            metadata = call.metadata if key == call.call_id else {**call.metadata, "bridge_call_id": call.call_id}
            db.execute(
                "INSERT INTO calls(call_id, agent_id, bridge, metadata, started_at) VALUES (?,?,?,?,?)",
                (key, call.agent_id, call.bridge, json.dumps(metadata, ensure_ascii=False), call.wall_time),
            )
            self._audit("call_started", key, {"agent_id": call.agent_id, "bridge": call.bridge}, call_id=key)
            return key

        return await self._write(write)

    async def end_call(self, call_id: str, reason: str, ended_at: float, content: str | None = None) -> None:
        """``content``: 'speech', 'no_speech' (audio, nothing said) or 'no_audio' (the bridge sent none)."""

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE calls SET ended_at=?, end_reason=?, content=? WHERE call_id=?",
                (ended_at, reason, content, call_id),
            )
            self._audit("call_ended", call_id, {"reason": reason, "content": content}, call_id=call_id)

        await self._write(write)

    async def add_segment(self, tr: Transcript, text: NormalisedText) -> int:
        (segment_id,) = await self.add_segments([(tr, text)])
        return segment_id

    async def add_segments(self, items: Sequence[tuple[Transcript, NormalisedText]]) -> list[int]:
        """Final segments, in order, in one write (bulk loads; the live path sends one at a time)."""
        return await self._write(lambda db: [self._insert_segment(db, tr, text) for tr, text in items])

    def _insert_segment(self, db: sqlite3.Connection, tr: Transcript, text: NormalisedText) -> int:
        cur = db.execute(
            self._segment_sql,
            (
                tr.call_id,
                tr.speaker.value,
                tr.segment_no,
                tr.t0,
                tr.t1,
                text.raw,
                text.text,
                tr.avg_logprob,
                self._now(),
                tr.call_id,
            ),
        )
        segment_id = int(cur.lastrowid or 0)
        db.execute("INSERT INTO segments_grams(rowid, uni, bi) VALUES (?, ?, ?)", (segment_id, *grams(text.text)))
        body = audit.segment_payload(tr.call_id, tr.speaker.value, tr.t0, tr.t1, text.text)
        self._audit("segment", segment_id, body, stored=False, call_id=tr.call_id)  # the row is the payload
        return segment_id

    async def add_finding(self, f: Finding, segment_id: int | None) -> int:
        (finding_id,) = await self.add_findings([(f, segment_id)])
        return finding_id

    async def add_findings(self, items: Sequence[tuple[Finding, int | None]]) -> list[int]:
        return await self._write(lambda db: [self._insert_finding(db, f, segment_id) for f, segment_id in items])

    def _insert_finding(self, db: sqlite3.Connection, f: Finding, segment_id: int | None) -> int:
        cur = db.execute(
            "INSERT INTO findings(call_id, segment_id, speaker, segment_no, rule_id, category, severity, "
            "matched_text, span_start, span_end, t0, t1, explanation, source, score, created_at, segment_text) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,(SELECT text FROM segments WHERE segment_id = ?))",
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
                self._now(),
                segment_id,
            ),
        )
        finding_id = int(cur.lastrowid or 0)
        self._audit(
            "finding",
            finding_id,
            {"call_id": f.call_id, "rule_id": f.rule_id, "category": f.category, "matched_text": f.matched_text},
            call_id=f.call_id,
        )
        return finding_id

    async def link_finding(self, finding_id: int, segment_id: int | None, final: Finding | None = None) -> None:
        """A finding raised on a partial transcript, confirmed by the final segment: record which one. With
        ``final`` (the same rule's finding on the final) the finding quotes the final's words and span, which the
        archived segment holds (the partial's words may not be in it); the entry records them."""
        if segment_id is None:
            return

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE findings SET segment_id = ?1, segment_text = (SELECT text FROM segments WHERE segment_id = ?1) "
                "WHERE finding_id = ?2",
                (segment_id, finding_id),
            )
            db.execute("UPDATE actions SET segment_id = ? WHERE finding_id = ?", (segment_id, finding_id))
            payload: dict[str, Any] = {"segment_id": segment_id}
            if final is not None:
                db.execute(
                    "UPDATE findings SET matched_text = ?, span_start = ?, span_end = ?, t0 = ?, t1 = ? "
                    "WHERE finding_id = ?",
                    (final.matched_text, final.span[0], final.span[1], final.t0, final.t1, finding_id),
                )
                payload["matched_text"] = final.matched_text
            self._audit("finding_confirmed", finding_id, payload, call_id=final.call_id if final else None)

        await self._write(write)

    async def withdraw_finding(self, call_id: str, finding_id: int, reason: str) -> None:
        """A finding raised on a partial transcript that the final one does not bear out: kept, marked withdrawn."""

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE findings SET withdrawn_at = ?, withdrawn_reason = ? WHERE finding_id = ?",
                (self._now(), reason, finding_id),
            )
            self._audit("finding_withdrawn", finding_id, {"call_id": call_id, "reason": reason}, call_id=call_id)

        await self._write(write)

    async def add_action(
        self, action: Action, finding_id: int | None, actor: str = "policy", outcome: str | None = None
    ) -> int:
        return await self.add_manual_action(
            action.call_id, action.kind.value, action.reason, finding_id, actor, outcome
        )

    async def add_manual_action(
        self, call_id: str, kind: str, reason: str, finding_id: int | None, actor: str, outcome: str | None = None
    ) -> int:
        def write(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "INSERT INTO actions(call_id, finding_id, action, reason, actor, created_at, outcome, segment_id) "
                "VALUES (?,?,?,?,?,?,?,(SELECT segment_id FROM findings WHERE finding_id = ?))",
                (call_id, finding_id, kind, reason, actor, self._now(), outcome, finding_id),
            )
            action_id = int(cur.lastrowid or 0)
            self._audit(
                "action",
                action_id,
                {"call_id": call_id, "action": kind, "actor": actor, "reason": reason, "outcome": outcome},
                call_id=call_id,
                actor=actor,
            )
            return action_id

        return await self._write(write)

    async def set_action_outcome(self, call_id: str, action_id: int, outcome: str, detail: str = "") -> None:
        """What the bridge did with an action archived as pending (the call ended, the prompt played, or not)."""

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE actions SET outcome = ?, outcome_detail = ?, outcome_at = ? WHERE action_id = ?",
                (outcome, detail, time.time(), action_id),
            )
            self._audit(
                "action_outcome", action_id, {"call_id": call_id, "outcome": outcome, "detail": detail}, call_id=call_id
            )

        await self._write(write)

    async def mark_unmonitored(self, call_id: str, reason: str) -> None:
        """The monitor stopped listening to a call that may go on: kept on the call for audit and review."""

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE calls SET unmonitored_at = ?, unmonitored_reason = ? WHERE call_id = ?",
                (time.time(), reason, call_id),
            )
            self._audit("call_unmonitored", call_id, {"call_id": call_id, "reason": reason}, call_id=call_id)

        await self._write(write)

    # ------------------------------------------------------------------ reads

    async def list_calls(self, status: str = "all", limit: int = 50) -> list[dict[str, Any]]:
        where = {"live": "WHERE ended_at IS NULL", "ended": "WHERE ended_at IS NOT NULL"}.get(status, "")

        def read(db: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = db.execute(
                f"SELECT c.*, (SELECT COUNT(*) FROM findings f WHERE {_STANDING}) AS n_findings, "
                f"(SELECT severity FROM findings f WHERE {_STANDING} ORDER BY {_SEVERITY_ORDER} DESC "
                f"LIMIT 1) AS max_severity FROM calls c {where} ORDER BY started_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [_call_row(r) for r in rows]

        return await self._read(read)

    async def count_calls(self, debtor_id: str, since: float) -> int:
        """Calls to this debtor started since ``since`` (this one included), for frequency rules."""

        def read(db: sqlite3.Connection) -> int:
            row = db.execute(
                "SELECT COUNT(*) FROM calls WHERE started_at >= ? AND COALESCE(content, 'speech') = 'speech' "
                "AND (json_extract(metadata, '$.debtor_id') = ? "
                "OR json_extract(metadata, '$.custom_parameters.debtor_id') = ?)",
                (since, debtor_id, debtor_id),
            ).fetchone()
            return int(row[0])

        return await self._read(read)

    async def get_call(self, call_id: str) -> dict[str, Any] | None:
        def read(db: sqlite3.Connection) -> dict[str, Any] | None:
            call = db.execute("SELECT * FROM calls WHERE call_id=?", (call_id,)).fetchone()
            if call is None:
                return None
            segs = db.execute(
                "SELECT segment_id, speaker, segment_no, t0, t1, text, raw_text FROM segments "
                "WHERE call_id=? ORDER BY t0",
                (call_id,),
            ).fetchall()
            finds = db.execute(
                "SELECT finding_id, segment_id, segment_no, speaker, rule_id, category, severity, matched_text, "
                "span_start, span_end, t0, t1, explanation, source, score, withdrawn_at, withdrawn_reason "
                "FROM findings WHERE call_id=? "
                "ORDER BY t1",
                (call_id,),
            ).fetchall()
            acts = db.execute(
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

        return await self._read(read)

    async def audit_entries(self, call_id: str) -> list[dict[str, Any]]:
        """The call's audit entries (its start and end, segments, findings and their fate, actions)."""

        def read(db: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = db.execute(
                f"{audit.ENTRY_ROWS} WHERE a.call_id = :c "
                "OR (a.kind IN ('call_started', 'call_ended') AND a.ref_id = :c) "
                "OR (a.kind = 'segment' AND a.ref_id IN (SELECT CAST(segment_id AS TEXT) FROM segments "
                "WHERE call_id = :c)) "
                "OR (a.kind IN ('finding', 'finding_confirmed', 'finding_withdrawn') AND a.ref_id IN "
                "(SELECT CAST(finding_id AS TEXT) FROM findings WHERE call_id = :c)) "
                "OR (a.kind = 'action' AND a.ref_id IN (SELECT CAST(action_id AS TEXT) FROM actions "
                "WHERE call_id = :c)) OR (a.kind = 'unmask' AND a.ref_id = :c) ORDER BY a.audit_id",
                {"c": call_id},
            ).fetchall()
            return [audit.exported(r, _hash_before(db, r["audit_id"])) for r in rows]

        return await self._read(read)

    async def verify_chain(self) -> tuple[bool, int]:
        """Recompute every hash; returns (intact, entries checked)."""

        def read(db: sqlite3.Connection) -> tuple[bool, int]:
            rows = db.cursor()
            rows.row_factory = None  # plain tuples: a million rows
            return audit.verify(rows.execute(f"{audit.ENTRY_ROWS} ORDER BY a.audit_id"))

        return await self._read(read)

    async def verify_report(self, call_id: str | None = None) -> dict[str, Any]:
        """The whole chain recomputed: {"ok", "entries", "breaks"}; with ``call_id`` only that call's entries
        count (the walk still runs over the whole chain, each hash needs the one before)."""

        def read(db: sqlite3.Connection) -> dict[str, Any]:
            rows = db.cursor()
            rows.row_factory = None
            n, breaks = audit.check(rows.execute(f"{audit.ENTRY_ROWS} ORDER BY a.audit_id"))
            breaks += _finding_breaks(db)
            if call_id is not None:
                ids = {r[0] for r in db.execute(_CALL_ENTRY_IDS, {"c": call_id})}
                breaks, n = [b for b in breaks if b["audit_id"] in ids], len(ids)
            last = db.execute("SELECT audit_id, hash FROM audit ORDER BY audit_id DESC LIMIT 1").fetchone()
            return {"ok": not breaks, "entries": n, "breaks": breaks, "last_id": last[0] if last else 0}

        return await self._read(read)

    async def audit_hash_at(self, audit_id: int) -> str | None:
        def read(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT hash FROM audit WHERE audit_id = ?", (audit_id,)).fetchone()
            return audit.as_hex(row[0]) if row else None

        return await self._read(read)

    # ------------------------------------------------------------------ people (issue 18)

    async def auth_configured(self) -> bool:
        """Any user or API token: auth is then in force."""

        def read(db: sqlite3.Connection) -> bool:
            return db.execute("SELECT 1 FROM users UNION ALL SELECT 1 FROM api_tokens LIMIT 1").fetchone() is not None

        return await self._read(read)

    async def add_user(self, name: str, role: str, agent_id: str | None, password_hash: str, actor: str) -> int:
        """Raises ValueError when the name is taken."""

        def write(db: sqlite3.Connection) -> int:
            if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise ValueError(f"a user named {name!r} already exists")
            cur = db.execute(
                "INSERT INTO users(name, role, agent_id, password_hash, created_at) VALUES (?,?,?,?,?)",
                (name, role, agent_id, password_hash, time.time()),
            )
            self._audit(
                "user_added", name, {"user": name, "role": role, "agent_id": agent_id, "actor": actor}, actor=actor
            )
            return int(cur.lastrowid or 0)

        return await self._write(write)

    async def set_user_disabled(self, name: str, disabled: bool, actor: str) -> bool:
        """False when there is no such user. Disabling ends the user's sessions."""

        def write(db: sqlite3.Connection) -> bool:
            cur = db.execute("UPDATE users SET disabled = ? WHERE name = ?", (int(disabled), name))
            if not cur.rowcount:
                return False
            if disabled:
                db.execute("DELETE FROM sessions WHERE user_name = ?", (name,))
            kind = "user_disabled" if disabled else "user_enabled"
            self._audit(kind, name, {"user": name, "actor": actor}, actor=actor)
            return True

        return await self._write(write)

    async def get_user(self, name: str) -> dict[str, Any] | None:
        def read(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
            return dict(row) if row else None

        return await self._read(read)

    async def list_users(self) -> list[dict[str, Any]]:
        def read(db: sqlite3.Connection) -> list[dict[str, Any]]:
            users = db.execute("SELECT name, role, agent_id, disabled, created_at FROM users ORDER BY name")
            tokens = db.execute(
                "SELECT 'token:' || label AS name, role, agent_id, disabled, created_at FROM api_tokens ORDER BY label"
            )
            return [dict(r) for r in [*users.fetchall(), *tokens.fetchall()]]

        return await self._read(read)

    async def add_token(self, label: str, role: str, agent_id: str | None, token_hash: str, actor: str) -> int:
        def write(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "INSERT INTO api_tokens(label, role, agent_id, token_hash, created_at, created_by) "
                "VALUES (?,?,?,?,?,?)",
                (label, role, agent_id, token_hash, time.time(), actor),
            )
            payload = {"label": label, "role": role, "agent_id": agent_id, "actor": actor}
            self._audit("token_created", label, payload, actor=actor)
            return int(cur.lastrowid or 0)

        return await self._write(write)

    async def find_token(self, token_hash: str) -> dict[str, Any] | None:
        def read(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute(
                "SELECT label, role, agent_id FROM api_tokens WHERE token_hash = ? AND disabled = 0", (token_hash,)
            ).fetchone()
            return dict(row) if row else None

        return await self._read(read)

    async def create_session(self, session_hash: str, user: str, ip: str | None) -> float:
        now = time.time()

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO sessions(session_hash, user_name, created_at, last_seen, ip) VALUES (?,?,?,?,?)",
                (session_hash, user, now, now, ip),
            )

        await self._write(write)
        return now

    async def session_user(self, session_hash: str) -> dict[str, Any] | None:
        """The session with its (enabled) user's role and agent id; None when gone or the user is disabled."""

        def read(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute(
                "SELECT s.created_at, s.last_seen, u.name, u.role, u.agent_id FROM sessions s "
                "JOIN users u ON u.name = s.user_name AND u.disabled = 0 WHERE s.session_hash = ?",
                (session_hash,),
            ).fetchone()
            return dict(row) if row else None

        return await self._read(read)

    async def touch_session(self, session_hash: str) -> None:
        await self._write(
            lambda db: db.execute(
                "UPDATE sessions SET last_seen = ? WHERE session_hash = ?", (time.time(), session_hash)
            )
        )

    async def end_session(self, session_hash: str) -> None:
        await self._write(lambda db: db.execute("DELETE FROM sessions WHERE session_hash = ?", (session_hash,)))

    # ------------------------------------------------------------------ collector screen (issue 18)

    async def finding_owner(self, finding_id: int) -> dict[str, Any] | None:
        """The call a finding belongs to and that call's agent: who may acknowledge the warning."""

        def read(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute(
                "SELECT f.finding_id, f.call_id, f.rule_id, f.category, f.severity, f.withdrawn_at, c.agent_id "
                "FROM findings f JOIN calls c ON c.call_id = f.call_id WHERE f.finding_id = ?",
                (finding_id,),
            ).fetchone()
            return dict(row) if row else None

        return await self._read(read)

    async def audit_refs(self, kind: str, call_id: str) -> dict[str, dict[str, Any]]:
        """ref_id -> {actor, created_at} of a call's audit entries of one kind (e.g. which warnings were acked)."""

        def read(db: sqlite3.Connection) -> dict[str, dict[str, Any]]:
            rows = db.execute(
                "SELECT ref_id, actor, created_at FROM audit WHERE kind = ? AND call_id = ? ORDER BY audit_id",
                (kind, call_id),
            ).fetchall()
            return {r["ref_id"]: {"actor": r["actor"], "created_at": r["created_at"]} for r in rows}

        return await self._read(read)

    async def search(
        self,
        query: str | None,
        *,
        speaker: str | None = None,
        category: str | None = None,
        limit: int = 50,
        **filters: Any,
    ) -> list[dict[str, Any]]:
        """One page of results (see search_page)."""
        page = await self.search_page(query, speaker=speaker, category=category, limit=limit, **filters)
        return page.results

    async def search_page(
        self,
        query: str | None,
        *,
        speaker: str | None = None,
        agent: str | None = None,
        category: str | None = None,
        severity: str | None = None,
        action: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> SearchPage:
        """Segments containing ``query`` (exactly first, then all its words), newest first, filtered.

        ``cursor`` is a previous page's ``next_cursor``; raises ValueError for one that is not."""
        f = Filters(speaker, agent, category, severity, action, since, until)
        levels = tiers(query, self._tokenize)
        after = Cursor.decode(cursor) if cursor else Cursor(0, MAX_ID)
        if not levels:
            return SearchPage([], None)
        return await self._read(lambda db: self._search(db, query or "", levels, f, limit, after))

    def _search(
        self, db: sqlite3.Connection, query: str, levels: list[Tier], f: Filters, limit: int, after: Cursor
    ) -> SearchPage:
        bounds = id_bounds(db, f.since, f.until)
        if bounds is None:
            return SearchPage([], None)
        found: list[tuple[int, int]] = []  # (tier, segment id), one more than a page when there is more
        for level in range(after.tier, len(levels)):
            hi = min(bounds[1], after.before_id - 1) if level == after.tier else bounds[1]
            drive = choose_drive(db, levels[level], f, bounds[0], hi)
            sql, args = page_sql(levels[level], f, bounds[0], hi, limit + 1 - len(found), drive)
            found += [(level, int(r[0])) for r in db.execute(sql, args)]
            if len(found) > limit:
                break
        page = found[:limit]
        more = Cursor(*page[-1]).encode() if len(found) > limit else None
        rows = _hydrate(db, [sid for _, sid in page])
        terms = [w for t in levels for w in t.required]
        return SearchPage([_result(rows[sid], levels[level].name, terms) for level, sid in page], more)


def _segment_insert(legacy_tokens: bool) -> str:
    # An archive from before the gram index has a NOT NULL jieba ``tokens`` column; nothing reads it now.
    extra = (", tokens", ", ''") if legacy_tokens else ("", "")
    return (
        "INSERT INTO segments(call_id, speaker, segment_no, t0, t1, raw_text, text, avg_logprob, created_at, "
        f"agent_id{extra[0]}) VALUES (?,?,?,?,?,?,?,?,?,(SELECT agent_id FROM calls WHERE call_id = ?){extra[1]})"
    )


def _run_script(db: sqlite3.Connection, script: str) -> None:
    # executescript would COMMIT the migration's transaction; run the statements one by one instead.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


# The audit ids of one call's entries (per-call verify).
_CALL_ENTRY_IDS = (
    "SELECT audit_id FROM audit WHERE call_id = :c "
    "OR (kind IN ('call_started', 'call_ended') AND ref_id = :c) "
    "OR (kind = 'segment' AND ref_id IN (SELECT CAST(segment_id AS TEXT) FROM segments WHERE call_id = :c)) "
    "OR (kind IN ('finding', 'finding_confirmed', 'finding_withdrawn') AND ref_id IN "
    "(SELECT CAST(finding_id AS TEXT) FROM findings WHERE call_id = :c)) "
    "OR (kind = 'action' AND ref_id IN (SELECT CAST(action_id AS TEXT) FROM actions WHERE call_id = :c))"
)


def _finding_breaks(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """A finding row must still say what its (hashed) audit entry says."""
    breaks = []
    rows = db.execute(
        "SELECT f.finding_id, f.call_id, f.rule_id, f.category, f.matched_text, a.audit_id, a.payload, "
        "(SELECT c.payload FROM audit c WHERE c.kind = 'finding_confirmed' AND c.ref_id = a.ref_id "
        "ORDER BY c.audit_id DESC LIMIT 1) AS confirmed "
        "FROM findings f LEFT JOIN audit a ON a.kind = 'finding' AND a.ref_id = CAST(f.finding_id AS TEXT)"
    )
    for finding_id, call_id, rule_id, category, matched, audit_id, payload, confirmed in rows:
        row = {"call_id": call_id, "rule_id": rule_id, "category": category, "matched_text": matched}
        if payload is not None and confirmed is not None and "matched_text" in (final := json.loads(confirmed)):
            # Confirmed by its final: the row quotes the final's words, which that (hashed) entry records.
            payload = json.dumps({**json.loads(payload), "matched_text": final["matched_text"]})
        if payload is None or json.loads(payload) != row:
            problem = f"finding {finding_id} differs from its audit entry" if payload else "finding has no entry"
            breaks.append({"audit_id": audit_id, "kind": "finding", "ref_id": str(finding_id), "problem": problem})
    return breaks


def _compact_audit_table(db: sqlite3.Connection) -> None:
    """Older archives declared payload/prev_hash NOT NULL; new entries leave them out. Old entries are
    copied verbatim and still verify."""
    log.info("archive migration: audit table to the compact layout")
    db.execute("ALTER TABLE audit RENAME TO audit_legacy")
    _run_script(db, TABLES)
    db.execute(
        "INSERT INTO audit(audit_id, kind, ref_id, payload, prev_hash, hash, created_at, call_id, actor, v) "
        "SELECT audit_id, kind, ref_id, payload, prev_hash, hash, created_at, call_id, actor, v FROM audit_legacy"
    )
    db.execute("DROP TABLE audit_legacy")


def _index_grams(db: sqlite3.Connection) -> None:
    """Index every existing segment's text (an archive from before the gram index)."""
    last, n = 0, 0
    while rows := db.execute(
        "SELECT segment_id, text FROM segments WHERE segment_id > ? ORDER BY segment_id LIMIT ?",
        (last, _MIGRATE_BATCH),
    ).fetchall():
        db.executemany(
            "INSERT INTO segments_grams(rowid, uni, bi) VALUES (?, ?, ?)", [(r[0], *grams(r[1])) for r in rows]
        )
        last, n = rows[-1][0], n + len(rows)
    if n:
        log.info("archive migration: indexed %d segments for substring search", n)


def _hash_before(db: sqlite3.Connection, audit_id: int) -> str:
    row = db.execute("SELECT hash FROM audit WHERE audit_id < ? ORDER BY audit_id DESC LIMIT 1", (audit_id,)).fetchone()
    return audit.as_hex(row[0]) if row else GENESIS


def _hydrate(db: sqlite3.Connection, ids: list[int]) -> dict[int, dict[str, Any]]:
    """The page's rows with their call's start and their findings' categories (two indexed look-ups)."""
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = {
        r["segment_id"]: dict(r)
        for r in db.execute(
            "SELECT s.segment_id, s.call_id, coalesce(s.agent_id, c.agent_id) AS agent_id, s.speaker, s.t0, s.t1, "
            "s.text, s.created_at, c.started_at FROM segments s JOIN calls c ON c.call_id = s.call_id "
            f"WHERE s.segment_id IN ({marks})",
            ids,
        )
    }
    for row in rows.values():
        row["categories"] = []
    for sid, category in db.execute(
        f"SELECT segment_id, category FROM findings WHERE segment_id IN ({marks}) ORDER BY finding_id", ids
    ):
        if category not in rows[sid]["categories"]:
            rows[sid]["categories"].append(category)
    return rows


def _result(row: dict[str, Any], match: str, terms: list[str]) -> dict[str, Any]:
    return {**row, "snippet": highlight(row["text"], terms), "match": match}


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


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
