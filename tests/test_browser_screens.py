"""Issue 18, in a real browser: the collector panel and the auditor page, auth on, real users logging in at /login.

(a) Real Mandarin (the synthetic dev calls) over the PCM bridge, transcribed live by the small Whisper model: a
collector sees only their own calls' warnings, with the phone number masked, a new call clears the previous call's
warnings, the disclosure checklist ticks off, and the acknowledgement lands in the audit chain with their name.
(b) An archive filled with already-transcribed calls (the dev calls' Whisper text through the real rule pack): an
auditor searches a Chinese word, opens the call (hit highlighted, header still on screen), searches by category
alone, and exports the call as JSON and as the readable report.

Chromium is Debian's (/usr/bin/chromium); never ``playwright install``. Screenshots: var/test-artifacts/screenshots.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from compliance_monitor.archive.sqlite import Archive
from compliance_monitor.audio.wavfile import read_wav
from compliance_monitor.detect.engine import RuleSet
from compliance_monitor.ingest.replay import replay_audio
from compliance_monitor.messages import CallStarted, Speaker, Transcript
from compliance_monitor.text.normalise import normalise
from compliance_monitor.text.tokenise import Tokenizer
from tests.browser import chromium_path, screenshot
from tests.conftest import SHARED, LiveServer, make_settings, seed_people

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.browser]

CALLS = SHARED / "calls" / "dev"
PASSWORD = "screens-test-password"
BRIDGE_TOKEN = "bridge-token-for-the-screens-test"
USERS = {
    "liu": ("collector", "A-liu"),
    "zhao": ("collector", "A-zhao"),
    "aud": ("auditor", None),
    "adm": ("admin", None),
    "sup": ("supervisor", None),
}
PHONE_DIGITS = "12674590"  # the middle and end of the number dev06 reads out (幺三八，幺二六七，四五九零)
VIEWPORT = {"width": 1280, "height": 800}


def _clip(name: str, *spans: tuple[float, float]) -> tuple[np.ndarray, int]:
    """Stretches of a dev call (stereo: agent, customer), joined, with half a second of silence between."""
    audio, rate = read_wav(CALLS / name)
    gap = np.zeros((rate // 2, audio.shape[1]), np.float32)
    parts = []
    for t0, t1 in spans:
        parts += [audio[int(t0 * rate) : int(t1 * rate)], gap]
    return np.concatenate(parts).astype(np.float32), rate


def _manifest() -> dict[str, dict[str, Any]]:
    lines = (CALLS / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    return {d["call_id"]: d for d in map(json.loads, lines)}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            await chromium.close()


async def _login(browser: Browser, base: str, user: str, page_path: str) -> Page:
    """A fresh browser context (its own cookie jar) logged in through the login page."""
    context = await browser.new_context(viewport=VIEWPORT, locale="zh-CN", accept_downloads=True)
    page = await context.new_page()
    await page.goto(base + page_path)
    await page.wait_for_url(lambda url: "/login" in url)  # not logged in yet: the page sends us to the login
    await page.fill("#username", user)
    await page.fill("#password", PASSWORD)
    await page.click("#login-submit")
    await page.wait_for_url(lambda url: url.startswith(base + page_path))
    return page


# ---------------------------------------------------------------- (a) the collector panel, live calls


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("screens-live")
    settings = make_settings(tmp, rules={"packs": ["cn_collection"], "extra_files": [], "watch": False})
    asyncio.run(seed_people(settings.archive.path, USERS, PASSWORD, BRIDGE_TOKEN))
    with LiveServer(settings) as server:
        yield server


async def _call(server: LiveServer, call_id: str, agent_id: str, audio: tuple[np.ndarray, int]) -> None:
    samples, rate = audio
    result = await replay_audio(
        samples, rate, f"{server.ws}/bridge/pcm", bridge="pcm", speed=1.5, call_id=call_id, agent_id=agent_id,
        token=BRIDGE_TOKEN, tail_silence_s=1.0,
    )  # fmt: skip
    assert result.closed_code == 1000, result


async def _ended(server: LiveServer, call_id: str, token: str) -> dict[str, Any]:
    """The archived call, once it has ended (the analysis finishes after the bridge hangs up)."""
    async with httpx.AsyncClient(base_url=server.http, headers={"Authorization": f"Bearer {token}"}) as http:
        for _ in range(600):
            r = await http.get(f"/api/calls/{call_id}")
            if r.status_code == 200 and r.json()["call"]["status"] == "ended":
                return dict(r.json())
            await asyncio.sleep(0.2)
    raise AssertionError(f"call {call_id} never ended")


async def _token(server: LiveServer, user: str) -> str:
    async with httpx.AsyncClient(base_url=server.http) as http:
        r = await http.post("/api/auth/login", json={"username": user, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return str(r.json()["token"])


async def test_a_collector_sees_only_their_own_calls_warnings_masked_and_acknowledges_one(
    live: LiveServer, browser: Browser
) -> None:
    page = await _login(browser, live.http, "liu", "/agent")
    await expect(page.locator("#conn-status")).to_have_attribute("data-state", "open", timeout=20_000)
    await expect(page.locator("#agent-label")).to_contain_text("A-liu")
    await expect(page.locator("#agent-id-input")).to_have_count(0)  # bound to the login: nothing to type
    await expect(page.locator("#checklist-items li")).to_have_count(3)  # the pack's opening-disclosure items
    other = await _login(browser, live.http, "zhao", "/agent")  # another collector, watching their own panel
    await expect(other.locator("#conn-status")).to_have_attribute("data-state", "open", timeout=20_000)

    admin = await _token(live, "adm")
    # Another collector's call (dev03: abuse) and then liu's first call (dev03: 后果自负), both live.
    await _call(live, "call-zhao", "A-zhao", _clip("dev03.wav", (20.9, 25.6)))
    await _call(live, "call-liu-1", "A-liu", _clip("dev03.wav", (39.3, 44.1)))
    first = await _ended(live, "call-liu-1", admin)
    threat = [f for f in first["findings"] if f["category"] == "threat"]
    assert threat, first["findings"]
    card = page.locator(f'#warnings .ap-card[data-finding-ids~="{threat[0]["finding_id"]}"]')
    await expect(card).to_be_visible(timeout=20_000)
    await expect(card.locator(".ap-instead")).to_contain_text("建议说法")  # what to say instead
    await screenshot(page, "screens-agent-1-first-call-warning")

    # The second call: the opening disclosure (dev03), then the phone number read out (dev06).
    await _call(live, "call-liu-2", "A-liu", _joined())
    second = await _ended(live, "call-liu-2", admin)
    leak = [f for f in second["findings"] if f["category"] == "privacy_leak"]
    assert leak, second["findings"]
    leak_card = page.locator(f'#warnings .ap-card[data-finding-ids~="{leak[0]["finding_id"]}"]')
    await expect(leak_card).to_be_visible(timeout=20_000)
    # Two rules on the one number read out (the number, and 手机号 with it): one card, one thing to fix.
    await expect(page.locator('#warnings .ap-card[data-category="privacy_leak"]')).to_have_count(1)
    for f in leak:
        await expect(leak_card).to_have_attribute("data-finding-ids", re.compile(rf"\b{f['finding_id']}\b"))
    await expect(page.locator("#call-status")).to_have_attribute("data-call-id", "call-liu-2")
    # The first call's warning left the list of this call's warnings for the collapsed "earlier calls".
    await expect(page.locator('#warnings [data-call-id="call-liu-1"]')).to_have_count(0)
    await expect(page.locator("#earlier")).to_be_visible()
    await expect(page.locator("#earlier")).not_to_have_attribute("open", "")
    await expect(page.locator('#earlier-list [data-call-id="call-liu-1"] li')).to_have_count(
        len({(f["category"], f["segment_id"]) for f in first["findings"]})
    )
    # The checklist ticked off what the opening said.
    for item in ("催收员身份", "所属机构", "来电目的"):
        await expect(page.locator(f'#checklist-items li[data-item="{item}"]')).to_have_attribute("data-state", "said")

    text = await page.locator("body").inner_text()
    assert PHONE_DIGITS not in text and "*" in await leak_card.inner_text(), await leak_card.inner_text()
    assert "call-zhao" not in text and "老赖" not in text and "骗子" not in text  # another collector's call
    # The live transcript stays on screen beside the cards.
    box = await page.locator("#transcript").bounding_box()
    assert box is not None and box["y"] + 100 < VIEWPORT["height"] and box["height"] > 150, box
    await screenshot(page, "screens-agent-2-second-call-masked-checklist")

    console = await _login(browser, live.http, "sup", "/")  # a supervisor's console, open before the ack
    alert = console.locator(f'#alerts li.alert[data-alert-id="{leak[0]["finding_id"]}"]')
    await expect(alert).to_be_visible(timeout=20_000)
    await expect(alert.locator(".collector-ack")).to_have_count(0)
    await leak_card.locator(".ap-ack").click()
    await expect(leak_card.locator(".ap-ack-note")).to_contain_text("liu")
    await screenshot(page, "screens-agent-3-acknowledged")
    await expect(alert.locator(".collector-ack")).to_contain_text("liu")  # the console heard of it at once
    await alert.scroll_into_view_if_needed()
    await screenshot(console, "screens-agent-3b-console-sees-the-ack")
    async with httpx.AsyncClient(base_url=live.http, headers={"Authorization": f"Bearer {admin}"}) as http:
        audit = (await http.get("/api/calls/call-liu-2/export")).json()["audit"]
    acks = [e for e in audit if e["kind"] == "warning_ack"]
    assert sorted((e["actor"], e["ref_id"]) for e in acks) == sorted(("liu", str(f["finding_id"])) for f in leak)
    # zhao's panel, for contrast: their own warning, none of liu's.
    await expect(other.locator('#warnings .ap-card[data-call-id="call-zhao"]').first).to_be_visible()
    assert "call-liu" not in await other.locator("body").inner_text()
    await screenshot(other, "screens-agent-4-other-collector")


def _joined() -> tuple[np.ndarray, int]:
    """dev03's opening (name, company, purpose) followed by dev06's agent reading out a mobile number."""
    opening, rate = _clip("dev03.wav", (0.0, 8.0))
    number, _ = _clip("dev06.wav", (16.3, 22.3))
    return np.concatenate([opening, number]), rate


# ---------------------------------------------------------------- (b) the auditor page, an archive of transcribed calls


async def _fill_archive(path: Path) -> None:
    """The dev calls' Whisper transcripts (manifest ``asr_text``) archived as the live path would, findings by the
    real rule pack."""
    settings = make_settings(path.parent, rules={"packs": ["cn_collection"], "extra_files": [], "watch": False})
    rules = RuleSet(settings.rules)
    tokenizer = Tokenizer(settings.rules.dir / settings.rules.user_dict)
    archive = Archive(path, tokenizer.cut_for_search)
    await archive.open()
    for call_id, call in _manifest().items():
        if call_id not in ("dev01", "dev03", "dev05", "dev08"):
            continue
        started = CallStarted(call_id, f"A-{call_id}", "pcm", (Speaker.AGENT, Speaker.CUSTOMER))
        await archive.start_call(started)
        for n, turn in enumerate(call["turns"]):
            speaker = Speaker(turn["speaker"])
            tr = Transcript(call_id, speaker, n, turn["asr_text"], turn["t0"], turn["t1"], True)
            text = normalise(tr.text, tokenizer)
            segment_id = await archive.add_segment(tr, text)
            for finding in rules.detect(tr, text):
                await archive.add_finding(finding, segment_id)
        await archive.end_call(call_id, "hangup", started.wall_time + call["duration_s"])
    await archive.aclose()


@pytest.fixture(scope="module")
def archived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("screens-archive")
    settings = make_settings(tmp, rules={"packs": ["cn_collection"], "extra_files": [], "watch": False})
    asyncio.run(seed_people(settings.archive.path, USERS, PASSWORD, BRIDGE_TOKEN))
    asyncio.run(_fill_archive(settings.archive.path))
    with LiveServer(settings) as server:
        yield server


async def test_an_auditor_finds_a_call_by_a_chinese_word_opens_it_and_exports_it(
    archived: LiveServer, browser: Browser, tmp_path: Path
) -> None:
    page = await _login(browser, archived.http, "aud", "/search")
    await page.fill("#q", "后果自负")
    await page.click("#search-form button[type=submit]")
    row = page.locator('#results-body tr[data-call-id="dev03"]')
    await expect(row).to_have_count(1)
    await expect(row.locator("mark")).to_have_text("后果自负")
    await screenshot(page, "screens-search-1-results")

    await row.click()
    focused = page.locator("#detail-transcript .line.focus-line")
    await expect(focused).to_have_count(1)
    await expect(focused.locator("mark.sev-hit")).to_have_text("后果自负")  # the hit, highlighted in the call
    header = await page.locator(".topbar").bounding_box()
    assert header is not None and header["y"] == 0 and await page.evaluate("window.scrollY") > 0  # sticky header
    await expect(page.locator("#search-form")).to_be_in_viewport()
    await screenshot(page, "screens-search-2-call-detail")

    async with page.expect_download() as download_info:
        await page.click("#export-link")
    download = await download_info.value
    saved = tmp_path / "evidence.json"
    await download.save_as(saved)
    bundle = json.loads(saved.read_text(encoding="utf-8"))
    assert bundle["call"]["call_id"] == "dev03" and bundle["exported_by"] == "aud" and bundle["audit_chain"]["intact"]

    async with page.context.expect_page() as report_info:
        await page.click("#report-link")
    report = await report_info.value
    await report.wait_for_load_state()
    await expect(report.locator("#chain")).to_contain_text("校验通过")
    head = (await report.locator("#head-hash").inner_text()).strip()
    assert len(head) == 64 and int(head, 16) >= 0
    await expect(report.locator("mark").first).to_be_visible()
    await screenshot(report, "screens-search-3-report")

    # A category-only search (no words): the calls with a privacy finding, numbers masked for the auditor.
    await page.bring_to_front()
    await page.fill("#q", "")
    await page.select_option("#category", "privacy_leak")
    await page.click("#search-form button[type=submit]")
    leak = page.locator('#results-body tr[data-call-id="dev05"]')
    await expect(leak.first).to_be_in_viewport()  # the new results are on screen, not the call opened before
    shown = await page.locator("#results-body").inner_text()
    assert "320106198709232138" not in shown and "6222021603884755" not in shown
    await screenshot(page, "screens-search-4-category-only")

    admin = await _token(archived, "adm")
    async with httpx.AsyncClient(base_url=archived.http, headers={"Authorization": f"Bearer {admin}"}) as http:
        audit = (await http.get("/api/calls/dev03/export")).json()["audit"]
    assert {("export", "aud"), ("report", "aud")} <= {(e["kind"], e["actor"]) for e in audit}
