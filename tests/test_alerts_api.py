"""Alerts (issue 18): one per finding with its actions inside it; acknowledge / assign / resolve / notes by
supervisors, audited with the person, published to every console, kept across a restart. Auth is on: real users
created with the people module's archive methods, real HTTP through the app."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from compliance_monitor.api.app import create_app
from compliance_monitor.archive.sqlite import Archive
from compliance_monitor.config import Settings
from compliance_monitor.messages import Action, ActionKind, CallStarted, Finding, Severity, Speaker
from tests.conftest import make_settings, seed_people
from tests.fakes import FakeDecoder

PASSWORD = "correct horse"
USERS: dict[str, tuple[str, str | None]] = {
    "col": ("collector", "A1"),
    "sup": ("supervisor", None),
    "aud": ("auditor", None),
    "adm": ("admin", None),
}
ID_NUMBER = "110105194912310025"  # a valid 居民身份证 number (check digit and birth date)


def _finding(call_id: str, n: int, severity: Severity, text: str = "你再不还钱就等着") -> Finding:
    return Finding(
        call_id=call_id,
        speaker=Speaker.AGENT,
        segment_no=n,
        rule_id="threat.violence",
        category="threat",
        severity=severity,
        matched_text=text,
        span=(0, len(text)),
        t0=float(n),
        t1=float(n) + 1,
        explanation="威胁",
    )


async def _seed_calls(path: Path) -> list[int]:
    """Two calls: c1 with a critical finding (warned + alerted + halt recommended) and one with an ID number; c2
    with a warn finding. Returns the finding ids in order."""
    archive = Archive(path, lambda text: [])
    await archive.open()
    ids = []
    for call_id in ("c1", "c2"):
        await archive.start_call(CallStarted(call_id, "A1", "pcm", (Speaker.AGENT, Speaker.CUSTOMER)))
    first = _finding("c1", 1, Severity.CRITICAL)
    ids.append(await archive.add_finding(first, None))
    for kind in (ActionKind.WARN_COLLECTOR, ActionKind.ALERT_SUPERVISOR, ActionKind.HALT_CALL):
        outcome = "recommended" if kind is ActionKind.HALT_CALL else None
        await archive.add_action(Action("c1", kind, first, "威胁"), ids[0], outcome=outcome)
    ids.append(await archive.add_finding(_finding("c1", 2, Severity.HIGH, f"身份证号{ID_NUMBER}"), None))
    ids.append(await archive.add_finding(_finding("c2", 1, Severity.WARN), None))
    await archive.aclose()
    return ids


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, list[int]]:
    tmp = tmp_path_factory.mktemp("alerts")
    settings = make_settings(tmp, rules={"packs": [], "extra_files": [], "watch": False})
    asyncio.run(seed_people(settings.archive.path, USERS, PASSWORD, "bridge-token-for-tests"))
    return settings, asyncio.run(_seed_calls(settings.archive.path))


def _login(client: TestClient) -> dict[str, dict[str, str]]:
    headers: dict[str, dict[str, str]] = {"anonymous": {}}
    for name, (role, _) in USERS.items():
        r = client.post("/api/auth/login", json={"username": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        headers[role] = {"Authorization": f"Bearer {r.json()['token']}"}
    client.cookies.clear()  # each request below carries only its role's bearer token
    return headers


@pytest.fixture(scope="module")
def app(setup: tuple[Settings, list[int]]) -> Iterator[tuple[TestClient, dict[str, dict[str, str]], list[int]]]:
    settings, ids = setup
    with TestClient(create_app(settings, FakeDecoder)) as client:
        yield client, _login(client), ids


def _audit_rows(path: Path, kind: str) -> list[sqlite3.Row]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM audit WHERE kind = ? ORDER BY audit_id", (kind,)).fetchall()
    finally:
        db.close()


ROUTES = [
    ("GET", "/api/alerts", None),
    ("POST", "/api/alerts/{id}/ack", None),
    ("POST", "/api/alerts/{id}/assign", {"assignee": "sup"}),
    ("POST", "/api/alerts/{id}/notes", {"text": "checked"}),
    ("POST", "/api/alerts/{id}/resolve", None),
]
EXPECTED = {  # role -> status per route above
    "anonymous": [401] * 5,
    "collector": [403] * 5,
    "auditor": [200, 403, 403, 403, 403],
    "supervisor": [200] * 5,
    "admin": [200] * 5,
}


@pytest.mark.parametrize("role", list(EXPECTED))
def test_role_matrix(app: tuple[TestClient, dict[str, dict[str, str]], list[int]], role: str) -> None:
    client, headers, ids = app
    got = [
        client.request(method, path.replace("{id}", str(ids[2])), headers=headers[role], json=body).status_code
        for method, path, body in ROUTES
    ]
    assert got == EXPECTED[role]


def test_one_alert_per_finding_with_its_actions_newest_first(
    app: tuple[TestClient, dict[str, dict[str, str]], list[int]],
) -> None:
    client, headers, ids = app
    r = client.get("/api/alerts", params={"call": "c1"}, headers=headers["supervisor"])
    alerts = r.json()["alerts"]
    assert [a["alert_id"] for a in alerts] == [ids[1], ids[0]]
    assert [a["action"] for a in alerts[1]["actions"]] == ["warn_collector", "alert_supervisor", "halt_call"]
    assert alerts[1]["actions"][2]["outcome"] == "recommended"
    assert alerts[0]["actions"] == []


def test_filters_and_pages(app: tuple[TestClient, dict[str, dict[str, str]], list[int]]) -> None:
    client, headers, ids = app
    sup = headers["supervisor"]
    critical = client.get("/api/alerts", params={"severity": "critical"}, headers=sup).json()["alerts"]
    assert [a["alert_id"] for a in critical] == [ids[0]]
    first = client.get("/api/alerts", params={"limit": 2}, headers=sup).json()
    assert [a["alert_id"] for a in first["alerts"]] == [ids[2], ids[1]]
    rest = client.get("/api/alerts", params={"limit": 2, "before": first["next_before"]}, headers=sup).json()
    assert [a["alert_id"] for a in rest["alerts"]] == [ids[0]] and rest["next_before"] is None
    assert client.get("/api/alerts", params={"status": "bogus"}, headers=sup).status_code == 422
    assert client.post("/api/alerts/999999/ack", headers=sup).status_code == 404


def test_personal_numbers_are_masked_except_for_admins(
    app: tuple[TestClient, dict[str, dict[str, str]], list[int]],
) -> None:
    client, headers, ids = app

    def matched(role: str) -> str:
        alerts = client.get("/api/alerts", params={"call": "c1"}, headers=headers[role]).json()["alerts"]
        return str(next(a for a in alerts if a["alert_id"] == ids[1])["matched_text"])

    assert ID_NUMBER not in matched("supervisor") and "110***********0025" in matched("supervisor")
    assert ID_NUMBER not in matched("auditor")
    assert ID_NUMBER in matched("admin")


def test_every_change_is_audited_with_the_person_and_published_to_consoles(
    app: tuple[TestClient, dict[str, dict[str, str]], list[int]], setup: tuple[Settings, list[int]]
) -> None:
    client, headers, ids = app
    sup, alert = headers["supervisor"], ids[0]
    with client.websocket_connect("/ws/console", headers=headers["auditor"]) as ws:
        r = client.post(f"/api/alerts/{alert}/ack", headers=sup)
        assert r.json()["status"] == "acknowledged" and r.json()["updated_by"] == "sup"
        event = _next_alert_event(ws)
        assert (event["alert_id"], event["change"], event["actor"]) == (alert, "acknowledged", "sup")
        assert event["agent_id"] is None  # never on a collector's feed
        client.post(f"/api/alerts/{alert}/assign", headers=sup, json={"assignee": "aud"})
        assert _next_alert_event(ws)["alert"]["assignee"] == "aud"
        note = client.post(f"/api/alerts/{alert}/notes", headers=headers["admin"], json={"text": "called the agent"})
        assert [(n["author"], n["text"]) for n in note.json()["notes"]] == [("adm", "called the agent")]
        assert _next_alert_event(ws)["change"] == "note"
        client.post(f"/api/alerts/{ids[1]}/ack", headers=headers["admin"])  # an admin sees the number...
        published = _next_alert_event(ws)["alert"]["matched_text"]
        assert ID_NUMBER not in published and "110***********0025" in published  # ...the bus never carries it
        ws.close()  # as a browser leaving would
    path = setup[0].archive.path
    ack = [r for r in _audit_rows(path, "alert_acknowledged") if r["ref_id"] == str(alert)]
    assert ack and ack[-1]["actor"] == "sup" and ack[-1]["call_id"] == "c1"
    assert _audit_rows(path, "alert_assigned")[-1]["actor"] == "sup"
    assert _audit_rows(path, "alert_note")[-1]["actor"] == "adm"
    listed = client.get("/api/alerts", params={"status": "assigned"}, headers=sup).json()["alerts"]
    assert [a["alert_id"] for a in listed] == [alert] and listed[0]["assignee"] == "aud"


def _next_alert_event(ws: Any) -> dict[str, Any]:
    while True:  # the console's replay of live calls may come first
        event: dict[str, Any] = ws.receive_json()
        if event["type"] == "alert_updated":
            return event


def test_state_survives_a_restart_on_the_same_archive(setup: tuple[Settings, list[int]]) -> None:
    settings, ids = setup
    with TestClient(create_app(settings, FakeDecoder)) as client:
        sup = _login(client)["supervisor"]
        client.post(f"/api/alerts/{ids[1]}/notes", headers=sup, json={"text": "before restart"})
        assert client.post(f"/api/alerts/{ids[1]}/resolve", headers=sup).status_code == 200
    with TestClient(create_app(settings, FakeDecoder)) as client:
        sup = _login(client)["supervisor"]
        alerts = client.get("/api/alerts", params={"call": "c1"}, headers=sup).json()["alerts"]
    again = next(a for a in alerts if a["alert_id"] == ids[1])
    assert again["status"] == "resolved" and again["updated_by"] == "sup"
    assert [n["text"] for n in again["notes"]] == ["before restart"]
    assert asyncio.run(_chain_intact(settings.archive.path))


async def _chain_intact(path: Path) -> bool:
    """The alert entries joined the hash chain without breaking it."""
    archive = Archive(path, lambda text: [])
    await archive.open()
    try:
        intact, _ = await archive.verify_chain()
    finally:
        await archive.aclose()
    return intact
