"""The audit chain: each entry's hash commits to the entry before it and to what happened.

Compact storage: the hash is 32 raw bytes, the previous hash is not stored (it is the entry before),
and a segment entry stores no payload: its body is rebuilt from the segment row, so the chain now
also catches an edited transcript row, and the archive no longer keeps every transcript twice.
Entries written before compaction (hex hashes, stored prev_hash and payload) verify as they were.

Version 2 entries (column ``v`` = 2, issue 18) hash the whole row: audit_id, kind, ref_id, call_id, actor,
created_at, the body and the previous hash, so editing any stored column, or deleting a row, breaks the link.
Older entries (``v`` NULL) verify with the old formula; the chain runs through both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

GENESIS = "0" * 64

# Rebuild a segment entry's body from its row (payload NULL); LEFT JOIN keeps entries whose row is gone.
ENTRY_ROWS = (
    "SELECT a.audit_id, a.kind, a.ref_id, a.payload, a.prev_hash, a.hash, a.created_at, "
    "s.call_id AS s_call_id, s.speaker AS s_speaker, s.t0 AS s_t0, s.t1 AS s_t1, s.text AS s_text, "
    "a.call_id, a.actor, a.v "
    "FROM audit a LEFT JOIN segments s ON a.payload IS NULL AND a.kind = 'segment' "
    "AND s.segment_id = CAST(a.ref_id AS INTEGER)"
)


def body_json(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, sort_keys=True, default=str)


def segment_payload(call_id: str, speaker: str, t0: float, t1: float, text: str) -> dict[str, Any]:
    return {"call_id": call_id, "speaker": speaker, "t0": t0, "t1": t1, "text": text}


def entry_hash(prev: str, kind: str, ref_id: object, body: str) -> str:
    return hashlib.sha256(f"{prev}|{kind}|{ref_id}|{body}".encode()).hexdigest()


def entry_hash_v2(
    prev: str,
    audit_id: int,
    kind: str,
    ref_id: object,
    call_id: str | None,
    actor: str | None,
    created_at: float,
    body: str,
) -> str:
    """Every stored column of the row (JSON array: no separator can be smuggled into a field)."""
    fields = [2, prev, audit_id, kind, str(ref_id), call_id, actor, created_at, body]
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode()).hexdigest()


def as_hex(stored: bytes | str) -> str:
    return stored.hex() if isinstance(stored, bytes) else stored


_quote = json.JSONEncoder(ensure_ascii=False).encode


def _segment_body(call_id: str, speaker: str, t0: float, t1: float, text: str) -> str:
    # body_json(segment_payload(...)) spelled out (keys in sorted order): a month's chain is a million of these
    head = f'{{"call_id": {_quote(call_id)}, "speaker": {_quote(speaker)}, '
    return f'{head}"t0": {t0!r}, "t1": {t1!r}, "text": {_quote(text)}}}'


def entry_body(row: Mapping[str, Any]) -> str | None:
    """The hashed body of an ``ENTRY_ROWS`` row; None when a payload-less entry's segment is gone."""
    if row["payload"] is not None:
        return str(row["payload"])
    if row["s_text"] is None:
        return None
    return _segment_body(row["s_call_id"], row["s_speaker"], row["s_t0"], row["s_t1"], row["s_text"])


def check(rows: Iterable[tuple[Any, ...]], limit: int = 100) -> tuple[int, list[dict[str, Any]]]:
    """Walk ``ENTRY_ROWS`` tuples in order recomputing each hash.

    Returns (entries read, breaks): each break names the audit_id and what differs. The walk goes on past a
    break (from the stored hash) so that one edit is reported once, and a per-call check can pick its own."""
    prev, n, last_id = GENESIS, 0, 0
    breaks: list[dict[str, Any]] = []
    sha256 = hashlib.sha256
    for row in rows:
        audit_id, kind, ref_id, payload, prev_hash, stored, at, call_id, speaker, t0, t1, text = row[:12]
        entry_call, actor, version = row[12:15] if len(row) > 12 else (None, None, None)
        n += 1
        digest = stored.hex() if isinstance(stored, bytes) else stored
        problem = None
        if payload is None:
            if text is None:
                problem = "the segment row this entry covers is gone"
            else:
                payload = _segment_body(call_id, speaker, t0, t1, text)
        if problem is None and prev_hash is not None and prev_hash != prev:
            problem = "stored prev_hash differs from the entry before"
        if problem is None:
            if version == 2:
                want = entry_hash_v2(prev, audit_id, kind, ref_id, entry_call, actor, at, payload)
            else:
                want = sha256(f"{prev}|{kind}|{ref_id}|{payload}".encode()).hexdigest()
            if digest != want:
                gap = version == 2 and audit_id != last_id + 1 and last_id != 0
                problem = (
                    f"hash differs: an entry before it is missing (previous is {last_id})"
                    if gap
                    else "hash differs: a column of this entry or the segment/finding it covers was changed"
                )
        if problem is not None and len(breaks) < limit:
            breaks.append({"audit_id": audit_id, "kind": kind, "ref_id": ref_id, "problem": problem, "position": n - 1})
        prev, last_id = digest, audit_id
    return n, breaks


def verify(rows: Iterable[tuple[Any, ...]]) -> tuple[bool, int]:
    """(intact, entries verified before the first break)."""
    n, breaks = check(rows, limit=1)
    if not breaks:
        return True, n
    return False, int(breaks[0]["position"])


def exported(row: Mapping[str, Any], prev: str) -> dict[str, Any]:
    """An entry as the evidence export shows it: payload, prev_hash and hash spelled out in full."""
    return {
        "audit_id": row["audit_id"],
        "kind": row["kind"],
        "ref_id": row["ref_id"],
        "payload": entry_body(row),
        "prev_hash": row["prev_hash"] if row["prev_hash"] is not None else prev,
        "hash": as_hex(row["hash"]),
        "created_at": row["created_at"],
        "call_id": row["call_id"],
        "actor": row["actor"],
    }
