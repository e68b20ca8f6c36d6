"""Rules reload without a restart — by API and by saving the file — and a broken pack never replaces good rules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, make_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GOOD = """pack: reload_test
version: {version}
language: zh
rules:
  - id: reload.word
    category: test_topic
    severity: warn
    speaker: both
    match:
      keywords: [{word}]
    explanation: {{collector: c, supervisor: s}}
"""


async def wait_for_rules(http: httpx.AsyncClient, predicate: Callable[[dict], bool], within_s: float = 10) -> dict:
    deadline = time.monotonic() + within_s
    while True:
        rules = (await http.get("/api/rules")).json()
        if predicate(rules) or time.monotonic() > deadline:
            return rules
        await asyncio.sleep(0.2)


def keywords(rules: dict) -> list[str]:
    return [r["match"]["keywords"][0] for p in rules["packs"] if p["pack"] == "reload_test" for r in p["rules"]]


async def test_reload_by_api_and_by_file_watch(tmp_path: Path) -> None:
    pack = tmp_path / "reload.yaml"
    pack.write_text(GOOD.format(version=1, word="交易"), encoding="utf-8")
    settings = make_settings(tmp_path, rules={"packs": [], "extra_files": [pack]})
    with LiveServer(settings) as server:
        async with httpx.AsyncClient(base_url=server.http) as http:
            generation = (await http.get("/api/rules")).json()["generation"]

            # a broken edit: the API reports line-numbered errors and the old rules stay in force
            pack.write_text(GOOD.format(version=2, word="城市").replace("severity: warn", "severty: warn"))
            response = await http.post("/api/rules/reload")
            assert response.status_code == 422
            assert any(f"{pack}:7:" in e and "severty" in e for e in response.json()["detail"]["errors"])
            assert keywords((await http.get("/api/rules")).json()) == ["交易"]

            # fixed and saved: the file watcher picks it up on its own
            pack.write_text(GOOD.format(version=3, word="城市"), encoding="utf-8")
            rules = await wait_for_rules(http, lambda r: keywords(r) == ["城市"])
            assert keywords(rules) == ["城市"] and rules["generation"] > generation

            response = await http.post("/api/rules/reload")
            assert response.status_code == 200 and response.json()["rules"] == 1
