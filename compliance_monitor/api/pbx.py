"""REST for the PBX side: what an AudioSocket UUID is (which call, which leg, which collector and debtor).

The dialplan registers a UUID before ``AudioSocket()`` connects, with ``CURL()`` (form body), or an ARI
application does it with JSON. Bridge, supervisor and admin tokens may register.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field, ValidationError, field_validator

from compliance_monitor.api.auth import enforce, pbx_address_allowed
from compliance_monitor.ingest.audiosocket import AudioSocketRegistry, CallInfo, normalise_uuid
from compliance_monitor.ingest.base import ProtocolError, check_agent_id, check_call_id
from compliance_monitor.messages import Speaker

router = APIRouter(prefix="/api/audiosocket", dependencies=[Depends(enforce)])

Short = Annotated[str, Field(max_length=64)]


class Registration(BaseModel):
    call_id: str | None = Field(None, description="the call's id in the archive (default: the UUID)")
    agent_id: str | None = None
    speaker: Speaker = Field(Speaker.CUSTOMER, description="the leg this socket carries: agent or customer")
    customer_number: Short | None = None
    debtor_id: Short | None = None
    debtor_tz: Short | None = Field(None, description="IANA zone for calling-hours rules, e.g. Asia/Shanghai")
    legs: list[Speaker] = Field(
        default_factory=list,
        description="every leg of the call, each on its own socket under this call_id (form body: 'agent,customer')",
        max_length=2,
    )

    @field_validator("legs", mode="before")
    @classmethod
    def _legs(cls, value: Any) -> Any:
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @field_validator("call_id")
    @classmethod
    def _call_id(cls, value: str | None) -> str | None:
        return None if value in (None, "") else _checked(check_call_id, value)

    @field_validator("agent_id")
    @classmethod
    def _agent_id(cls, value: str | None) -> str | None:
        return _checked(check_agent_id, value)

    def info(self) -> CallInfo:
        extra = {"customer_number": self.customer_number, "debtor_id": self.debtor_id, "debtor_tz": self.debtor_tz}
        metadata = {k: v for k, v in extra.items() if v}
        return CallInfo(self.call_id, self.agent_id, self.speaker, metadata, tuple(self.legs))


def _checked(check: Any, value: Any) -> Any:
    try:
        return check(value)
    except ProtocolError as exc:
        raise ValueError(exc.message) from None


def _registry(request: Request) -> AudioSocketRegistry:
    registry: AudioSocketRegistry = request.app.state.audiosocket_registry
    return registry


def _uuid(text: str) -> str:
    try:
        return normalise_uuid(text)
    except ValueError:
        raise HTTPException(422, f"{text[:40]!r} is not a UUID") from None


async def _body(request: Request) -> dict[str, Any]:
    """JSON (ARI applications) or a form body (the dialplan's CURL(url,a=1&b=2))."""
    raw = await request.body()
    if len(raw) > 4096:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "registration body over 4 KB")
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise HTTPException(422, "body is not JSON") from None
        if not isinstance(data, dict):
            raise HTTPException(422, "body must be a JSON object")
        return data
    return dict(parse_qsl(raw.decode("utf-8", "replace")))


@router.post("/calls/{key}", status_code=status.HTTP_201_CREATED)
async def register_call(key: str, request: Request) -> dict[str, Any]:
    pbx_address_allowed(request)
    try:
        registration = Registration.model_validate(await _body(request))
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False)) from None
    uuid = _uuid(key)
    info = registration.info()
    _registry(request).register(uuid, info)
    return {
        "uuid": uuid,
        "call_id": info.call_id or uuid,
        "speaker": info.speaker,
        "agent_id": info.agent_id,
        "legs": list(dict.fromkeys((*info.legs, info.speaker))),
    }


@router.delete("/calls/{key}")
async def forget_call(key: str, request: Request) -> dict[str, Any]:
    pbx_address_allowed(request)
    uuid = _uuid(key)
    if not _registry(request).forget(uuid):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no registration for {uuid}")
    return {"uuid": uuid, "forgotten": True}
