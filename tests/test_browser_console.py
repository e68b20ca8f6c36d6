"""The supervisor console in a real Chromium (issue 18): a supervisor logs in through /login, watches a replayed
Mandarin call's transcript and its alert arrive (real speech, the PCM bridge protocol, the real rule pack, Whisper),
acknowledges the alert, confirms the recommended halt, and the bridge sees the hang-up (a halt frame, close 1000).
Screenshots: var/test-artifacts/screenshots/console-*.png."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

from compliance_monitor.archive.sqlite import Archive
from compliance_monitor.ingest.replay import replay
from compliance_monitor.messages import (
    Action,
    ActionKind,
    CallStarted,
    Finding,
    NormalisedText,
    Severity,
    Speaker,
    Transcript,
)
from tests.browser import login, open_page, page_errors, screenshot
from tests.conftest import SHARED, LiveServer, make_settings, seed_people
from tests.fakes import FakeDecoder

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.browser]

PASSWORD = "correct horse battery"
BRIDGE_TOKEN = "bridge-token-for-the-browser-test"
# dev03: a collector who insults (21 s) and threatens to visit the debtor's workplace (29 s); stereo, agent left.
CALL = SHARED / "calls" / "dev" / "dev03.wav"
CALL_ID = "dev03-browser"
WAIT_MS = 240_000  # Whisper on a shared CPU: the findings come when their finals do


async def test_supervisor_watches_acknowledges_and_halts_a_live_call(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        rules={"packs": ["cn_collection"], "extra_files": [], "watch": False},
        # high findings recommend a halt (auto_halt stays off): the supervisor confirms it
        policy={"halt_at": "high"},
    )
    await seed_people(settings.archive.path, {"sup": ("supervisor", None)}, PASSWORD, BRIDGE_TOKEN)
    with LiveServer(settings) as server:
        async with open_page(server.http) as page:
            await login(page, "sup", PASSWORD)
            await expect(page.locator("#conn-status")).to_have_attribute("data-state", "open")
            await expect(page.locator("#me")).to_contain_text("sup · supervisor")
            call = asyncio.create_task(
                replay(
                    CALL,
                    f"{server.ws}/bridge/pcm",
                    bridge="pcm",
                    speed=1.0,
                    call_id=CALL_ID,
                    agent_id="A-03",
                    token=BRIDGE_TOKEN,
                    tail_silence_s=120,  # the line stays open (silent) until the supervisor halts it
                )
            )
            try:
                await _watch_acknowledge_and_halt(page, call)
            finally:
                if not call.done():
                    call.cancel()
            assert page_errors(page) == []


async def _watch_acknowledge_and_halt(page: Page, call: asyncio.Task[Any]) -> None:
    card = page.locator(f'.call-card[data-call-id="{CALL_ID}"]')
    await expect(card.locator(".line").first).to_be_visible(timeout=WAIT_MS)  # the transcript arrives
    await expect(card.locator(".call-status")).to_contain_text("通话中", timeout=5_000)
    await screenshot(page, "console-01-transcript")

    # One alert per finding, its actions inside it, the recommended halt awaiting the supervisor.
    alert = page.locator(f'#alerts li.finding[data-call-id="{CALL_ID}"]').filter(has=page.locator(".recommend"))
    await expect(alert.first).to_be_visible(timeout=WAIT_MS)
    awaiting = "建议挂断 – 等待主管确认 recommended halt – awaiting supervisor"  # never "halting" until it is
    await expect(card.locator(".call-status")).to_have_text(awaiting)
    first = alert.first
    actions = await first.locator(".alert-actions li").evaluate_all("els => els.map(e => e.dataset.action)")
    assert actions[:2] == ["warn_collector", "alert_supervisor"] and "halt_call" in actions
    assert await page.locator(f'#alerts li.action[data-call-id="{CALL_ID}"]').count() == 0  # no separate rows
    alert_id = await first.get_attribute("data-alert-id")
    await screenshot(page, "console-02-alert")

    await first.locator(".ack-btn").click()
    await expect(page.locator(f'#alerts li[data-alert-id="{alert_id}"]')).to_have_attribute(
        "data-status", "acknowledged"
    )
    stored = await _json(page, f"/api/alerts?call={CALL_ID}")
    (acked,) = [a for a in stored["alerts"] if str(a["alert_id"]) == alert_id]
    assert acked["status"] == "acknowledged" and acked["updated_by"] == "sup"
    await screenshot(page, "console-03-acknowledged")

    await card.locator(".halt-btn").click()  # the confirm step: a dialog naming the recommendation
    await expect(page.locator("#halt-dialog")).to_be_visible()
    await expect(page.locator("#halt-recommended")).to_contain_text("系统建议挂断")
    await screenshot(page, "console-04-confirm-halt")
    await page.click("#halt-confirm")

    result = await asyncio.wait_for(call, 60)
    assert result.closed_code == 1000, result.closed_code  # the bridge side: hung up by the monitor
    assert any(m.get("event") == "halt" for m in result.server_messages), result.server_messages
    await expect(card.locator(".call-status")).to_contain_text("已结束", timeout=30_000)
    # the confirmed halt is inside the alert whose recommendation it confirmed, not a row of its own
    halt = page.locator(f'#alerts li[data-alert-id="{alert_id}"] .alert-actions li[data-action="halt_call"]')
    await expect(halt.filter(has_text="已完成 done")).to_have_count(1)
    await expect(page.locator(f'#alerts li[data-alert-id="{alert_id}"]')).not_to_contain_text("awaiting")
    assert await page.locator(f'#alerts li.action[data-call-id="{CALL_ID}"]').count() == 0
    detail = await _json(page, f"/api/calls/{CALL_ID}")
    halts = [a for a in detail["actions"] if a["action"] == "halt_call" and a["actor"] == "sup"]
    assert halts and halts[0]["outcome"] == "done" and str(halts[0]["finding_id"]) == alert_id
    await expect(page.locator(f'#ended-calls li[data-call-id="{CALL_ID}"]')).to_be_visible()
    await screenshot(page, "console-05-halted")


async def _json(page: Page, path: str) -> dict[str, Any]:
    """The page's own session (its cookie) asking the REST API."""
    r = await page.request.get(path)
    assert r.ok, (path, r.status)
    body: dict[str, Any] = await r.json()
    return body


# ---------------------------------------------------------------- a console opened after the calls ended

OLD_CALL = "ended-before-open"
LINES = 30


async def _seed_ended_call(path: Path) -> None:
    """A call that ended before any console opened: 30 lines, a threat on the last (critical), and a call-level
    calling-hours finding; team "east"."""
    archive = Archive(path, lambda text: [])
    await archive.open()
    started = CallStarted(OLD_CALL, "A-77", "pcm", (Speaker.AGENT, Speaker.CUSTOMER), {"team": "east"})
    await archive.start_call(started)
    said = [
        (
            Transcript(OLD_CALL, Speaker.AGENT, n, f"第{n}句 请您尽快还款", 2.0 * n, 2.0 * n + 1.5, True),
            f"第{n}句请您尽快还款",
        )
        for n in range(LINES - 1)
    ]
    last = "你再不还钱我们就派人去你家"
    said.append((Transcript(OLD_CALL, Speaker.AGENT, LINES - 1, last, 2.0 * LINES, 2.0 * LINES + 2, True), last))
    ids = await archive.add_segments([(tr, NormalisedText(tr.text, text, text, ())) for tr, text in said])
    threat = Finding(
        OLD_CALL,
        Speaker.AGENT,
        LINES - 1,
        "threat.visit_home_or_work",
        "threat",
        Severity.CRITICAL,
        "去你家",
        (10, 13),
        2.0 * LINES,
        2.0 * LINES + 2,
        "威胁上门",
    )
    finding_id = await archive.add_finding(threat, ids[-1])
    await archive.add_action(Action(OLD_CALL, ActionKind.ALERT_SUPERVISOR, threat, "威胁"), finding_id)
    hours = Finding(
        OLD_CALL,
        Speaker.AGENT,
        0,
        "hours.outside_window",
        "calling_hours",
        Severity.WARN,
        "23:10",
        (0, 0),
        0,
        0,
        "在债务人当地 22:00–08:00 之间拨打催收电话",
    )
    await archive.add_finding(hours, None)
    await archive.end_call(OLD_CALL, "hangup", time.time(), "speech")
    await archive.aclose()


async def test_a_console_opened_later_shows_ended_calls_critical_alerts_and_hides_what_a_role_cannot_do(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, rules={"packs": [], "extra_files": [], "watch": False})
    users: dict[str, tuple[str, str | None]] = {"sup": ("supervisor", None), "aud": ("auditor", None)}
    await seed_people(settings.archive.path, users, PASSWORD, BRIDGE_TOKEN)
    await _seed_ended_call(settings.archive.path)
    with LiveServer(settings, FakeDecoder) as server:
        async with open_page(server.http) as page:
            await login(page, "aud", PASSWORD)
            await _auditor_sees_the_ended_call_read_only(page)
            assert page_errors(page) == []
        async with open_page(server.http) as page:
            await login(page, "sup", PASSWORD)
            await _supervisor_acknowledges_the_critical_alert_and_filters(page)
            assert page_errors(page) == []


async def _auditor_sees_the_ended_call_read_only(page: Page) -> None:
    ended = page.locator(f'#ended-calls li[data-call-id="{OLD_CALL}"]')
    await expect(ended).to_be_visible()
    await expect(ended.locator(".n-findings")).to_have_text("⚠ 2")
    await expect(page.locator("#pick-hint")).to_be_visible()  # no live call: the page says what to do
    await expect(page.locator("#critical-banner")).to_be_visible()  # the critical alert nobody acknowledged
    await expect(page.locator("#critical-count")).to_have_text("1")
    alert = page.locator('#alerts li.finding[data-severity="critical"]')
    await expect(alert.locator(".alert-title")).to_have_text("威胁恐吓 · Threat")
    await expect(alert.locator(".alert-actions li")).to_have_count(1)
    assert "null" not in await page.locator("#alerts").inner_text()
    await expect(alert.locator(".ack-btn")).to_be_hidden()  # an auditor reads; only supervisors act
    await ended.click()
    card = page.locator(f'.call-card[data-call-id="{OLD_CALL}"]')
    await expect(card.locator(".line")).to_have_count(LINES)
    await expect(ended.locator(".n-findings")).to_have_text("⚠ 2")  # the archive's findings, counted once
    await expect(card.locator(".halt-btn")).to_be_hidden()
    # the card is titled by what was found, in words; the raw category id is nowhere on it
    await expect(card.locator(".call-findings .tag")).to_have_text("非催收时段 · Outside permitted calling hours")
    await expect(card.locator(".line").last.locator("mark")).to_have_text("去你家")
    box = f'.call-card[data-call-id="{OLD_CALL}"] .transcript'
    at_end = "b => { const e = document.querySelector(b); return e.scrollHeight - e.scrollTop - e.clientHeight < 5 }"
    await page.wait_for_function(at_end, arg=box)  # its last lines show, not its first
    await _an_ending_call_keeps_its_scroll(page)
    await page.evaluate("CMConsole.onEvent({type: 'events_missed', call_id: '', missed: 4, ts: Date.now() / 1000})")
    await expect(page.locator("#gap-banner")).to_contain_text("4 live events were not delivered")
    await screenshot(page, "console-06-auditor-ended-call")


async def _an_ending_call_keeps_its_scroll(page: Page) -> None:
    """Two calls' events as the feed delivers them (fed to the page's handler): one read at its end, one scrolled
    up to an earlier line. When they end (their cards move below the live ones) each stays where its reader was."""
    await page.evaluate(
        """() => {
        const now = Date.now() / 1000;
        for (const id of ["read-at-end", "read-earlier"]) {
          CMConsole.onEvent({type: "call_started", call_id: id, agent_id: "A-9", bridge: "pcm",
                             speakers: ["agent", "customer"], metadata: {}, ts: now});
          for (let n = 0; n < 40; n++) CMConsole.onEvent({type: "transcript", call_id: id, speaker: "agent",
            segment_no: n, text: "第" + n + "句", t0: n, t1: n + 0.5, final: true, segment_id: null, ts: now});
        }
        document.querySelector('.call-card[data-call-id="read-earlier"] .transcript').scrollTop = 100;
      }"""
    )
    for call in ("read-at-end", "read-earlier"):
        await page.evaluate(f"CMConsole.onEvent({{type: 'call_ended', call_id: '{call}', reason: 'hangup', ts: 1}})")
    at_end = "b => { const e = document.querySelector(b); return e.scrollHeight - e.scrollTop - e.clientHeight < 5 }"
    await page.wait_for_function(at_end, arg='.call-card[data-call-id="read-at-end"] .transcript')
    earlier = page.locator('.call-card[data-call-id="read-earlier"] .transcript')
    assert await earlier.evaluate("e => e.scrollTop") == 100


async def _supervisor_acknowledges_the_critical_alert_and_filters(page: Page) -> None:
    alert = page.locator('#alerts li.finding[data-severity="critical"]')
    await expect(page.locator("#critical-banner")).to_be_visible()
    await alert.locator(".ack-btn").click()
    await expect(alert).to_have_attribute("data-status", "acknowledged")
    await expect(page.locator("#critical-banner")).to_be_hidden()
    await alert.locator("summary").click()
    await alert.locator('input[aria-label="note"]').fill("已联系坐席组长")
    await alert.locator('input[aria-label="note"]').press("Enter")
    await expect(alert.locator(".alert-notes li")).to_contain_text("sup")
    await page.select_option("#f-severity", "critical")
    await expect(page.locator('#alerts li.finding[data-severity="warn"]')).to_be_hidden()
    await expect(alert).to_be_visible()
    await page.select_option("#f-team", "east")
    await expect(page.locator(f'#ended-calls li[data-call-id="{OLD_CALL}"]')).to_be_visible()
    await screenshot(page, "console-07-supervisor-acknowledged")
