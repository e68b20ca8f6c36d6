"""Logins: ``POST /api/auth/login`` (session cookie + bearer token), logout, ``/me``, websocket tickets."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from typing import Annotated, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel, Field

from compliance_monitor.api.auth import (
    COOKIE,
    TICKET_PROTOCOL,
    WS_PROTOCOL,
    Principal,
    auth_on,
    current,
    enforce,
    hash_secret,
    issue_ticket,
    new_secret,
)
from compliance_monitor.api.deps import get_monitor

router = APIRouter(prefix="/api/auth", dependencies=[Depends(enforce)])
Who = Annotated[Principal, Depends(current)]

HASHER = PasswordHasher()
_DUMMY_HASH = HASHER.hash("not a password")  # unknown users cost a verify too: same time, same answer
LOGIN_FAILED = "wrong username or password"


class Login(BaseModel):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1000)


class _Limiter:
    """Failed logins per key (username, address) in a sliding window."""

    def __init__(self) -> None:
        self.failures: dict[str, deque[float]] = defaultdict(deque)

    def blocked(self, keys: list[str], limit: int, window_s: float) -> bool:
        now = time.monotonic()
        for key in keys:
            seen = self.failures[key]
            while seen and now - seen[0] > window_s:
                seen.popleft()
        return any(len(self.failures[k]) >= limit for k in keys)

    def fail(self, keys: list[str]) -> None:
        for key in keys:
            self.failures[key].append(time.monotonic())

    def clear(self, key: str) -> None:
        self.failures.pop(key, None)


def _limiter(request: Request) -> _Limiter:
    state = request.app.state
    if not hasattr(state, "login_limiter"):
        state.login_limiter = _Limiter()
    limiter: _Limiter = state.login_limiter
    return limiter


def _https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


def check_password(stored: str | None, password: str) -> bool:
    try:
        return HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


@router.post("/login")
async def login(body: Login, request: Request, response: Response) -> dict[str, Any]:
    monitor = get_monitor(request)
    archive, cfg = monitor.services.archive, monitor.services.settings.auth
    ip = request.client.host if request.client else "?"
    keys = [f"user:{body.username}", f"ip:{ip}"]
    limiter = _limiter(request)
    if limiter.blocked(keys, cfg.login_attempts, cfg.login_window_s):
        await archive.record_audit("login_failed", body.username, {"ip": ip, "why": "rate_limited"})
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, "too many failed logins, try again later")
    user = await archive.get_user(body.username)
    ok = check_password(user["password_hash"] if user else None, body.password)
    if not ok or user is None or user["disabled"]:
        limiter.fail(keys)
        await archive.record_audit("login_failed", body.username, {"ip": ip})
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, LOGIN_FAILED)
    limiter.clear(keys[0])
    session_id = new_secret()
    created = await archive.create_session(hash_secret(session_id), user["name"], ip)
    await archive.record_audit("login", user["name"], {"ip": ip, "role": user["role"]})
    expires_at = created + cfg.session_max_s
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=int(cfg.session_max_s),
        httponly=True,
        samesite="strict",
        secure=_https(request),
        path="/",
    )
    return {
        "token": session_id,
        "user": user["name"],
        "role": user["role"],
        "agent_id": user["agent_id"],
        "expires_at": expires_at,
    }


@router.post("/logout")
async def logout(request: Request, response: Response) -> dict[str, bool]:
    principal: Principal | None = getattr(request.state, "principal", None)
    header = request.headers.get("authorization", "")
    session_id = header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get(COOKIE)
    archive = get_monitor(request).services.archive
    if session_id and principal is not None and principal.via == "session":
        await archive.end_session(hash_secret(session_id))
        await archive.record_audit("logout", principal.actor, {})
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=_https(request))
    return {"logged_out": True}


@router.get("/me")
async def me(request: Request, who: Who) -> dict[str, Any]:
    """The caller: the UI reads this to know who is logged in (and a collector's agent id)."""
    return {
        "user": who.user,
        "role": who.role,
        "agent_id": who.agent_id,
        "via": who.via,
        "auth": await auth_on(request),
    }


@router.post("/ticket")
async def ticket(request: Request, who: Who) -> dict[str, Any]:
    """A single-use websocket ticket (30 s): offer subprotocols ``["cm.v1", "cm.ticket.<ticket>"]``."""
    value, expires_at = issue_ticket(request, who)
    return {"ticket": value, "expires_at": expires_at, "protocols": [WS_PROTOCOL, f"{TICKET_PROTOCOL}{value}"]}
