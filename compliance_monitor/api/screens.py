"""REST for the collector panel and the auditor page: the disclosure checklist, acknowledging a warning, and a
call's readable report (HTML) carrying the audit chain's head and the call's verification.

Roles are declared in ``auth.ROUTE_ROLES`` like every route's; a collector is further limited to their own calls
here (a warning is acknowledged by the collector of its call only)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from compliance_monitor.api.auth import Principal, current, enforce
from compliance_monitor.api.deps import get_monitor
from compliance_monitor.messages import WarningAckedEvent, category_title
from compliance_monitor.monitor import Monitor
from compliance_monitor.privacy.mask import can_see_pii, mask_dict, mask_text
from compliance_monitor.resources import assets_dir

router = APIRouter(prefix="/api", dependencies=[Depends(enforce)])

MonitorDep = Annotated[Monitor, Depends(get_monitor)]
Who = Annotated[Principal, Depends(current)]

log = logging.getLogger(__name__)
ACK = "warning_ack"  # the audit kind of an acknowledged warning (ref_id: the finding id)

_templates = Environment(
    loader=FileSystemLoader(assets_dir()), autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True
)


# ---------------------------------------------------------------- collector panel


@router.get("/disclosure/checklist")
async def disclosure_checklist(monitor: MonitorDep, _: Who) -> dict[str, Any]:
    """What the collector must say early in a call, straight from the rule packs in force (omission rules):
    the panel ticks each item off as ``disclosure`` events arrive."""
    rules = monitor.services.rules.engine.omission_rules
    return {
        "rules": [
            {
                "rule_id": r.id,
                "category": r.category,
                "speaker": r.speaker,
                "within_s": r.within_s,
                "explanation": r.explanation.collector,
                "suggestion": r.suggestion,
                "items": [item.name for item in r.required],
            }
            for r in rules
        ]
    }


async def _own_finding(monitor: Monitor, finding_id: int, who: Principal) -> dict[str, Any]:
    owner = await monitor.services.archive.finding_owner(finding_id)
    if owner is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no warning {finding_id}")
    if who.role != "admin" and (who.agent_id is None or owner["agent_id"] != who.agent_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the collector of this call may acknowledge its warnings")
    return owner


@router.post("/warnings/{finding_id}/ack")
async def ack_warning(finding_id: int, monitor: MonitorDep, who: Who) -> dict[str, Any]:
    """The collector read the warning: recorded in the audit chain with their name (once; a repeat is a no-op)."""
    owner = await _own_finding(monitor, finding_id, who)
    archive, call_id = monitor.services.archive, owner["call_id"]
    earlier = (await archive.audit_refs(ACK, call_id)).get(str(finding_id))
    if earlier is not None:
        return {"finding_id": finding_id, "call_id": call_id, "acked_by": earlier["actor"], "already": True}
    payload = {"finding_id": finding_id, "rule_id": owner["rule_id"], "category": owner["category"]}
    await archive.record_audit(ACK, who.actor, payload, call_id=call_id, ref_id=finding_id)
    acked = WarningAckedEvent(call_id=call_id, agent_id=owner["agent_id"], finding_id=finding_id, acked_by=who.actor)
    try:  # supervisors' alert for the finding shows it was read; the ack itself is recorded whatever the bus does
        await monitor.services.bus.publish(acked)
    except Exception:
        log.exception("call %s: publishing the collector's acknowledgement of warning %s failed", call_id, finding_id)
    return {"finding_id": finding_id, "call_id": call_id, "acked_by": who.actor, "already": False}


@router.get("/calls/{call_id}/acks")
async def call_acks(call_id: str, monitor: MonitorDep, who: Who) -> dict[str, Any]:
    """Which of a call's warnings were acknowledged, and by whom (a reloaded panel shows them as read)."""
    archive = monitor.services.archive
    call = await archive.get_call(call_id)
    if call is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no call {call_id}")
    if who.role == "collector" and call["call"]["agent_id"] != who.agent_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a collector sees only their own calls")
    acks = await archive.audit_refs(ACK, call_id)
    return {"call_id": call_id, "acks": acks}


# ---------------------------------------------------------------- auditor report


def _marked(text: str, needles: list[str]) -> list[tuple[str, bool]]:
    """``text`` cut into (part, is_a_finding's_words) pieces, for <mark> in the report."""
    spans = []
    for needle in {n for n in needles if n}:
        start = text.find(needle)
        while start >= 0:
            spans.append((start, start + len(needle)))
            start = text.find(needle, start + len(needle))
    parts, cur = [], 0
    for a, b in sorted(spans):
        if a < cur:
            continue
        if a > cur:
            parts.append((text[cur:a], False))
        parts.append((text[a:b], True))
        cur = b
    if cur < len(text):
        parts.append((text[cur:], False))
    return parts


def _masked(payload: object) -> object:
    return mask_text(payload) if isinstance(payload, str) else payload


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "—"


def _offset(t: float | None) -> str:
    t = max(0, int(t or 0))
    return f"{t // 60:02d}:{t % 60:02d}"


@router.get("/calls/{call_id}/report.html", response_class=HTMLResponse)
async def call_report(call_id: str, monitor: MonitorDep, who: Who) -> HTMLResponse:
    """The call as a readable, printable evidence report: transcript with the findings marked, actions, audit
    entries, the chain's head hash and this call's chain verification. Masked for every role but admin."""
    archive = monitor.services.archive
    call = await archive.get_call(call_id)
    if call is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no call {call_id}")
    verification = await archive.verify_report(call_id)
    head = archive.audit_head()
    entries = await archive.audit_entries(call_id)
    raw = can_see_pii(who)
    if not raw:
        call = mask_dict(call)
        entries = [{**e, "payload": _masked(e["payload"])} for e in entries]
    findings_by_segment: dict[int, list[str]] = {}
    for f in call["findings"]:
        if f.get("segment_id") is not None and f.get("withdrawn_at") is None:
            findings_by_segment.setdefault(f["segment_id"], []).append(f["matched_text"])
    rules = monitor.services.rules.engine.rules
    html = _templates.get_template("report.html").render(
        call=call["call"],
        segments=[
            {**s, "parts": _marked(s["text"], findings_by_segment.get(s["segment_id"], []))} for s in call["segments"]
        ],
        findings=[{**f, "rule_source": getattr(rules.get(f["rule_id"]), "source", "")} for f in call["findings"]],
        actions=call["actions"],
        entries=entries,
        verification=verification,
        head=head,
        masked=not raw,
        reader=who.actor,
        generated=_when(time.time()),
        when=_when,
        offset=_offset,
        category_title=category_title,
    )
    await archive.record_audit("report", who.actor, {"role": who.role, "format": "html"}, call_id=call_id)
    return HTMLResponse(html)
