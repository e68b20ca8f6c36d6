"""Personal numbers masked by role: ID cards, bank cards, phone numbers — as digits or spoken numerals.

Where masking happens (个人信息保护法: least exposure):

- The rule engine sees the raw text; masking starts where the detect stage ends. ``CallSession._publish``
  (and the monitor's own events) pass every event through ``mask_event``, so the bus, every console
  websocket and the Redis stream only ever carry masked text. No reader of the bus is an admin by design.
- The archive keeps the raw evidence (segments, ``matched_text``, audit payloads): admins and the
  unmask endpoint need it, and the audit chain hashes what is stored. Every read path (REST call detail,
  export, search results and snippets, audit entries in exports) masks by the reader's role
  (``can_see_pii``). Masking on read rather than in the audit payload keeps one raw copy of the evidence
  and leaves the chain verifiable by ``archive.verify_chain`` (whose result the export reports).
- Audit: payloads are stored raw and masked on read, so the chain still hashes the evidence itself and
  segment entries (rebuilt from the segment row, ``archive.audit.entry_body``) need no second copy. A
  non-admin export shows masked payloads (``payload_masked``) beside hashes computed over the raw bodies:
  the chain's integrity is the server's ``audit_chain`` verdict; recomputing the hashes outside needs an
  admin export (or ``verify_chain`` on the archive). Unmasking one item is itself an ``unmask`` entry.
- Search: the index stays over raw text (admins search by number); for everyone else a hit on a segment
  with a personal number is dropped when a query term of 3+ digits is not in its masked text, so a masked
  number cannot be probed digit by digit (nor its call found by it); kept hits are masked, snippet too.

A span keeps its first ``KEEP_HEAD`` and last ``KEEP_TAIL`` digits; every other digit character becomes
``*``. Separators (spaces, dashes) and the characters themselves are kept, so the masked text has the
same length as the original and finding spans and highlights stay aligned: ``110***********1234``,
``幺三八****八零零零``.

Detected (``find_pii``): a run of digit characters (0-9, full-width digits, 零〇洞幺一二两三…九, and X / 叉 /
艾克斯 as an ID's check character) with at most two separator characters between digits, read as one number:
- an 18-character window that is a valid 居民身份证 (check character and birth date),
- a 16–19 digit window passing Luhn (bank card), a 11 digit ``1[3-9]…`` window (mobile),
- conservatively, any other run of 12+ digits (an account read out, a misheard ID) and 10–12 digit
  runs starting with 0 (landlines with area code).
幺 heard as 要/腰/妖/邀 inside a long number is read as 1, as the normaliser reads it for the rules.
Amounts (5000元, 一百二十万), dates (2024年3月5日) and times (10:30) are never long enough runs.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from compliance_monitor.detect.pii import valid_bank_card, valid_id_card, valid_mobile
from compliance_monitor.text.normalise import repair_misheard_yao, repair_spoken_yao

KEEP_HEAD = 3
KEEP_TAIL = 4
MASK_CHAR = "*"
MIN_LONG_RUN = 12  # any run this long is masked even if it validates as nothing

_SPOKEN = {"零": 0, "〇": 0, "洞": 0, "幺": 1, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4}
_SPOKEN |= {"五": 5, "六": 6, "七": 7, "八": 8, "九": 9, "兩": 2}
_SPOKEN |= dict(zip("壹贰貳叁參肆伍陆陸柒捌玖", (1, 2, 2, 3, 3, 4, 5, 6, 6, 7, 8, 9), strict=True))  # financial forms
_SEPARATORS = frozenset(" \t-–—、,，.·/")
_MAX_GAP = 2
_YAO = frozenset("要腰妖邀")  # 幺 as ASR hears it
_CHECK_X = ("X", "x", "叉", "艾克斯", "爱克斯")

# String fields of events/rows that never carry spoken content: ids, enums, names of rules.
_NEVER_MASKED = frozenset(
    {
        "call_id",
        "agent_id",
        "type",
        "rule_id",
        "category",
        "severity",
        "speaker",
        "source",
        "action",
        "outcome",
        "hash",
        "prev_hash",
        "kind",
        "ref_id",
        "actor",
        "bridge",
        "status",
        "match",
        "rule_source",
    }
)
# Fields that carry what was said (or text built from it): masked in dicts from the archive.
TEXT_FIELDS = frozenset(
    {"text", "raw_text", "matched_text", "snippet", "reason", "detail", "explanation", "message", "payload"}
)


@dataclass(frozen=True)
class PiiSpan:
    start: int  # offsets into the original text, end exclusive
    end: int
    kind: str  # id_card / bank_card / mobile / landline / long_number
    positions: tuple[int, ...]  # original offsets of the span's digit characters, in order


class _HasRole(Protocol):
    @property
    def role(self) -> str: ...


def can_see_pii(principal: _HasRole | None) -> bool:
    """Only an admin reads personal numbers unmasked (everyone else unmasks one item, with a reason)."""
    return principal is not None and principal.role == "admin"


def digit_of(ch: str) -> str | None:
    if ch in _SPOKEN:
        return str(_SPOKEN[ch])
    if ch.isdigit():
        value = unicodedata.digit(ch, None)
        return None if value is None else str(value)
    return None


def _runs(text: str) -> list[tuple[str, list[int]]]:
    """Digit runs of ``text``: (digits, original offset of each digit); an X may end a run (ID check char)."""
    runs: list[tuple[str, list[int]]] = []
    digits: list[str] = []
    positions: list[int] = []
    gap = 0

    def close() -> None:
        if digits:
            runs.append(("".join(digits), list(positions)))
        digits.clear()
        positions.clear()

    i = 0
    while i < len(text):
        ch, width = text[i], 1
        d = digit_of(ch)
        if d is None and len(digits) == 17 and not gap:  # an ID's check character: X, read 叉 / 艾克斯
            width = next((len(x) for x in _CHECK_X if text.startswith(x, i)), 0)
            d = "X" if width else None
            width = width or 1
        if d is not None:
            if digits and digits[-1] == "X":
                close()
            digits.append(d)
            positions.append(i)
            gap = 0
        elif digits and ch in _SEPARATORS and gap < _MAX_GAP:
            gap += 1
        else:
            close()
            gap = 0
        i += width
    close()
    return runs


def _typed_windows(digits: str) -> list[tuple[int, int, str]]:
    """Valid ID / card / mobile windows in a run, leftmost first, not overlapping."""
    found: list[tuple[int, int, str]] = []
    i = 0
    while i < len(digits):
        hit = _window_at(digits, i)
        if hit is None:
            i += 1
            continue
        found.append((i, hit[0], hit[1]))
        i = hit[0]
    return found


def _window_at(digits: str, i: int) -> tuple[int, str] | None:
    # A window must fit in the run: a slice past its end is shorter, and a 16-digit card read as "19 digits"
    # would end past the run's last position.
    def fits(n: int) -> bool:
        return i + n <= len(digits)

    if fits(18) and valid_id_card(digits[i : i + 18]):
        return i + 18, "id_card"
    for n in (19, 18, 17, 16):
        if fits(n) and valid_bank_card(digits[i : i + n]):
            return i + n, "bank_card"
    if fits(11) and valid_mobile(digits[i : i + 11]):
        return i + 11, "mobile"
    return None


def _run_spans(digits: str, positions: list[int]) -> list[PiiSpan]:
    spans = [
        PiiSpan(positions[a], positions[b - 1] + 1, kind, tuple(positions[a:b]))
        for a, b, kind in _typed_windows(digits)
    ]
    covered = sum(len(s.positions) for s in spans)
    if covered == len(digits):
        return spans
    whole = PiiSpan(positions[0], positions[-1] + 1, "long_number", tuple(positions))
    if len(digits) >= MIN_LONG_RUN:
        return [whole]  # conservatively the whole run: what was not recognised may still be a number
    if 10 <= len(digits) <= 12 and digits.startswith("0"):
        return [PiiSpan(whole.start, whole.end, "landline", whole.positions)]
    return spans


def _yao_repaired(text: str) -> str:
    """幺 misheard as 要/腰/妖/邀 inside a number read out, put back as the normaliser does; same length."""
    return repair_misheard_yao(repair_spoken_yao(text))


def find_pii(text: str) -> list[PiiSpan]:
    """The personal numbers in ``text``, with offsets into ``text`` itself (no normalisation needed)."""
    spans: list[PiiSpan] = []
    for digits, positions in _runs(_yao_repaired(text)):
        if len(digits) >= 10:
            spans += _run_spans(digits, positions)
    return spans


def mask_text(text: str) -> str:
    """``text`` with each personal number's middle digits starred; same length."""
    if not text or sum(1 for ch in text if digit_of(ch) is not None or ch in _YAO) < 10:
        return text  # fast path: most segments carry no long number
    chars = list(text)
    for span in find_pii(text):
        for pos in span.positions[KEEP_HEAD : len(span.positions) - KEEP_TAIL]:
            chars[pos] = MASK_CHAR
    return "".join(chars)


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return mask_dict(value)
    if isinstance(value, list):
        return [_mask_value(v) for v in value]
    return value


def mask_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an archive row / payload with every string field (but ids and enums) masked, recursively."""
    return {k: v if k in _NEVER_MASKED else _mask_value(v) for k, v in row.items()}


E = TypeVar("E", bound=BaseModel)


def mask_event(event: E) -> E:
    """The event with its spoken-content string fields masked (the same object when nothing changes)."""
    changes = {
        name: masked
        for name, value in event
        if name not in _NEVER_MASKED
        and isinstance(value, str | Mapping | list)
        and (masked := _mask_value(value)) != value
    }
    return event.model_copy(update=changes) if changes else event
