"""Who is calling, and may they: people (sessions), machine tokens, and the one table of route roles.

Auth is in force as soon as a user or an API token exists (archive) or ``settings.auth.tokens`` is set; with none
it is off (config allows that only on a loopback bind) and every request acts as ``anonymous (auth off)``.

Credentials come from the ``Authorization: Bearer`` header or the session cookie, never from a URL. A websocket
also accepts a single-use ticket (``POST /api/auth/ticket``) offered as a subprotocol ``cm.ticket.<ticket>``
next to ``cm.v1``; the server accepts with ``cm.v1``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request, WebSocket, status

from compliance_monitor.config import Settings

ROLES = {"collector", "supervisor", "auditor", "admin", "bridge"}
USER_ROLES = ("collector", "supervisor", "auditor", "admin")
COOKIE = "cm_session"
TICKET_PROTOCOL = "cm.ticket."
WS_PROTOCOL = "cm.v1"
AUTH_OFF_USER = "anonymous (auth off)"

PUBLIC = "public"  # anyone, no credentials
PAGE = "page"  # a UI page: anyone with auth off, else a valid session (redirect to /login otherwise)
AUTHENTICATED = "authenticated"  # any valid credentials
Grant = tuple[str, ...] | str

# The single declaration of who may use each route: (method or "WS", path) -> roles, PUBLIC, PAGE or
# AUTHENTICATED. Admin may use every role-restricted route. tests/test_route_roles.py walks app.routes and fails
# on a route missing here. A collector's feed is further limited to their own agent id (console.agent_feed).
_READERS = ("supervisor", "auditor")
ROUTE_ROLES: dict[tuple[str, str], Grant] = {
    ("GET", "/openapi.json"): PUBLIC,  # FastAPI's schema pages: the API's shape, no data
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/api/health"): PUBLIC,
    ("GET", "/api/events/schema"): PUBLIC,
    ("GET", "/api/stats"): _READERS,
    ("GET", "/api/metrics"): _READERS,
    ("GET", "/api/calls"): _READERS,
    ("GET", "/api/calls/{call_id}"): _READERS,
    ("POST", "/api/calls/{call_id}/halt"): ("supervisor",),
    ("POST", "/api/calls/{call_id}/unmask"): ("auditor",),  # and admin; audited with the reason
    ("GET", "/api/calls/{call_id}/export"): _READERS,
    ("GET", "/api/search"): _READERS,
    ("GET", "/api/rules"): _READERS,
    ("POST", "/api/rules/reload"): ("admin",),
    ("POST", "/api/audiosocket/calls/{key}"): ("bridge", "supervisor"),
    ("DELETE", "/api/audiosocket/calls/{key}"): ("bridge", "supervisor"),
    ("POST", "/api/auth/login"): PUBLIC,
    ("POST", "/api/auth/logout"): PUBLIC,
    ("GET", "/api/auth/me"): AUTHENTICATED,
    ("POST", "/api/auth/ticket"): ("collector", "supervisor", "auditor"),
    # Collector panel and auditor page (api/screens.py). A collector acknowledges only their own call's warnings.
    ("GET", "/api/disclosure/checklist"): ("collector", "supervisor", "auditor"),
    ("POST", "/api/warnings/{finding_id}/ack"): ("collector",),
    ("GET", "/api/calls/{call_id}/acks"): ("collector", "supervisor", "auditor"),
    ("GET", "/api/calls/{call_id}/report.html"): ("auditor",),  # and admin; audited with the reader
    ("GET", "/login"): PUBLIC,
    ("GET", "/"): PAGE,
    ("GET", "/agent"): PAGE,
    ("GET", "/search"): PAGE,
    ("WS", "/ws/console"): _READERS,
    ("WS", "/ws/agents/{agent_id}"): ("collector", "supervisor"),
    ("WS", "/bridge/twilio"): ("bridge",),
    ("WS", "/bridge/pcm"): ("bridge",),
    ("WS", "/bridge/freeswitch"): ("bridge",),  # bridge token, or HTTP Basic with it as the password
    # Alerts (api/alerts.py): supervisors act on them, auditors read them.
    ("GET", "/api/alerts"): _READERS,
    ("POST", "/api/alerts/{alert_id}/ack"): ("supervisor",),
    ("POST", "/api/alerts/{alert_id}/assign"): ("supervisor",),
    ("POST", "/api/alerts/{alert_id}/resolve"): ("supervisor",),
    ("POST", "/api/alerts/{alert_id}/notes"): ("supervisor",),
}


@dataclass(frozen=True)
class Principal:
    """``user``: the username, ``token:<label>`` for a machine token, or ``anonymous (auth off)``.
    ``via``: session | token | config-token | ticket | auth-off."""

    user: str
    role: str
    agent_id: str | None = None
    via: str = "session"

    @property
    def actor(self) -> str:
        """What audit entries and halts are signed with."""
        return self.user

    def can(self, *roles: str) -> bool:
        return self.role == "admin" or self.role in roles

    def allowed(self, grant: Grant) -> bool:
        if grant in (PUBLIC, PAGE, AUTHENTICATED):
            return True
        return self.can(*grant)


AUTH_OFF = Principal(AUTH_OFF_USER, "admin", None, "auth-off")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def _bearer(conn: Request | WebSocket) -> str | None:
    header = conn.headers.get("authorization", "")
    return header[7:].strip() or None if header.lower().startswith("bearer ") else None


def _archive(conn: Request | WebSocket) -> Any:
    return conn.app.state.monitor.services.archive


def _settings(conn: Request | WebSocket) -> Settings:
    settings: Settings = conn.app.state.monitor.services.settings
    return settings


async def auth_on(conn: Request | WebSocket) -> bool:
    return bool(_settings(conn).auth.tokens) or bool(await _archive(conn).auth_configured())


def _config_token(settings: Settings, given: str) -> Principal | None:
    """The env/config tokens (``CM_AUTH__TOKENS``, ``CM_AUTH__BRIDGE_TOKEN``): machine tokens, header only."""
    for token, grant in settings.auth.tokens.items():
        if hmac.compare_digest(token.encode(), given.encode()):
            role, _, agent_id = grant.partition(":")
            return Principal(
                f"token:config-{role}" + (f"-{agent_id}" if agent_id else ""), role, agent_id or None, "config-token"
            )
    bridge = settings.auth.bridge_token
    if bridge is not None and hmac.compare_digest(bridge.get_secret_value().encode(), given.encode()):
        return Principal("token:bridge", "bridge", None, "config-token")
    return None


async def session_principal(conn: Request | WebSocket, session_id: str) -> Principal | None:
    """A live session's user; an expired one (idle or absolute) is ended."""
    archive, cfg = _archive(conn), _settings(conn).auth
    key = hash_secret(session_id)
    row = await archive.session_user(key)
    if row is None:
        return None
    now = time.time()
    if now - row["last_seen"] > cfg.session_idle_s or now - row["created_at"] > cfg.session_max_s:
        await archive.end_session(key)
        return None
    if now - row["last_seen"] > 30:  # one write a half-minute, not one a request
        await archive.touch_session(key)
    return Principal(row["name"], row["role"], row["agent_id"], "session")


async def authenticate(conn: Request | WebSocket) -> Principal | None:
    """The caller, or None when auth is on and nothing valid was presented."""
    given = _bearer(conn)
    if given:
        found = _config_token(_settings(conn), given)
        if found is not None:
            return found
        row = await _archive(conn).find_token(hash_secret(given))
        if row is not None:
            return Principal(f"token:{row['label']}", row["role"], row["agent_id"], "token")
        return await session_principal(conn, given)  # the login response's token, sent as Bearer
    cookie = conn.cookies.get(COOKIE)
    if cookie:
        found = await session_principal(conn, cookie)
        if found is not None:
            return found
    if isinstance(conn, WebSocket):
        found = take_ticket(conn)
        if found is not None:
            return found
    return None if await auth_on(conn) else AUTH_OFF


# ---------------------------------------------------------------- websocket tickets (in memory, single use)

TICKET_TTL_S = 30.0


def issue_ticket(request: Request, principal: Principal) -> tuple[str, float]:
    tickets: dict[str, tuple[Principal, float]] = _tickets(request)
    now = time.monotonic()
    for key in [k for k, (_, exp) in tickets.items() if exp < now]:
        del tickets[key]
    ticket = new_secret()
    tickets[hash_secret(ticket)] = (
        Principal(principal.user, principal.role, principal.agent_id, "ticket"),
        now + TICKET_TTL_S,
    )
    return ticket, time.time() + TICKET_TTL_S


def offered_ticket(ws: WebSocket) -> str | None:
    for proto in ws.scope.get("subprotocols") or []:
        if proto.startswith(TICKET_PROTOCOL):
            return str(proto[len(TICKET_PROTOCOL) :])
    return None


def take_ticket(ws: WebSocket) -> Principal | None:
    ticket = offered_ticket(ws)
    if ticket is None:
        return None
    entry = _tickets(ws).pop(hash_secret(ticket), None)
    if entry is None or entry[1] < time.monotonic():
        return None
    return entry[0]


def accept_protocol(ws: WebSocket) -> str | None:
    """The subprotocol to accept with: ``cm.v1`` when the client offered it (ticket clients do)."""
    return WS_PROTOCOL if WS_PROTOCOL in (ws.scope.get("subprotocols") or []) else None


def _tickets(conn: Request | WebSocket) -> dict[str, tuple[Principal, float]]:
    state = conn.app.state
    if not hasattr(state, "ws_tickets"):
        state.ws_tickets = {}
    tickets: dict[str, tuple[Principal, float]] = state.ws_tickets
    return tickets


# ---------------------------------------------------------------- enforcement


def grant_for(method: str, path: str) -> Grant:
    grant = ROUTE_ROLES.get((method, path))
    if grant is None:  # a route nobody declared is refused, not open
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"no role declared for {method} {path}")
    return grant


async def enforce(request: Request) -> Principal | None:
    """Router dependency for every REST route: looks up the route's declared roles in ROUTE_ROLES."""
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    grant = grant_for(request.method, path)
    if grant == PUBLIC:
        principal = await authenticate(request)
    else:
        principal = await authenticate(request)
        if principal is None:
            if grant == PAGE:
                return None  # the page handler redirects to /login
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "login or a bearer token required", headers={"WWW-Authenticate": "Bearer"}
            )
        if not principal.allowed(grant):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {principal.role!r} may not do this")
    request.state.principal = principal
    return principal


def current(request: Request) -> Principal:
    """The principal ``enforce`` found (route handlers: ``who: Principal = Depends(current)``)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "login or a bearer token required")
    return principal


async def authorize_ws(ws: WebSocket, path: str) -> Principal | None:
    """None when refused (the caller closes with 1008): unauthenticated, or a role ROUTE_ROLES does not grant."""
    principal = await authenticate(ws)
    if principal is None or not principal.allowed(grant_for("WS", path)):
        return None
    return principal


def bridge_allowed(principal: Principal | None) -> bool:
    return principal is not None and principal.can("bridge")


def address_allowed(host: str | None, cidrs: list[str]) -> bool:
    """Is ``host`` (an IP) inside one of ``cidrs``? Unparseable hosts are not."""
    if not host:
        return False
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(addr in ipaddress.ip_network(c, strict=False) for c in cidrs)


def pbx_address_allowed(request: Request) -> None:
    """The PBX REST is for the PBX: its addresses (``auth.pbx_addresses``) only, besides its role (bridge token)."""
    host = request.client.host if request.client else None
    if not address_allowed(host, _settings(request).auth.pbx_addresses):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "not a PBX address")
