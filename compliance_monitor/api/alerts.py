"""REST for alerts (one per finding, its actions inside it): list, acknowledge, assign, resolve, notes.

Each change is archived with an audit entry naming the person (``Principal.actor``) and published as an
``alert_updated`` event, so every open console shows it. Non-admins get personal numbers masked.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel, Field

from compliance_monitor.api.auth import Principal, current, enforce
from compliance_monitor.api.deps import get_monitor
from compliance_monitor.archive.alerts import ALERT_STATUSES, AlertNotFound
from compliance_monitor.messages import AlertUpdatedEvent, Severity
from compliance_monitor.monitor import Monitor
from compliance_monitor.privacy.mask import can_see_pii, mask_dict

# Roles: auth.ROUTE_ROLES ("/api/alerts..."); ``enforce`` checks them for each request.
router = APIRouter(prefix="/api/alerts", dependencies=[Depends(enforce)])

MonitorDep = Annotated[Monitor, Depends(get_monitor)]
Who = Annotated[Principal, Depends(current)]


class AssignRequest(BaseModel):
    assignee: str = Field(min_length=1, max_length=100)


class NoteRequest(BaseModel):
    text: str = Field(min_length=1, max_length=2000)


def _shown(alert: dict[str, Any], who: Principal) -> dict[str, Any]:
    return alert if can_see_pii(who) else mask_dict(alert)


@router.get("")
async def list_alerts(
    monitor: MonitorDep,
    who: Who,
    status_: Annotated[str | None, Query(alias="status", max_length=20)] = None,
    call: Annotated[str | None, Query(max_length=200)] = None,
    severity: Severity | None = None,
    withdrawn: bool = False,
    before: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Alerts newest first; ``next_before`` fetches the next page (null: no more). Withdrawn findings (the final
    transcript did not bear them out) only with ``withdrawn=true``."""
    if status_ is not None and status_ not in ALERT_STATUSES:
        raise HTTPException(422, f"status must be one of {', '.join(ALERT_STATUSES)}")
    alerts, next_before = await monitor.services.archive.list_alerts(
        status=status_,
        call_id=call,
        severity=severity.value if severity else None,
        withdrawn=withdrawn,
        before=before,
        limit=limit,
    )
    return {"alerts": [_shown(a, who) for a in alerts], "next_before": next_before}


@router.post("/{alert_id}/ack")
async def acknowledge(alert_id: int, monitor: MonitorDep, who: Who) -> dict[str, Any]:
    return await _change(monitor, who, alert_id, "acknowledged")


@router.post("/{alert_id}/assign")
async def assign(alert_id: int, body: AssignRequest, monitor: MonitorDep, who: Who) -> dict[str, Any]:
    return await _change(monitor, who, alert_id, "assigned", assignee=body.assignee.strip())


@router.post("/{alert_id}/resolve")
async def resolve(alert_id: int, monitor: MonitorDep, who: Who) -> dict[str, Any]:
    return await _change(monitor, who, alert_id, "resolved")


@router.post("/{alert_id}/notes")
async def add_note(alert_id: int, body: NoteRequest, monitor: MonitorDep, who: Who) -> dict[str, Any]:
    text = body.text.strip()
    if not text:
        raise HTTPException(422, "a note needs some text")
    try:
        alert = await monitor.services.archive.add_alert_note(alert_id, who.actor, text)
    except AlertNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no alert {alert_id}") from exc
    await _publish(monitor, alert, "note", who)
    return _shown(alert, who)


async def _change(
    monitor: Monitor, who: Principal, alert_id: int, new_status: str, assignee: str | None = None
) -> dict[str, Any]:
    try:
        alert = await monitor.services.archive.set_alert_state(alert_id, new_status, who.actor, assignee)
    except AlertNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no alert {alert_id}") from exc
    await _publish(monitor, alert, new_status, who)
    return _shown(alert, who)


async def _publish(monitor: Monitor, alert: dict[str, Any], change: str, who: Principal) -> None:
    # The bus carries masked text only (no reader of the bus is an admin by design).
    event = AlertUpdatedEvent(
        call_id=alert["call_id"], alert_id=alert["alert_id"], change=change, actor=who.actor, alert=mask_dict(alert)
    )
    await monitor.services.bus.publish(event)
