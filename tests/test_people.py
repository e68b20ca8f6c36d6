"""Issue 18: people, sessions, route roles, bridges as bridges, and the audit chain over whole rows.

Auth is on in these tests: real users and a bridge token created in a temporary archive, real HTTP through the app
(FastAPI TestClient: lifespan, routing, dependencies, websockets)."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount
from starlette.websockets import WebSocketDisconnect

from compliance_monitor.api.app import create_app
from compliance_monitor.api.auth import AUTH_OFF_USER, PAGE, PUBLIC, ROUTE_ROLES, hash_secret
from compliance_monitor.api.session import HASHER, LOGIN_FAILED
from compliance_monitor.archive.sqlite import Archive
from compliance_monitor.cli import main as cli_main
from tests.conftest import make_settings
from tests.fakes import FakeDecoder

PASSWORD = "correct horse"
USERS = {"col": ("collector", "A1"), "sup": ("supervisor", None), "aud": ("auditor", None), "adm": ("admin", None)}
BRIDGE_TOKEN = "bridge-secret-for-tests"
ROLES = ["anonymous", "collector", "supervisor", "auditor", "admin", "bridge"]
LOCAL = ("127.0.0.1", 50000)  # the PBX REST checks the client address


async def _seed(path: Path) -> None:
    archive = Archive(path, lambda text: [])
    await archive.open()
    hashed = HASHER.hash(PASSWORD)
    for name, (role, agent) in USERS.items():
        await archive.add_user(name, role, agent, hashed, "test")
    await archive.add_token("pbx", "bridge", None, hash_secret(BRIDGE_TOKEN), "test")
    await archive.aclose()


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("people")
    settings = make_settings(tmp, rules={"packs": [], "extra_files": [], "watch": False})
    asyncio.run(_seed(settings.archive.path))
    app = create_app(settings, FakeDecoder)
    with TestClient(app, client=LOCAL) as client:
        tokens = {}
        for name, (role, _) in USERS.items():
            r = client.post("/api/auth/login", json={"username": name, "password": PASSWORD})
            assert r.status_code == 200, r.text
            tokens[role] = r.json()["token"]
        client.cookies.clear()
        tokens["bridge"] = BRIDGE_TOKEN
        yield client, tokens


def _headers(tokens: dict[str, str], role: str) -> dict[str, str]:
    return {} if role == "anonymous" else {"Authorization": f"Bearer {tokens[role]}"}


def _allowed(role: str, grant: Any) -> bool:
    if grant in (PUBLIC, PAGE):
        return True
    if role == "anonymous":
        return False
    return role == "admin" or grant == "authenticated" or role in grant


def _path(path: str) -> str:
    return path.replace("{call_id}", "nope").replace("{agent_id}", "A1").replace("{key}", "a" * 32)


def _routes(client: TestClient) -> list[tuple[str, str]]:
    return _walk(client.app.routes, "")  # type: ignore[attr-defined]


def _walk(routes: Any, prefix: str) -> list[tuple[str, str]]:
    """(method or WS, path) of every route, through included routers (FastAPI keeps them nested)."""
    found: list[tuple[str, str]] = []
    for route in routes:
        if hasattr(route, "original_router"):
            found += _walk(route.original_router.routes, prefix + route.include_context.prefix)
        elif isinstance(route, APIWebSocketRoute):
            found.append(("WS", prefix + route.path))
        elif isinstance(route, APIRoute) or hasattr(route, "methods"):
            found += [(m, prefix + route.path) for m in route.methods or [] if m != "HEAD"]
        else:
            assert isinstance(route, Mount) and route.path == "/ui", route  # static assets only
    return found


def test_every_route_declares_its_roles(app_client: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = app_client
    missing = [r for r in _routes(client) if r not in ROUTE_ROLES]
    assert not missing, f"routes without a declared role in auth.ROUTE_ROLES: {missing}"


@pytest.mark.parametrize("role", ROLES)
def test_every_role_on_every_route_gets_what_is_declared(
    app_client: tuple[TestClient, dict[str, str]], role: str
) -> None:
    client, tokens = app_client
    client.cookies.clear()
    for method, path in _routes(client):
        if (method, path) == ("POST", "/api/auth/logout"):
            continue  # logout would end the session the rest of the matrix uses (tested below)
        grant = ROUTE_ROLES[(method, path)]
        url = _path(path)
        if method == "WS":
            _check_ws(client, tokens, role, url, _allowed(role, grant))
            continue
        body = {"username": "sup", "password": PASSWORD} if path == "/api/auth/login" else {}
        r = client.request(method, url, headers=_headers(tokens, role), json=body, follow_redirects=False)
        client.cookies.clear()  # the login route sets one: the next route must see only the role's header
        if grant == PAGE and role == "anonymous":
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), (method, path)
        elif _allowed(role, grant):
            assert r.status_code not in (401, 403), (role, method, path, r.status_code, r.text)
        elif role == "anonymous":
            assert r.status_code == 401, (role, method, path, r.status_code)
        else:
            assert r.status_code == 403, (role, method, path, r.status_code)


def _check_ws(client: TestClient, tokens: dict[str, str], role: str, url: str, allowed: bool) -> None:
    headers = _headers(tokens, role)
    if allowed:
        with client.websocket_connect(url, headers=headers) as ws:
            ws.close()
        return
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect(url, headers=headers) as ws:
        ws.receive_text()
    assert refused.value.code == 1008, (role, url)


def test_a_collector_follows_only_their_own_agent_id(app_client: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = app_client
    with client.websocket_connect("/ws/agents/A1", headers=_headers(tokens, "collector")) as ws:
        ws.close()
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect("/ws/agents/A2", headers=_headers(tokens, "collector")) as ws,
    ):
        ws.receive_text()
    assert refused.value.code == 1008
    assert client.get("/api/calls", headers=_headers(tokens, "collector")).status_code == 403


def test_no_credential_is_taken_from_the_url(app_client: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = app_client
    client.cookies.clear()
    assert client.get(f"/api/calls?token={tokens['supervisor']}").status_code == 401
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect(f"/ws/console?token={tokens['supervisor']}") as ws,
    ):
        ws.receive_text()
    assert refused.value.code == 1008


def test_login_cookie_me_logout_and_the_same_answer_for_unknown_users(
    app_client: tuple[TestClient, dict[str, str]],
) -> None:
    client, _ = app_client
    client.cookies.clear()
    wrong = client.post("/api/auth/login", json={"username": "sup", "password": "nope-nope"})
    unknown = client.post("/api/auth/login", json={"username": "nobody", "password": "nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": LOGIN_FAILED}

    r = client.post("/api/auth/login", json={"username": "aud", "password": PASSWORD})
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie  # plain http here; https requests get Secure
    body = r.json()
    assert (body["user"], body["role"], body["agent_id"]) == ("aud", "auditor", None) and body["expires_at"] > 0
    me = client.get("/api/auth/me").json()  # the cookie alone
    assert (me["user"], me["role"], me["via"], me["auth"]) == ("aud", "auditor", "session", True)
    assert client.get("/search", follow_redirects=False).status_code == 200
    assert client.post("/api/auth/logout").status_code == 200
    client.cookies.clear()
    assert client.get("/api/auth/me", headers={"Authorization": f"Bearer {body['token']}"}).status_code == 401
    assert client.get("/search", follow_redirects=False).status_code == 303


def test_websocket_ticket_is_single_use_and_travels_as_a_subprotocol(
    app_client: tuple[TestClient, dict[str, str]],
) -> None:
    client, tokens = app_client
    client.cookies.clear()
    issued = client.post("/api/auth/ticket", headers=_headers(tokens, "supervisor")).json()
    protocols = issued["protocols"]
    assert protocols[0] == "cm.v1" and protocols[1] == f"cm.ticket.{issued['ticket']}"
    with client.websocket_connect("/ws/console", subprotocols=protocols) as ws:
        assert ws.accepted_subprotocol == "cm.v1"
        ws.close()
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect("/ws/console", subprotocols=protocols) as ws,
    ):
        ws.receive_text()
    assert refused.value.code == 1008


def test_sessions_expire_and_die_with_a_disabled_user(
    app_client: tuple[TestClient, dict[str, str]], tmp_path: Path
) -> None:
    client, _ = app_client
    client.cookies.clear()
    path = client.app.state.monitor.services.archive.path  # type: ignore[attr-defined]
    archive = client.app.state.monitor.services.archive  # type: ignore[attr-defined]
    hashed = HASHER.hash(PASSWORD)
    client.portal.call(archive.add_user, "temp", "supervisor", None, hashed, "test")  # type: ignore[union-attr]
    old = client.post("/api/auth/login", json={"username": "temp", "password": PASSWORD}).json()["token"]
    with sqlite3.connect(path) as db:  # a session older than session_max_s
        db.execute("UPDATE sessions SET created_at = created_at - 1e6 WHERE session_hash = ?", (hash_secret(old),))
    assert client.get("/api/auth/me", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    live = client.post("/api/auth/login", json={"username": "temp", "password": PASSWORD}).json()["token"]
    client.cookies.clear()
    assert client.get("/api/auth/me", headers={"Authorization": f"Bearer {live}"}).status_code == 200
    client.portal.call(archive.set_user_disabled, "temp", True, "test")  # type: ignore[union-attr]
    assert client.get("/api/auth/me", headers={"Authorization": f"Bearer {live}"}).status_code == 401
    again = client.post("/api/auth/login", json={"username": "temp", "password": PASSWORD})
    assert again.status_code == 401


def test_failed_logins_are_rate_limited_and_audited(app_client: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = app_client
    client.app.state.login_limiter.failures.clear()  # type: ignore[attr-defined]  # other tests' failures
    codes = [
        client.post("/api/auth/login", json={"username": "ratelimited", "password": "wrong-pw"}).status_code
        for _ in range(7)
    ]
    assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]
    client.app.state.login_limiter.failures.clear()  # type: ignore[attr-defined]  # the address key too
    path = client.app.state.monitor.services.archive.path  # type: ignore[attr-defined]
    with sqlite3.connect(path) as db:
        kinds = db.execute("SELECT kind, actor FROM audit WHERE actor = 'ratelimited'").fetchall()
    assert kinds.count(("login_failed", "ratelimited")) == 7


def test_actions_are_recorded_against_the_person(app_client: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = app_client
    client.cookies.clear()
    assert client.get("/api/search?q=法院", headers=_headers(tokens, "auditor")).status_code == 200
    path = client.app.state.monitor.services.archive.path  # type: ignore[attr-defined]
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT kind, actor, payload FROM audit WHERE kind IN ('search', 'login')").fetchall()
    assert ("login", "sup") in {(k, a) for k, a, _ in rows}
    search = [json.loads(p) for k, a, p in rows if k == "search" and a == "aud"]
    assert search and search[-1]["q"] == "法院" and search[-1]["actor"] == "aud"


def test_pbx_rest_needs_a_pbx_address_and_the_bridge_token(app_client: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = app_client
    client.cookies.clear()
    url = "/api/audiosocket/calls/" + "a" * 32
    assert client.post(url, json={}).status_code == 401
    assert client.post(url, json={}, headers=_headers(tokens, "collector")).status_code == 403
    assert client.post(url, json={}, headers=_headers(tokens, "bridge")).status_code == 201
    outside = TestClient(client.app, client=("203.0.113.9", 5000))  # no `with`: shares the running app's state
    assert outside.post(url, json={}, headers=_headers(tokens, "bridge")).status_code == 403


def test_audiosocket_tcp_accepts_only_pbx_addresses(app_client: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = app_client
    server = client.app.state.audiosocket  # type: ignore[attr-defined]
    settings = client.app.state.monitor.services.settings  # type: ignore[attr-defined]

    def talks(cidrs: list[str]) -> bool:
        settings.auth.pbx_addresses = cidrs
        with socket.create_connection(("127.0.0.1", server.port), timeout=1) as s:
            s.settimeout(0.5)
            try:
                return s.recv(1) != b""  # closed at once: b""
            except TimeoutError:
                return True  # held open, waiting for the UUID frame

    try:
        assert talks(["127.0.0.0/8"]) is True
        assert talks(["10.0.0.0/8"]) is False
    finally:
        settings.auth.pbx_addresses = ["127.0.0.0/8", "::1/128"]


def test_auth_off_acts_as_anonymous_and_only_on_loopback(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, rules={"packs": [], "extra_files": [], "watch": False})
    with TestClient(create_app(settings, FakeDecoder)) as client:
        me = client.get("/api/auth/me").json()
        assert (me["user"], me["auth"]) == (AUTH_OFF_USER, False)
        assert client.get("/", follow_redirects=False).status_code == 200
    exposed = make_settings(tmp_path, server={"host": "0.0.0.0", "port": 1})
    with pytest.raises(RuntimeError, match="not loopback"), TestClient(create_app(exposed, FakeDecoder)):
        pass


# --------------------------------------------------------------------------- the audit chain


async def test_the_head_advances_only_when_the_write_commits(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "a.sqlite3", lambda text: [])
    await archive.open()
    first = await archive.record_audit("note", "sup", {"text": "one"}, call_id="c1")
    head = archive.audit_head()
    assert head["audit_id"] == first

    def write_then_fail(db: sqlite3.Connection) -> None:
        archive._audit("note", "c1", {"text": "rolled back"}, actor="sup")
        raise RuntimeError("the write fails after its audit entry")

    with pytest.raises(RuntimeError):
        await archive._write(write_then_fail)
    assert archive.audit_head() == head  # the rolled-back entry never became the head
    second = await archive.record_audit("note", "sup", {"text": "two"})
    assert second == first + 1 and (await archive.verify_report())["ok"]
    await archive.aclose()


@pytest.fixture
def chained(tmp_path: Path, tokenizer: Any) -> tuple[Path, Path]:
    """An archive holding a call (segment, finding, halt) and people's entries, and its exported head."""
    from compliance_monitor.messages import CallStarted, Finding, Severity, Speaker, Transcript
    from compliance_monitor.text.normalise import normalise

    path = tmp_path / "a.sqlite3"

    async def build() -> None:
        archive = Archive(path, tokenizer.cut_for_search)
        await archive.open()
        await archive.start_call(CallStarted("c1", "A1", "pcm", (Speaker.AGENT,), {}))
        tr = Transcript("c1", Speaker.AGENT, 0, "我们会去你单位", 0.0, 2.0, True, -0.1)
        segment_id = await archive.add_segment(tr, normalise(tr.text, tokenizer))
        finding = Finding("c1", Speaker.AGENT, 0, "r1", "threat", Severity.HIGH, "去你单位", (3, 7), 0.0, 2.0, "why")
        await archive.add_finding(finding, segment_id)
        await archive.add_manual_action("c1", "halt_call", "why", None, "sup")
        await archive.record_audit("unmask", "aud", {"field": "id_number", "reason": "dispute"}, call_id="c1")
        await archive.aclose()

    asyncio.run(build())
    anchor = tmp_path / "head.json"
    assert _cli(path, "audit", "head", "--out", str(anchor)) == 0
    return path, anchor


def _cli(path: Path, *args: str) -> int:
    import os

    os.environ["CM_ARCHIVE__PATH"] = str(path)
    try:
        return cli_main(list(args))
    finally:
        del os.environ["CM_ARCHIVE__PATH"]


def test_an_intact_chain_verifies_whole_and_per_call(chained: tuple[Path, Path], capsys: Any) -> None:
    path, anchor = chained
    assert _cli(path, "audit", "verify", "--anchor", str(anchor)) == 0
    assert "OK: 5 audit entries verified" in capsys.readouterr().out
    assert _cli(path, "audit", "verify", "--call", "c1") == 0


@pytest.mark.parametrize(
    ("tamper", "expect"),
    [
        ("UPDATE segments SET text = '我们不会去'", "segment"),
        ("UPDATE findings SET matched_text = 'x'", "finding"),
        ("UPDATE audit SET created_at = created_at + 1 WHERE kind = 'action'", "action"),
        ("UPDATE audit SET actor = 'someone else' WHERE kind = 'unmask'", "unmask"),
        ("DELETE FROM audit WHERE kind = 'finding'", "action"),  # the next entry no longer links
    ],
)
def test_verify_names_the_first_broken_link(chained: tuple[Path, Path], capsys: Any, tamper: str, expect: str) -> None:
    path, _ = chained
    with sqlite3.connect(path) as db:
        db.execute(tamper)
    assert _cli(path, "audit", "verify") == 1
    err = capsys.readouterr().err
    assert "BROKEN" in err and f"({expect} " in err, err


def test_a_consistently_rewritten_chain_is_caught_by_the_anchor(chained: tuple[Path, Path], capsys: Any) -> None:
    from compliance_monitor.archive import audit

    path, anchor = chained
    with sqlite3.connect(path) as db:  # forge: change the actor, then recompute every hash from genesis
        db.execute("UPDATE audit SET actor = 'forged', payload = NULL WHERE kind = 'unmask'")
        db.execute("UPDATE audit SET payload = '{}' WHERE kind = 'unmask'")
        db.row_factory = sqlite3.Row
        prev = audit.GENESIS
        for row in db.execute(f"{audit.ENTRY_ROWS} ORDER BY a.audit_id").fetchall():
            body = audit.entry_body(row)
            digest = audit.entry_hash_v2(
                prev, row["audit_id"], row["kind"], row["ref_id"], row["call_id"], row["actor"], row["created_at"], body
            )
            db.execute("UPDATE audit SET hash = ? WHERE audit_id = ?", (bytes.fromhex(digest), row["audit_id"]))
            prev = digest
    assert _cli(path, "audit", "verify") == 0  # consistent: the chain alone cannot tell
    capsys.readouterr()
    assert _cli(path, "audit", "verify", "--anchor", str(anchor)) == 1
    assert "chain rewritten" in capsys.readouterr().err


def test_https_logins_get_a_secure_cookie(app_client: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = app_client
    secure = TestClient(client.app, base_url="https://testserver", client=LOCAL)  # shares the running app
    r = secure.post("/api/auth/login", json={"username": "aud", "password": PASSWORD})
    assert r.status_code == 200 and "Secure" in r.headers["set-cookie"]


def test_access_log_lines_never_carry_a_secret() -> None:
    import logging

    from compliance_monitor.api.app import RedactSecrets

    args = ("1.2.3.4:5", "GET", "/ws/console?token=s3cret&x=1&ticket=t1", "1.1", 200)
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', args, None)
    assert RedactSecrets().filter(record)
    line = record.getMessage()
    assert "s3cret" not in line and "t1" not in line and "token=***&x=1" in line
