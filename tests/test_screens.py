"""Issue 18, the collector panel's and the auditor page's backend: what to say instead (rule suggestions), the
disclosure checklist from the pack, acknowledging a warning (its collector only, audited with the person) and the
call report (masked, carrying the audit chain's head and the call's verification). Auth on, real users."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from fastapi.testclient import TestClient

from compliance_monitor.api.app import create_app
from compliance_monitor.api.session import HASHER
from compliance_monitor.archive.sqlite import Archive
from compliance_monitor.asr.scheduler import AsrScheduler
from compliance_monitor.bus.memory import InMemoryBus
from compliance_monitor.detect.calls import OmissionTracker
from compliance_monitor.detect.engine import RuleSet
from compliance_monitor.detect.rulepack import load_pack
from compliance_monitor.detect.rules import RuleEngine
from compliance_monitor.messages import (
    CALL_CATEGORIES,
    CATEGORY_TITLES,
    UTTERANCE_CATEGORIES,
    CallStarted,
    DisclosureEvent,
    Finding,
    FindingEvent,
    Severity,
    Speaker,
    Transcript,
)
from compliance_monitor.pipeline import CallSession, Services
from compliance_monitor.policy.engine import PolicyEngine
from compliance_monitor.privacy.mask import mask_text
from compliance_monitor.text.normalise import normalise
from compliance_monitor.text.tokenise import Tokenizer
from tests.conftest import REPO, make_settings
from tests.fakes import FakeDecoder

PASSWORD = "correct horse"
USERS = {
    "liu": ("collector", "A-liu"),
    "zhao": ("collector", "A-zhao"),
    "sup": ("supervisor", None),
    "aud": ("auditor", None),
    "adm": ("admin", None),
}
PHONE = "13812674590"
LEAK = f"你的手机号是{PHONE}没错吧"


def test_a_card_number_at_the_end_of_a_run_is_masked_not_a_crash() -> None:
    # A 16-digit card ending its run was once windowed as 19 digits: IndexError, a 500 on the auditor's search.
    assert mask_text("卡号6222021603884755,这些都是你的") == "卡号622*********4755,这些都是你的"
    assert mask_text("号码13812674590") == "号码138****4590"


@pytest.fixture(scope="module", params=["cn_collection", "us_fdcpa"])
def pack_engine(request: pytest.FixtureRequest) -> RuleEngine:
    return RuleEngine([load_pack(REPO / "rules" / f"{request.param}.yaml")])


def test_every_rule_a_collector_can_break_says_what_to_say_instead(pack_engine: RuleEngine) -> None:
    without = [r.id for r in pack_engine.rules.values() if r.speaker in ("agent", "both") and not r.suggestion.strip()]
    assert not without, f"collector rules without a suggestion: {without}"


def test_no_suggestion_breaks_a_rule_itself(pack_engine: RuleEngine, tokenizer: Tokenizer) -> None:
    for rule in pack_engine.rules.values():
        if not rule.suggestion:
            continue
        hits = {m.rule.id for m in pack_engine.match(normalise(rule.suggestion, tokenizer), Speaker.AGENT)}
        assert not hits, f"{rule.id}'s suggestion {rule.suggestion!r} fires {hits}"


def test_the_checklist_ticks_each_item_once_as_it_is_said(tokenizer: Tokenizer) -> None:
    pack = RuleEngine([load_pack(REPO / "rules" / "cn_collection.yaml")])
    tracker = OmissionTracker("c1", pack.omission_rules)
    first = tracker.observe(Speaker.AGENT, 1.0, normalise("喂，你好，我是老周", tokenizer))
    assert [item.name for _, item in first] == ["催收员身份"]
    again = tracker.observe(Speaker.AGENT, 3.0, normalise("我是瑞丰小额贷款的，来电是为了你逾期的借款", tokenizer))
    assert sorted(item.name for _, item in again) == ["所属机构", "来电目的"]
    assert tracker.observe(Speaker.AGENT, 5.0, normalise("我是老周，贷款的事", tokenizer)) == []
    assert tracker.due(60.0) == []  # everything was said in time: no omission finding


async def _seed(path: Path, tokenizer: Tokenizer) -> dict[str, int]:
    """Users, and two ended calls with a warning each: liu's (a phone number read out) and zhao's."""
    archive = Archive(path, tokenizer.cut_for_search)
    await archive.open()
    for name, (role, agent) in USERS.items():
        await archive.add_user(name, role, agent, HASHER.hash(PASSWORD), "test")
    ids = {}
    for call_id, agent, text, rule, category in (
        ("call-liu", "A-liu", LEAK, "privacy.mobile_number", "privacy_leak"),
        ("call-zhao", "A-zhao", "你就是个不要脸的老赖", "abuse.insult", "abuse"),
    ):
        started = CallStarted(call_id, agent, "pcm", (Speaker.AGENT,))
        await archive.start_call(started)
        tr = Transcript(call_id, Speaker.AGENT, 0, text, 1.0, 4.0, True)
        segment_id = await archive.add_segment(tr, normalise(text, tokenizer))
        words = PHONE if rule.startswith("privacy") else "不要脸"
        start = text.index(words)
        finding = Finding(
            call_id, Speaker.AGENT, 0, rule, category, Severity.HIGH, words, (start, start + len(words)),
            1.0, 4.0, "test finding",
        )  # fmt: skip
        ids[call_id] = await archive.add_finding(finding, segment_id)
        await archive.end_call(call_id, "hangup", started.wall_time + 10.0)
    await archive.aclose()
    return ids


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, tokenizer: Tokenizer) -> Iterator[tuple[TestClient, dict]]:
    tmp = tmp_path_factory.mktemp("screens")
    settings = make_settings(tmp, rules={"packs": ["cn_collection"], "extra_files": [], "watch": False})
    ids = asyncio.run(_seed(settings.archive.path, tokenizer))
    with TestClient(create_app(settings, FakeDecoder), client=("127.0.0.1", 50001)) as c:
        yield c, ids


def _login(c: TestClient, name: str) -> dict[str, str]:
    r = c.post("/api/auth/login", json={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    c.cookies.clear()
    return {"Authorization": f"Bearer {r.json()['token']}"}


def _audit(c: TestClient, call_id: str, kind: str) -> list[dict]:
    entries = c.get(f"/api/calls/{call_id}/export", headers=_login(c, "adm")).json()["audit"]
    return [e for e in entries if e["kind"] == kind]


def test_the_checklist_comes_from_the_pack(client: tuple[TestClient, dict]) -> None:
    c, _ = client
    rules = c.get("/api/disclosure/checklist", headers=_login(c, "liu")).json()["rules"]
    opening = next(r for r in rules if r["rule_id"] == "disclosure.opening_statement")
    assert opening["items"] == ["催收员身份", "所属机构", "来电目的"] and opening["within_s"] == 30


def test_only_the_calls_collector_acknowledges_its_warning_and_the_audit_names_them(
    client: tuple[TestClient, dict],
) -> None:
    c, ids = client
    liu_warning = ids["call-liu"]
    for name in ("zhao", "sup", "aud"):
        assert c.post(f"/api/warnings/{liu_warning}/ack", headers=_login(c, name)).status_code == 403, name
    assert c.post("/api/warnings/999999/ack", headers=_login(c, "liu")).status_code == 404
    assert _audit(c, "call-liu", "warning_ack") == []
    bus = c.app.state.monitor.services.bus  # type: ignore[attr-defined]
    feed = bus.subscribe(lambda e: e.type == "warning_acked", replay_live=False)
    first = c.post(f"/api/warnings/{liu_warning}/ack", headers=_login(c, "liu")).json()
    assert first == {"finding_id": liu_warning, "call_id": "call-liu", "acked_by": "liu", "already": False}
    acked = feed.queue.get_nowait()  # the supervisors' consoles hear of it at once...
    assert (acked.call_id, acked.finding_id, acked.acked_by) == ("call-liu", liu_warning, "liu")
    alerts = c.get("/api/alerts", params={"call": "call-liu"}, headers=_login(c, "sup")).json()["alerts"]
    [alert] = [a for a in alerts if a["alert_id"] == liu_warning]  # ... and a console opened later from the archive
    assert alert["collector_ack"]["actor"] == "liu"
    again = c.post(f"/api/warnings/{liu_warning}/ack", headers=_login(c, "liu")).json()
    assert again["already"] is True
    [entry] = _audit(c, "call-liu", "warning_ack")
    assert entry["actor"] == "liu" and entry["ref_id"] == str(liu_warning)
    acks = c.get("/api/calls/call-liu/acks", headers=_login(c, "liu")).json()["acks"]
    assert acks[str(liu_warning)]["actor"] == "liu"
    assert c.get("/api/calls/call-zhao/acks", headers=_login(c, "liu")).status_code == 403


def test_the_report_is_masked_carries_the_chain_and_is_audited(client: tuple[TestClient, dict]) -> None:
    c, _ = client
    r = c.get("/api/calls/call-liu/report.html", headers=_login(c, "aud"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert PHONE not in page and "138****4590" in page
    assert "<mark>138****4590</mark>" in page  # the finding's words marked in the transcript
    assert "泄露个人信息 · Personal data disclosed" in page  # the finding's category in words, not only its id
    head = re.search(r'id="head-hash">([0-9a-f]{64})<', page)
    assert head is not None
    assert 'class="chain ok"' in page
    assert c.get("/api/calls/call-liu/report.html", headers=_login(c, "sup")).status_code == 403
    admin_page = c.get("/api/calls/call-liu/report.html", headers=_login(c, "adm")).text
    assert PHONE in admin_page
    readers = [e["actor"] for e in _audit(c, "call-liu", "report")]
    assert readers == ["aud", "adm"]


def test_a_category_only_search_finds_the_call_masked(client: tuple[TestClient, dict]) -> None:
    c, _ = client
    r = c.get("/api/search", params={"category": "privacy_leak"}, headers=_login(c, "aud"))
    assert r.status_code == 200, r.text
    [hit] = r.json()["results"]
    assert hit["call_id"] == "call-liu" and PHONE not in hit["text"] and "138****4590" in hit["text"]
    assert (
        c.get("/api/search", params={"category": "abuse"}, headers=_login(c, "aud")).json()["results"][0]["call_id"]
        == "call-zhao"
    )


async def test_the_session_publishes_each_disclosure_item_once_and_the_suggestion_with_a_finding(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    from tests.test_pipeline import NoBridge, drain  # the analysis side driven with transcripts, as there

    settings = make_settings(tmp_path, rules={"packs": ["cn_collection"], "extra_files": [], "watch": False})
    archive = Archive(settings.archive.path, tokenizer.cut_for_search)
    await archive.open()
    rules = RuleSet(settings.rules)
    bus = InMemoryBus()
    services = Services(
        settings, cast(AsrScheduler, None), tokenizer, rules, PolicyEngine(settings.policy), archive, bus
    )
    started = CallStarted("c1", "A-liu", "pcm", (Speaker.AGENT, Speaker.CUSTOMER))
    await archive.start_call(started)
    session = CallSession(started, services, NoBridge())
    feed = bus.subscribe(lambda _event: True, replay_live=False)
    lines = ["喂，你好，我是老周", "我是瑞丰小额贷款的，来电是为了你逾期的借款", "我是老周，你就是个不要脸的老赖"]
    for n, text in enumerate(lines):
        await session.analyse(Transcript("c1", Speaker.AGENT, n, text, 2.0 * n, 2.0 * n + 1.5, True))
    events = drain(feed)
    await archive.aclose()
    ticks = [(e.item, e.t0) for e in events if isinstance(e, DisclosureEvent)]
    assert ticks == [("催收员身份", 0.0), ("所属机构", 2.0), ("来电目的", 2.0)]
    [insult] = [e for e in events if isinstance(e, FindingEvent)]
    assert insult.rule_id == "abuse.insult" and insult.suggestion == rules.engine.rules["abuse.insult"].suggestion
    assert insult.suggestion


def test_the_screens_and_the_reports_call_each_category_the_same() -> None:
    """ui/common.js titles findings on the screens; messages.CATEGORY_TITLES titles them in reports."""
    script = (REPO / "ui" / "common.js").read_text(encoding="utf-8")

    def js_table(name: str) -> dict[str, str]:
        body = re.search(rf"const {name} = {{(.*?)}};", script, re.S)
        assert body is not None, name
        return dict(re.findall(r'(\w+): "([^"]+)"', body.group(1)))

    assert js_table("CATEGORY_LABELS") == {c: zh for c, (zh, _) in CATEGORY_TITLES.items()}
    assert js_table("CATEGORY_NAMES_EN") == {c: en for c, (_, en) in CATEGORY_TITLES.items()}
    assert set(CATEGORY_TITLES) == set(UTTERANCE_CATEGORIES + CALL_CATEGORIES)
