"""Call-level rules: what must be said early in a call (omission), and when/how often a debtor may be called.

Omission: the collector must identify themselves, the company and the purpose within ``within_s`` of
the call. The tracker watches the in-scope speaker's finals; once stream time passes the deadline (or the
call ends first) it fires one finding naming what was never said.

Call start: calling hours are checked in the debtor's local time (``debtor_tz`` in the call's
metadata / Twilio customParameters, else the configured default) unless the call carries ``debtor_consent``
(the debtor agreed to this time), frequency against the archive's count of calls to the same ``debtor_id``
since local midnight.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from compliance_monitor.detect.pinyin import sounds
from compliance_monitor.detect.rulepack import RequiredItem, Rule
from compliance_monitor.messages import CallStarted, Finding, NormalisedText, Speaker


def _satisfied(item: RequiredItem, text: str) -> bool:
    lowered = text.lower()
    if any(k.lower() in lowered for k in item.keywords) or any(re.search(p, text, re.IGNORECASE) for p in item.regex):
        return True
    if item.pinyin:  # 逾期 heard as 于其, 贷款 as 带款: same sounds
        heard = sounds(text, item.pinyin)
        return any(sounds(k, item.pinyin) in heard for k in item.keywords)
    return False


@dataclass
class _Pending:
    rule: Rule
    missing: list[RequiredItem]
    fired: bool = False


@dataclass
class OmissionTracker:
    call_id: str
    rules: list[Rule]
    _pending: list[_Pending] = field(init=False)

    def __post_init__(self) -> None:
        self._pending = [_Pending(r, list(r.required)) for r in self.rules]

    def observe(self, speaker: Speaker, t0: float, text: NormalisedText) -> list[tuple[Rule, RequiredItem]]:
        """Cross off what ``text`` says; returns the items said for the first time (the collector's checklist)."""
        said = []
        for p in self._pending:
            if p.fired or p.rule.speaker not in ("both", speaker.value):
                continue
            if p.rule.within_s is not None and t0 > p.rule.within_s:
                continue  # said too late: still an omission
            now_said = [item for item in p.missing if _satisfied(item, text.text)]
            p.missing = [item for item in p.missing if item not in now_said]
            said += [(p.rule, item) for item in now_said]
        return said

    def due(self, now: float, *, call_over: bool = False) -> list[Finding]:
        """Findings for rules whose deadline has passed with items still unsaid (each fires once)."""
        out = []
        for p in self._pending:
            deadline = p.rule.within_s or 0.0
            if p.fired or not (call_over or now >= deadline):
                continue
            p.fired = True
            if p.missing:
                out.append(self._finding(p, min(now, deadline) if not call_over else now))
        return out

    def _finding(self, p: _Pending, t: float) -> Finding:
        missing = "、".join(item.name for item in p.missing)
        speaker = Speaker.AGENT if p.rule.speaker != "customer" else Speaker.CUSTOMER
        return Finding(
            call_id=self.call_id,
            speaker=speaker,
            segment_no=0,
            rule_id=p.rule.id,
            category=p.rule.category,
            severity=p.rule.severity,
            matched_text="",
            span=(0, 0),
            t0=0.0,
            t1=t,
            explanation=f"{p.rule.explanation.supervisor}（未说明：{missing}）",
            collector_explanation=f"{p.rule.explanation.collector}（未说明：{missing}）",
            action_hint=p.rule.action,
            rule_source=p.rule.source,
        )


def debtor_info(started: CallStarted, default_tz: str) -> tuple[str | None, ZoneInfo]:
    """(debtor id, debtor time zone) from the call's metadata or the bridge's custom parameters."""
    params = started.metadata.get("custom_parameters")
    sources: list[dict[str, Any]] = [started.metadata, params if isinstance(params, dict) else {}]
    debtor_id = next((str(s["debtor_id"]) for s in sources if s.get("debtor_id")), None)
    tz_name = next((str(s["debtor_tz"]) for s in sources if s.get("debtor_tz")), default_tz)
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo(default_tz)
    return debtor_id, tz


_YES = {"1", "true", "yes", "y", "on"}


def debtor_consented(started: CallStarted) -> bool:
    """Whether the call says the debtor agreed to be called outside the hours (``debtor_consent`` in the metadata or
    the bridge's custom parameters): GB/T 45251—2025 and the banking guideline both allow it."""
    sources: list[dict[str, Any]] = [started.metadata, started.metadata.get("custom_parameters") or {}]
    return any(str(s.get("debtor_consent", "")).strip().lower() in _YES for s in sources)


def local_midnight(wall_time: float, tz: ZoneInfo) -> float:
    local = dt.datetime.fromtimestamp(wall_time, tz)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def check_call_start(rules: list[Rule], started: CallStarted, tz: ZoneInfo, calls_today: int | None) -> list[Finding]:
    local = dt.datetime.fromtimestamp(started.wall_time, tz)
    consented = debtor_consented(started)
    out = []
    for rule in rules:
        reason = None
        outside = rule.calling_hours and not _within(local.time(), rule.calling_hours.start, rule.calling_hours.end)
        if rule.calling_hours and outside and not consented:
            reason = f"当地时间 {local:%H:%M}（{tz.key}）不在 {rule.calling_hours.start}–{rule.calling_hours.end} 内"
        elif rule.max_calls_per_day and calls_today is not None and calls_today > rule.max_calls_per_day:
            reason = f"今日第 {calls_today} 次呼叫，超过 {rule.max_calls_per_day} 次"
        if reason:
            out.append(
                Finding(
                    call_id=started.call_id,
                    speaker=Speaker.AGENT,
                    segment_no=0,
                    rule_id=rule.id,
                    category=rule.category,
                    severity=rule.severity,
                    matched_text="",
                    span=(0, 0),
                    t0=0.0,
                    t1=0.0,
                    explanation=f"{rule.explanation.supervisor}：{reason}",
                    collector_explanation=f"{rule.explanation.collector}：{reason}",
                    action_hint=rule.action,
                    rule_source=rule.source,
                )
            )
    return out


def _within(now: dt.time, start: str, end: str) -> bool:
    a, b = dt.time.fromisoformat(start), dt.time.fromisoformat(end)
    return a <= now < b if a <= b else (now >= a or now < b)  # windows may wrap midnight
