"""The supervisor console in a real Chromium (issue 18): a supervisor logs in through /login, watches a replayed
Mandarin call's transcript and its alert arrive (real speech, the PCM bridge protocol, the real rule pack, Whisper),
acknowledges the alert, confirms the recommended halt, and the bridge sees the hang-up (a halt frame, close 1000).
Screenshots: var/test-artifacts/screenshots/console-*.png."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

from compliance_monitor.ingest.replay import replay
from tests.browser import login, open_page, page_errors, screenshot
from tests.conftest import SHARED, LiveServer, make_settings, seed_people

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
    detail = await _json(page, f"/api/calls/{CALL_ID}")
    halts = [a for a in detail["actions"] if a["action"] == "halt_call" and a["actor"] == "sup"]
    assert halts and halts[0]["outcome"] == "done"
    await expect(page.locator(f'#ended-calls li[data-call-id="{CALL_ID}"]')).to_be_visible()
    await screenshot(page, "console-05-halted")


async def _json(page: Page, path: str) -> dict[str, Any]:
    """The page's own session (its cookie) asking the REST API."""
    r = await page.request.get(path)
    assert r.ok, (path, r.status)
    body: dict[str, Any] = await r.json()
    return body
