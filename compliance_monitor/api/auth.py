"""Bearer tokens → roles. Empty token table = auth off (allowed only on a loopback host, see config)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import HTTPException, Request, WebSocket, status

from compliance_monitor.config import Settings

ROLES = {"collector", "supervisor", "auditor", "admin", "bridge"}


@dataclass(frozen=True)
class Principal:
    role: str
    agent_id: str | None = None
    token_used: bool = True

    def can(self, *roles: str) -> bool:
        return self.role == "admin" or self.role in roles


def _token_from(conn: Request | WebSocket) -> str | None:
    header = conn.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return conn.query_params.get("token")


def principal_for(conn: Request | WebSocket, settings: Settings) -> Principal | None:
    """None when a token is required and missing or wrong."""
    if not settings.auth.tokens:
        return Principal("admin", None, token_used=False)
    grant = settings.auth.tokens.get(_token_from(conn) or "")
    if grant is None:
        return None
    role, _, agent_id = grant.partition(":")
    return Principal(role, agent_id or None)


def require(conn: Request, settings: Settings, *roles: str) -> Principal:
    principal = principal_for(conn, settings)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or unknown bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    if not principal.can(*roles):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {principal.role!r} may not do this")
    return principal


def bridge_allowed(ws: WebSocket, settings: Settings) -> bool:
    """May this connection create calls? With auth on: only the bridge token, or a token whose role is bridge."""
    expected = settings.auth.bridge_token
    if expected is None:
        principal = principal_for(ws, settings)
        return principal is not None and principal.can("bridge")
    given = _token_from(ws)
    return given is not None and hmac.compare_digest(given.encode(), expected.get_secret_value().encode())
