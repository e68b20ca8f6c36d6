"""REST: calls, transcripts, halt, search, evidence export, rules."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field, TypeAdapter

from compliance_monitor.api.auth import Principal, current, enforce
from compliance_monitor.api.deps import get_monitor
from compliance_monitor.archive.sqlite import highlight
from compliance_monitor.detect.rulepack import RulePackError
from compliance_monitor.messages import Event, Outcome, Severity
from compliance_monitor.monitor import Monitor
from compliance_monitor.privacy.mask import can_see_pii, digit_of, mask_dict, mask_text

# Every route's roles are declared once, in auth.ROUTE_ROLES; ``enforce`` checks them for each request.
router = APIRouter(prefix="/api", dependencies=[Depends(enforce)])

MonitorDep = Annotated[Monitor, Depends(get_monitor)]


# The caller ``enforce`` admitted (roles: auth.ROUTE_ROLES). The three names say what each route needs.
Who = Annotated[Principal, Depends(current)]
Supervisor = Who
Auditor = Who
Admin = Who
Unmasker = Who


class UnmaskRequest(BaseModel):
    segment_id: int | None = None
    finding_id: int | None = None
    reason: str = Field(min_length=1, max_length=500)


class HaltRequest(BaseModel):
    reason: str = Field("halted by supervisor", max_length=500)
    finding_id: int | None = Field(None, description="the finding whose recommended halt this confirms")


@router.get("/health")
async def health(monitor: MonitorDep) -> dict[str, Any]:
    svc = monitor.services
    return {
        "status": "ok",
        "live_calls": monitor.live_count,
        "asr_device": svc.asr.device,
        "rules": svc.rules.engine.rule_count,
        "rules_generation": svc.rules.generation,
    }


@router.get("/stats")
async def stats(monitor: MonitorDep, _: Auditor) -> dict[str, Any]:
    return {
        "asr": monitor.services.asr.stats.as_dict(),
        "live_calls": monitor.live_count,
        "events_published": monitor.services.bus.published,
        "bridges": monitor.bridge_stats.as_dict(),
    }


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(monitor: MonitorDep, _: Auditor) -> str:
    """The bridge counters in Prometheus' text format."""
    b = monitor.bridge_stats
    lines = [
        "# TYPE cm_live_calls gauge",
        f"cm_live_calls {monitor.live_count}",
        "# TYPE cm_bridge_connections_total counter",
        f"cm_bridge_connections_total {b.connections}",
        "# TYPE cm_bridge_calls_started_total counter",
        f"cm_bridge_calls_started_total {b.calls_started}",
        "# TYPE cm_bridge_rejected_total counter",
        *(f'cm_bridge_rejected_total{{reason="{reason}"}} {n}' for reason, n in sorted(b.rejected.items())),
        "# TYPE cm_bridge_bytes_total counter",
        f"cm_bridge_bytes_total {b.bytes_in}",
        "# TYPE cm_bridge_frames_dropped_total counter",
        f"cm_bridge_frames_dropped_total {b.frames_dropped}",
        "# TYPE cm_bridge_gap_fill_seconds_total counter",
        f"cm_bridge_gap_fill_seconds_total {b.gap_fill_s:.3f}",
        "# TYPE cm_calls_without_speech_total counter",
        f'cm_calls_without_speech_total{{content="no_audio"}} {b.calls_without_audio}',
        f'cm_calls_without_speech_total{{content="no_speech"}} {b.calls_without_speech}',
        "# TYPE cm_calls_unmonitored_total counter",  # alert on any increase: a call went on without the monitor
        f"cm_calls_unmonitored_total {b.calls_unmonitored}",
    ]
    return "\n".join(lines) + "\n"


@router.get("/events/schema")
async def event_schema() -> dict[str, Any]:
    return TypeAdapter(Event).json_schema()


@router.get("/calls")
async def list_calls(
    monitor: MonitorDep,
    who: Auditor,
    status: Literal["live", "ended", "all"] = "all",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    calls = await monitor.services.archive.list_calls(status, limit)
    return {"calls": calls if can_see_pii(who) else [mask_dict(c) for c in calls]}


@router.get("/calls/{call_id}")
async def get_call(call_id: str, monitor: MonitorDep, who: Auditor) -> dict[str, Any]:
    call = await monitor.services.archive.get_call(call_id)
    if call is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no call {call_id}")
    call = _with_rule_sources(call, monitor.services.rules.engine.rules)
    return call if can_see_pii(who) else mask_dict(call)


@router.post("/calls/{call_id}/unmask")
async def unmask(call_id: str, body: UnmaskRequest, monitor: MonitorDep, who: Unmasker) -> dict[str, Any]:
    """One segment or finding of a call unmasked, for a stated reason; the act is audited with the person."""
    if (body.segment_id is None) == (body.finding_id is None):
        raise HTTPException(422, "give exactly one of segment_id, finding_id")
    if not body.reason.strip():
        raise HTTPException(422, "a reason is required")
    archive = monitor.services.archive
    call = await archive.get_call(call_id)
    if call is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no call {call_id}")
    table, key, ref = ("segments", "segment_id", body.segment_id)
    if body.finding_id is not None:
        table, key, ref = ("findings", "finding_id", body.finding_id)
    item = next((row for row in call[table] if row[key] == ref), None)
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"call {call_id} has no {key} {ref}")
    actor = getattr(who, "user", None) or who.role
    await archive.record_audit("unmask", actor, {key: ref, "reason": body.reason.strip()}, call_id=call_id)
    return {"call_id": call_id, key: ref, "item": item}


def _with_rule_sources(call: dict[str, Any], rules: dict[str, Any]) -> dict[str, Any]:
    """The archive keeps a finding's rule id; the document and clause it enforces come from the rule in force."""
    for finding in call.get("findings") or []:
        rule = rules.get(finding.get("rule_id"))
        finding.setdefault("rule_source", rule.source if rule is not None else "")
    return call


@router.post("/calls/{call_id}/halt", status_code=status.HTTP_202_ACCEPTED)
async def halt_call(call_id: str, body: HaltRequest, monitor: MonitorDep, who: Supervisor) -> dict[str, str]:
    """Ends the phone call through its bridge; ``outcome`` says whether it did (done / failed / not_supported)."""
    if call_id not in monitor.calls:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"call {call_id} is not live")
    if body.finding_id is not None and await monitor.services.archive.alert_call(body.finding_id) != call_id:
        raise HTTPException(422, f"finding {body.finding_id} is not one of call {call_id}'s")
    # the action row and its audit entry name the person
    outcome = await monitor.halt(call_id, body.reason, who.actor, body.finding_id)
    if outcome is None:
        return {"call_id": call_id, "status": "already_halting"}
    return {"call_id": call_id, "status": "halted" if outcome is Outcome.DONE else "not_halted", "outcome": outcome}


@router.get("/calls/{call_id}/export")
async def export_call(call_id: str, monitor: MonitorDep, who: Auditor) -> JSONResponse:
    archive = monitor.services.archive
    call = await archive.get_call(call_id)
    if call is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no call {call_id}")
    intact, checked = await archive.verify_chain()
    entries = await archive.audit_entries(call_id)
    raw = can_see_pii(who)
    if not raw:  # the chain is verified over the raw bodies (audit_chain); shown masked, payload_masked says so
        call = mask_dict(call)
        entries = [_masked_entry(e) for e in entries]
    bundle = {
        **call,
        "pii_masked": not raw,
        "audit": entries,
        "audit_chain": {"intact": intact, "entries_checked": checked},
        "exported_at": time.time(),
        "exported_by": who.actor,
    }
    await archive.record_audit("export", who.actor, {"role": who.role}, call_id=call_id)
    return JSONResponse(bundle, headers={"Content-Disposition": f'attachment; filename="call-{call_id}.json"'})


def _masked_entry(entry: dict[str, Any]) -> dict[str, Any]:
    payload = entry.get("payload")
    masked = mask_text(payload) if isinstance(payload, str) else payload
    return {**entry, "payload": masked, "payload_masked": masked != payload}


def _digit_count(term: str) -> int:
    return sum(1 for ch in term if digit_of(ch) is not None)


def _masked_results(results: list[dict[str, Any]], q: str | None) -> list[dict[str, Any]]:
    """Results a non-admin may see: text and snippet masked; a hit only inside a masked number is dropped."""
    terms = [t for t in {(q or "").strip(), *(q or "").split()} if t]
    shown = []
    for row in results:
        masked = mask_text(row["text"])
        if masked == row["text"]:
            shown.append(row)
            continue
        if any(_digit_count(t) >= 3 and t not in masked for t in terms):
            continue  # the query matched personal digits: finding the call would disclose them
        shown.append({**mask_dict(row), "text": masked, "snippet": highlight(masked, terms)})
    return shown


def _epoch(value: str | None, *, end_of_day: bool) -> float | None:
    """Epoch seconds, or an ISO 8601 date/time (UTC unless it says otherwise); a bare date ``to`` covers its day."""
    if value is None or not value.strip():
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise HTTPException(422, f"not a time: {value!r} (epoch seconds or ISO 8601)") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if end_of_day and len(value.strip()) == 10:  # YYYY-MM-DD
        when += timedelta(days=1) - timedelta(microseconds=1)
    return when.timestamp()


@router.get("/search")
async def search(
    monitor: MonitorDep,
    who: Auditor,
    q: Annotated[str | None, Query(max_length=200)] = None,
    speaker: Literal["agent", "customer"] | None = None,
    category: Annotated[str | None, Query(max_length=100)] = None,
    severity: Severity | None = None,
    agent: Annotated[str | None, Query(max_length=100)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    from_: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    to: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> dict[str, Any]:
    """Segments containing ``q`` (exact text first, then all its words), newest first; ``q`` may be left out
    when a filter is given. ``next_cursor`` fetches the page after this one (null: no more)."""
    since, until = _epoch(from_, end_of_day=False), _epoch(to, end_of_day=True)
    filtered = any((speaker, category, severity, agent, action)) or since is not None or until is not None
    if not (q and q.strip()) and not filtered:
        raise HTTPException(422, "give a query (q) or at least one filter")
    try:
        page = await monitor.services.archive.search_page(
            q,
            speaker=speaker,
            agent=agent,
            category=category,
            severity=severity.value if severity else None,
            action=action,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )
    except ValueError as exc:  # a cursor this archive never issued
        raise HTTPException(422, str(exc)) from exc
    asked = {"q": q, "speaker": speaker, "category": category, "severity": severity, "agent": agent}
    asked |= {"action": action, "from": from_, "to": to, "cursor": cursor}
    await monitor.services.archive.record_audit("search", who.actor, {k: v for k, v in asked.items() if v is not None})
    results = page.results if can_see_pii(who) else _masked_results(page.results, q)
    return {"query": q, "results": results, "next_cursor": page.next_cursor}


@router.get("/rules")
async def list_rules(monitor: MonitorDep, _: Auditor) -> dict[str, Any]:
    engine = monitor.services.rules.engine
    return {
        "generation": monitor.services.rules.generation,
        "packs": [
            {
                "pack": p.pack,
                "version": p.version,
                "language": p.language,
                "regimes": {k: v.model_dump(mode="json") for k, v in p.regimes.items()},
                "regime": engine.regime if engine.regime in p.regimes else p.regime,
                "rules": [
                    r.model_dump(mode="json", exclude={"examples"}) | {"in_force": engine.rules.get(r.id) is r}
                    for r in p.rules
                ],
            }
            for p in engine.packs
        ],
    }


@router.post("/rules/reload")
async def reload_rules(monitor: MonitorDep, who: Admin) -> dict[str, Any]:
    archive = monitor.services.archive
    try:
        engine = monitor.services.rules.reload()
    except RulePackError as exc:
        await archive.record_audit("rules_reload", who.actor, {"ok": False, "errors": len(exc.errors)})
        raise HTTPException(
            422,
            {"message": "rule pack rejected; the running rules stay in force", "errors": exc.errors},
        ) from exc
    generation = monitor.services.rules.generation
    await archive.record_audit("rules_reload", who.actor, {"ok": True, "generation": generation})
    return {"generation": generation, "rules": engine.rule_count}
