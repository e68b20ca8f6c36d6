"""The audit chain: each entry's hash commits to the entry before it and to what happened.

Compact storage: the hash is 32 raw bytes, the previous hash is not stored (it is the entry before),
and a segment entry stores no payload: its body is rebuilt from the segment row, so the chain now
also catches an edited transcript row, and the archive no longer keeps every transcript twice.
Entries written before compaction (hex hashes, stored prev_hash and payload) verify as they were.
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
    "s.call_id AS s_call_id, s.speaker AS s_speaker, s.t0 AS s_t0, s.t1 AS s_t1, s.text AS s_text "
    "FROM audit a LEFT JOIN segments s ON a.payload IS NULL AND a.kind = 'segment' "
    "AND s.segment_id = CAST(a.ref_id AS INTEGER)"
)


def body_json(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, sort_keys=True, default=str)


def segment_payload(call_id: str, speaker: str, t0: float, t1: float, text: str) -> dict[str, Any]:
    return {"call_id": call_id, "speaker": speaker, "t0": t0, "t1": t1, "text": text}


def entry_hash(prev: str, kind: str, ref_id: object, body: str) -> str:
    return hashlib.sha256(f"{prev}|{kind}|{ref_id}|{body}".encode()).hexdigest()


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


def verify(rows: Iterable[tuple[Any, ...]]) -> tuple[bool, int]:
    """Walk ``ENTRY_ROWS`` tuples in order recomputing each hash; (intact, entries verified before the first break)."""
    prev, n = GENESIS, 0
    sha256 = hashlib.sha256
    for _id, kind, ref_id, payload, prev_hash, stored, _at, call_id, speaker, t0, t1, text in rows:
        if payload is None:
            if text is None:
                return False, n
            payload = _segment_body(call_id, speaker, t0, t1, text)
        if prev_hash is not None and prev_hash != prev:
            return False, n
        digest = stored.hex() if isinstance(stored, bytes) else stored
        if digest != sha256(f"{prev}|{kind}|{ref_id}|{payload}".encode()).hexdigest():
            return False, n
        prev, n = digest, n + 1
    return True, n


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
    }
