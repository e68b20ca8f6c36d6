"""Alerts: one per finding, with the state a supervisor gives it (acknowledged, assigned, resolved) and notes.

A finding is the alert; its actions (warn the collector, alert the supervisor, halt) are shown inside it. State and
notes live in two small tables beside the findings; every change is an audit entry with the person, written in the
same transaction as the change (``Archive._audit``), so the chain and the state never disagree.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

ALERT_STATUSES = ("open", "acknowledged", "assigned", "resolved")

ALERT_TABLES = """
CREATE TABLE IF NOT EXISTS alert_states (
    finding_id INTEGER PRIMARY KEY REFERENCES findings(finding_id), call_id TEXT NOT NULL,
    status TEXT NOT NULL, assignee TEXT, updated_at REAL NOT NULL, updated_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_notes (
    note_id INTEGER PRIMARY KEY, finding_id INTEGER NOT NULL REFERENCES findings(finding_id),
    author TEXT NOT NULL, text TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_notes_finding ON alert_notes(finding_id);
CREATE INDEX IF NOT EXISTS alert_states_status ON alert_states(status, finding_id)
"""

_ALERT_ROWS = (
    "SELECT f.finding_id AS alert_id, f.finding_id, f.call_id, c.agent_id, c.metadata AS call_metadata, "
    "f.segment_id, f.speaker, f.segment_no, f.rule_id, f.category, f.severity, f.matched_text, f.t0, f.t1, "
    "f.explanation, f.source, f.score, f.created_at, f.withdrawn_at, f.withdrawn_reason, "
    "COALESCE(s.status, 'open') AS status, s.assignee, s.updated_at, s.updated_by "
    "FROM findings f JOIN calls c ON c.call_id = f.call_id LEFT JOIN alert_states s ON s.finding_id = f.finding_id"
)


class AlertNotFound(LookupError):
    pass


class AlertArchive:
    """Mixed into ``Archive``: uses its writer (``_write``, ``_audit``, ``_now``) and readers (``_read``)."""

    _write: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]
    _read: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]
    _audit: Callable[..., int]
    _now: Callable[[], float]

    async def set_alert_state(
        self, finding_id: int, status: str, actor: str, assignee: str | None = None
    ) -> dict[str, Any]:
        """Acknowledge / assign / resolve (``status``); returns the alert. Raises AlertNotFound."""
        if status not in ALERT_STATUSES:
            raise ValueError(f"unknown alert status {status!r}")

        def write(db: sqlite3.Connection) -> None:
            call_id = _call_of(db, finding_id)
            current = db.execute("SELECT assignee FROM alert_states WHERE finding_id = ?", (finding_id,)).fetchone()
            keep = assignee if assignee is not None else (current["assignee"] if current else None)
            db.execute(
                "INSERT INTO alert_states(finding_id, call_id, status, assignee, updated_at, updated_by) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT(finding_id) DO UPDATE SET status = excluded.status, "
                "assignee = excluded.assignee, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                (finding_id, call_id, status, keep, self._now(), actor),
            )
            payload: dict[str, Any] = {"status": status, "actor": actor}
            if assignee is not None:
                payload["assignee"] = assignee
            self._audit(f"alert_{status}", finding_id, payload, call_id=call_id, actor=actor)

        await self._write(write)
        return await self._one_alert(finding_id)

    async def add_alert_note(self, finding_id: int, author: str, text: str) -> dict[str, Any]:
        def write(db: sqlite3.Connection) -> None:
            call_id = _call_of(db, finding_id)
            at = self._now()
            cur = db.execute(
                "INSERT INTO alert_notes(finding_id, author, text, created_at) VALUES (?,?,?,?)",
                (finding_id, author, text, at),
            )
            payload = {"note_id": int(cur.lastrowid or 0), "text": text, "actor": author}
            self._audit("alert_note", finding_id, payload, call_id=call_id, actor=author)

        await self._write(write)
        return await self._one_alert(finding_id)

    async def alert_call(self, finding_id: int) -> str | None:
        """The call a finding (alert) belongs to; None when there is no such finding."""

        def read(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT call_id FROM findings WHERE finding_id = ?", (finding_id,)).fetchone()
            return None if row is None else str(row["call_id"])

        found: str | None = await self._read(read)
        return found

    async def list_alerts(
        self,
        *,
        status: str | None = None,
        call_id: str | None = None,
        severity: str | None = None,
        withdrawn: bool = False,
        before: int | None = None,
        limit: int = 50,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Alerts newest first, and the ``before`` for the next page (None: no more)."""
        where: list[str] = []
        args: list[object] = []
        if status is not None:
            where.append("COALESCE(s.status, 'open') = ?")
            args.append(status)
        if call_id is not None:
            where.append("f.call_id = ?")
            args.append(call_id)
        if severity is not None:
            where.append("f.severity = ?")
            args.append(severity)
        if not withdrawn:
            where.append("f.withdrawn_at IS NULL")
        if before is not None:
            where.append("f.finding_id < ?")
            args.append(before)
        sql = f"{_ALERT_ROWS} {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY f.finding_id DESC LIMIT ?"

        def read(db: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = [dict(r) for r in db.execute(sql, (*args, limit + 1))]
            return _with_details(db, rows)

        rows = await self._read(read)
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1]["alert_id"] if more else None)

    async def _one_alert(self, finding_id: int) -> dict[str, Any]:
        def read(db: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = [dict(r) for r in db.execute(f"{_ALERT_ROWS} WHERE f.finding_id = ?", (finding_id,))]
            return _with_details(db, rows)

        rows = await self._read(read)
        if not rows:
            raise AlertNotFound(finding_id)
        found: dict[str, Any] = rows[0]
        return found


def _call_of(db: sqlite3.Connection, finding_id: int) -> str:
    row = db.execute("SELECT call_id FROM findings WHERE finding_id = ?", (finding_id,)).fetchone()
    if row is None:
        raise AlertNotFound(finding_id)
    return str(row["call_id"])


def _with_details(db: sqlite3.Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each alert's actions (what the policy and supervisors did about it) and notes, oldest first."""
    if not rows:
        return rows
    ids = [r["finding_id"] for r in rows]
    marks = ",".join("?" * len(ids))
    actions: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    notes: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    for a in db.execute(
        "SELECT action_id, finding_id, action, reason, actor, created_at AS ts, outcome, outcome_detail "
        f"FROM actions WHERE finding_id IN ({marks}) ORDER BY action_id",
        ids,
    ):
        actions[a["finding_id"]].append(dict(a))
    for n in db.execute(
        f"SELECT note_id, finding_id, author, text, created_at FROM alert_notes WHERE finding_id IN ({marks}) "
        "ORDER BY note_id",
        ids,
    ):
        notes[n["finding_id"]].append(dict(n))
    acks = {
        a["ref_id"]: {"actor": a["actor"], "created_at": a["created_at"]}
        for a in db.execute(
            f"SELECT ref_id, actor, created_at FROM audit WHERE kind = 'warning_ack' AND ref_id IN ({marks})",
            [str(i) for i in ids],
        )
    }
    for r in rows:
        r["collector_ack"] = acks.get(str(r["finding_id"]))  # the collector read the warning on their screen
        metadata = json.loads(r.pop("call_metadata") or "{}")
        r["team"] = metadata.get("team") if isinstance(metadata, dict) else None
        r["actions"] = actions[r["finding_id"]]
        r["notes"] = notes[r["finding_id"]]
    return rows
