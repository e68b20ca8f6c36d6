"""Auditor search: what a query means (ranking tiers, filters, cursor) and the SQL that answers a page.

Ranking: segments that contain the query text exactly (the phrase) come first, then segments that
contain all of its words but not the phrase; within a tier, newest first. Both orders follow an index
(FTS5 doclists and every filter index are in rowid order), so a page of 50 reads about 50 matches
instead of sorting them all, and a cursor is just (tier, last segment id).

Each page walks one of four orders, whichever has the fewest rows to read (choose_drive):
- text: the FTS5 gram index; other filters checked on the row (findings through their index), dates as
  a rowid range;
- findings: a category or severity index, which holds each finding's segment text, so the text is checked
  without reading a row;
- actions: an action index (actions carry their finding's segment id);
- segments: the agent index (when an agent's segments are fewer than the text's matches), or with
  neither text nor finding filters the rowid range.
"""

from __future__ import annotations

import base64
import binascii
import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from compliance_monitor.archive.textindex import match_expr, normalise_query, runs

MAX_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Filters:
    speaker: str | None = None
    agent: str | None = None
    category: str | None = None
    severity: str | None = None
    action: str | None = None
    since: float | None = None  # segment archive time (epoch seconds), inclusive
    until: float | None = None

    @property
    def on_findings(self) -> bool:
        return bool(self.category or self.severity or self.action)


@dataclass(frozen=True, slots=True)
class Tier:
    """One ranking tier: rows must contain every ``required`` text and not ``excluded``."""

    name: str  # "phrase" | "words" | "all" (no text)
    required: tuple[str, ...]
    excluded: str | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    tier: int
    before_id: int

    def encode(self) -> str:
        return base64.urlsafe_b64encode(f"{self.tier}:{self.before_id}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            tier, before = raw.split(":")
            return cls(int(tier), int(before))
        except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
            raise ValueError(f"bad cursor {token!r}") from exc


def tiers(query: str | None, tokenize: Callable[[str], Iterable[str]]) -> list[Tier]:
    """The ranking tiers of a query; [] when it has text but nothing searchable (punctuation only)."""
    q = normalise_query(query or "")
    if not q:
        return [Tier("all", ())]
    if not runs(q):
        return []
    out = [Tier("phrase", (q,))]
    words = _content_words(q, tokenize)
    if len(words) >= 2:
        out.append(Tier("words", tuple(words), excluded=q))
    return out


def _content_words(q: str, tokenize: Callable[[str], Iterable[str]]) -> list[str]:
    # Words of two or more characters; a search cut's sub-words (司法 in 司法拘留) add nothing.
    cut = [w for w in dict.fromkeys(tokenize(q)) if len(w) >= 2 and runs(w)]
    return [w for w in cut if not any(w != other and w in other for other in cut)]


# --------------------------------------------------------------------------- SQL


def _row_conditions(tier: Tier, f: Filters, text: str = "s.text") -> tuple[list[str], list[Any]]:
    """Conditions on the segment row ``s``: exact text (ASCII case folded, as LIKE does) and row filters."""
    where: list[str] = []
    args: list[Any] = []
    for needle in tier.required:
        where.append(f"{_contains(text, needle)} > 0")
        args.append(needle)
    if tier.excluded:
        where.append(f"{_contains(text, tier.excluded)} = 0")
        args.append(tier.excluded)
    for column, value in (("s.speaker", f.speaker), ("s.agent_id", f.agent)):
        if value:
            where.append(f"{column} = ?")
            args.append(value)
    if f.since is not None:
        where.append("s.created_at >= ?")
        args.append(f.since)
    if f.until is not None:
        where.append("s.created_at <= ?")
        args.append(f.until)
    return where, args


def _contains(text: str, needle: str) -> str:
    # lower() copies every row's text; only a needle with ASCII letters can need it (SQLite folds ASCII only)
    if re.search("[A-Za-z]", needle):
        return f"instr(lower({text}), lower(?))"
    return f"instr({text}, ?)"


def _finding_conditions(f: Filters) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    for column, value in (("f.category", f.category), ("f.severity", f.severity)):
        if value:
            where.append(f"{column} = ?")
            args.append(value)
    if f.action:
        where.append("EXISTS (SELECT 1 FROM actions a WHERE a.finding_id = f.finding_id AND a.action = ?)")
        args.append(f.action)
    return where, args


def page_sql(tier: Tier, f: Filters, lo: int, hi: int, limit: int, drive: str) -> tuple[str, list[Any]]:
    """SQL for up to ``limit`` segment ids of one tier with lo <= id <= hi, newest first, walking ``drive``
    ("text", "findings", "actions" or "segments"; see choose_drive)."""
    where, args = _row_conditions(tier, f)
    fwhere, fargs = _finding_conditions(f)
    if drive == "actions":  # the action filter drives; the rest of the finding filters on its finding
        fwhere, fargs = _finding_conditions(Filters(category=f.category, severity=f.severity))
        if fwhere:
            where.append(
                f"EXISTS (SELECT 1 FROM findings f WHERE f.finding_id = a.finding_id AND {' AND '.join(fwhere)})"
            )
            args = [*args, *fargs]
        sql = (
            "SELECT DISTINCT a.segment_id FROM actions a JOIN segments s ON s.segment_id = a.segment_id "
            f"WHERE {' AND '.join(['a.action = ?', 'a.segment_id BETWEEN ? AND ?', *where])} "
            "ORDER BY a.segment_id DESC LIMIT ?"
        )
        return sql, [f.action, lo, hi, *args, limit]
    if drive == "findings":
        # the text is checked on the finding's copy, inside the filter's index: no row read per finding
        where, args = _row_conditions(tier, f, text="f.segment_text")
        sql = (
            "SELECT DISTINCT f.segment_id FROM findings f JOIN segments s ON s.segment_id = f.segment_id "
            f"WHERE {' AND '.join([*fwhere, 'f.segment_id BETWEEN ? AND ?', *where])} "
            "ORDER BY f.segment_id DESC LIMIT ?"
        )
        return sql, [*fargs, lo, hi, *args, limit]
    if fwhere:  # finding filters checked per candidate, through findings_segment
        where.append(f"EXISTS (SELECT 1 FROM findings f WHERE f.segment_id = s.segment_id AND {' AND '.join(fwhere)})")
        args += fargs
    if drive == "text":
        sql = (
            "SELECT g.rowid FROM segments_grams g JOIN segments s ON s.segment_id = g.rowid "
            f"WHERE {' AND '.join(['segments_grams MATCH ?', 'g.rowid BETWEEN ? AND ?', *where])} "
            "ORDER BY g.rowid DESC LIMIT ?"
        )
        return sql, [match_expr(tier.required), lo, hi, *args, limit]
    sql = (
        f"SELECT s.segment_id FROM segments s WHERE {' AND '.join(['s.segment_id BETWEEN ? AND ?', *where])} "
        "ORDER BY s.segment_id DESC LIMIT ?"
    )
    return sql, [lo, hi, *args, limit]


def choose_drive(db: sqlite3.Connection, tier: Tier, f: Filters, lo: int, hi: int) -> str:
    """Walk whichever yields fewest rows to check: the text's matches, the findings, actions or agent's
    segments the filters name, else the segments. All are read newest first, so the choice changes the cost of a
    page, never its rows."""
    counts: dict[str, Callable[[], int]] = {}
    if match_expr(tier.required) is not None:
        counts["text"] = lambda: int(text_matches_at_most(db, tier) * _share_of_ids(db, lo, hi))
    if f.category or f.severity:
        counts["findings"] = lambda: _count_at_most(db, "findings", f, lo, hi)
    if f.action:
        counts["actions"] = lambda: _count_at_most(db, "actions", f, lo, hi)
    if f.agent and counts:
        counts["segments"] = lambda: _count_at_most(db, "segments", f, lo, hi)
    if not counts:
        return "segments"
    if len(counts) == 1:
        return next(iter(counts))
    return min(counts, key=lambda drive: counts[drive]() * ROW_COST[drive])


def _share_of_ids(db: sqlite3.Connection, lo: int, hi: int) -> float:
    """The fraction of the archive a date range's id range spans (document counts are archive-wide)."""
    first, last = _id_span(db)
    if first is None or (lo <= first and hi >= last):
        return 1.0
    return max(0.0, min(hi, last) - max(lo, first) + 1) / (last - first + 1)


def _id_span(db: sqlite3.Connection) -> tuple[int | None, int | None]:
    # two subqueries: min() and max() in one SELECT would scan the table instead of reading both ends
    row = db.execute("SELECT (SELECT min(segment_id) FROM segments), (SELECT max(segment_id) FROM segments)").fetchone()
    return row[0], row[1]


# Relative cost of one row walked: the text and action walks read each candidate's segment row, the
# findings walk reads only its index (which holds the segment text).
ROW_COST = {"text": 8, "actions": 8, "segments": 8, "findings": 1}


def text_matches_at_most(db: sqlite3.Connection, tier: Tier) -> int:
    """An upper bound on the tier's matches: the rarest gram's document count (fts5vocab)."""
    terms = {t.lower() for needle in tier.required for run in runs(needle) for t in _gram_terms(run)}
    counts = dict(
        db.execute(
            f"SELECT term, doc FROM segments_grams_vocab WHERE term IN ({','.join('?' * len(terms))})", list(terms)
        ).fetchall()
    )
    return min(int(counts.get(t, 0)) for t in terms)


def _gram_terms(run: str) -> list[str]:
    return [run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)]


def _count_at_most(db: sqlite3.Connection, table: str, f: Filters, lo: int, hi: int, cap: int = 50_000) -> int:
    """How many findings, actions or an agent's segments the filters name in the id range, counted on their
    index up to ``cap``."""
    columns = {
        "findings": (("category", f.category), ("severity", f.severity)),
        "actions": (("action", f.action),),
        "segments": (("agent_id", f.agent),),
    }[table]
    where = [f"{column} = ?" for column, value in columns if value]
    args = [value for _, value in columns if value]
    where.append("segment_id BETWEEN ? AND ?")
    sql = f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {' AND '.join(where)} LIMIT ?)"
    return int(db.execute(sql, [*args, lo, hi, cap]).fetchone()[0])


def id_bounds(db: sqlite3.Connection, since: float | None, until: float | None) -> tuple[int, int] | None:
    """The segment id range a date range covers; None when it covers none.

    Segment ids and archive times rise together (the writer never lets ``created_at`` go back), so a
    date range is a rowid range that every plan, FTS5 included, can seek to; rows are still checked.
    """
    lo, hi = 0, MAX_ID
    if since is not None:
        found = _edge_id(db, since, first=True)
        if found is None:
            return None
        lo = found
    if until is not None:
        found = _edge_id(db, until, first=False)
        if found is None:
            return None
        hi = found
    return (lo, hi) if lo <= hi else None


def _edge_id(db: sqlite3.Connection, t: float, *, first: bool) -> int | None:
    """Binary search over the rowid: the first id archived at or after ``t`` (first=False: the last at or
    before it)."""
    lo, hi = _id_span(db)
    if lo is None or hi is None:
        return None
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        # the nearest real row on the side we are moving from (ids can have gaps)
        probe = db.execute(
            "SELECT segment_id, created_at FROM segments WHERE segment_id >= ? ORDER BY segment_id LIMIT 1"
            if first
            else "SELECT segment_id, created_at FROM segments WHERE segment_id <= ? ORDER BY segment_id DESC LIMIT 1",
            (mid,),
        ).fetchone()
        ok = probe is not None and (probe[1] >= t if first else probe[1] <= t)
        if first:
            if ok:
                best, hi = int(probe[0]), mid - 1
            else:
                lo = mid + 1
        elif ok:
            best, lo = int(probe[0]), mid + 1
        else:
            hi = mid - 1
    return best
