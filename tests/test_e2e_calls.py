"""A labelled collection call (../shared/calls/dev, stereo: agent ch0, customer ch1) through the Twilio
bridge with both tracks, against the real Chinese rule pack: call-level and PII rules fire live."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from compliance_monitor.ingest.replay import replay
from tests.conftest import SHARED, LiveServer, make_settings
from tests.wsclient import record_feed

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CALLS = SHARED / "calls" / "dev"


def manifest(call_id: str) -> dict:
    for line in (CALLS / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        call = json.loads(line)
        if call["call_id"] == call_id:
            return call
    raise KeyError(call_id)


@pytest.fixture(scope="module")
def cn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path_factory.mktemp("cn"), rules={"packs": ["cn_collection"]})
    with LiveServer(settings) as server:
        yield server


async def test_privacy_leak_and_missing_disclosure_fire_on_a_live_call(cn_server: LiveServer) -> None:
    call = manifest("dev06")
    async with record_feed(f"{cn_server.ws}/ws/console") as feed:
        await replay(
            CALLS / call["file"],
            f"{cn_server.ws}/bridge/twilio",
            bridge="twilio",
            speed=3.0,
            call_id="CA-dev06",
            agent_id="A-dev",
        )
        events = await feed.wait_call_ended("CA-dev06", within_s=120)
    transcripts = [e for e in events if e["type"] == "transcript" and e["final"]]
    assert {e["speaker"] for e in transcripts} == {"agent", "customer"}  # both Twilio tracks
    findings = [e for e in events if e["type"] == "finding"]
    agent_categories = {f["category"] for f in findings if f["speaker"] == "agent"}
    expected = {e["category"] for e in call["expected"] if e["speaker"] == "agent"}
    assert expected <= agent_categories, (expected, findings)
    leak = next(f for f in findings if f["category"] == "privacy_leak")
    leak_turn = call["turns"][next(e["turn_index"] for e in call["expected"] if e["category"] == "privacy_leak")]
    assert leak["t0"] <= leak_turn["t1"] and leak["t1"] >= leak_turn["t0"]  # on the turn that read it out
    # no agent violation of the categories this call does not contain
    assert not agent_categories & {"threat", "abuse", "impersonation", "third_party_disclosure"}, findings


def test_dev_calls_are_where_the_tests_expect_them() -> None:
    assert Path(CALLS / "dev06.wav").is_file()
