"""Shared fixtures: real audio from ../shared, and a real monitor server on a free port."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from compliance_monitor.audio.wavfile import read_wav
from compliance_monitor.config import Settings
from compliance_monitor.detect.rules import RuleEngine
from compliance_monitor.messages import Speaker
from compliance_monitor.text.normalise import normalise
from compliance_monitor.text.tokenise import Tokenizer

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CM_SHARED_DIR", REPO.parent / "shared"))
AUDIO = SHARED / "audio"
DATA = Path(__file__).parent / "data"

# AISHELL-1 test utterances (Apache-2.0) and their reference transcripts.
AISHELL = {
    "BAC009S0764W0121.wav": "甚至出现交易几乎停滞的情况",
    "BAC009S0764W0122.wav": "一二线城市虽然也处于调整中",
}


def pytest_sessionstart(session: pytest.Session) -> None:
    if not AUDIO.is_dir():
        pytest.exit(f"test audio not found: {AUDIO} (../shared beside the checkout, or set CM_SHARED_DIR)", 2)


def load_audio(name: str) -> np.ndarray:
    audio, rate = read_wav(AUDIO / name)
    assert rate == 16_000
    return audio[:, 0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """The real app under uvicorn in a thread with its own event loop, as production runs it."""

    def __init__(self, settings: Settings, decoder_factory: Any = None) -> None:
        import uvicorn

        from compliance_monitor.api.app import create_app

        self.settings = settings
        self.port = settings.server.port
        self.app = create_app(settings, decoder_factory)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", ws_max_size=4 * 1024 * 1024
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    """The project's tokenizer with the domain dictionary; one per session (jieba takes ~0.5 s to start)."""
    return Tokenizer(REPO / "rules" / "user_dict.txt")


def fired(engine: RuleEngine, tokenizer: Tokenizer, sentence: str, speaker: Speaker = Speaker.AGENT) -> set[str]:
    """Ids of the rules that fire on ``sentence``."""
    return {m.rule.id for m in engine.match(normalise(sentence, tokenizer), speaker)}


def make_settings(tmp: Path, **overrides: object) -> Settings:
    test_rules = DATA / "test_rules.yaml"
    base: dict[str, object] = {
        "server": {"host": "127.0.0.1", "port": free_port()},
        "audiosocket": {"port": 0},  # any free port: tests run beside a real monitor on 9092
        "archive": {"path": tmp / "archive.sqlite3"},
        "asr": {"cache_dir": Path.home() / ".cache" / "compliance-monitor"},
        # Only the test pack: the live-path tests must not depend on the time of day (calling-hours rules)
        # or on what the AISHELL clips leave unsaid (the opening-disclosure rule). The real pack is tested
        # in test_rules.py and end to end by test_cli.py's demo run.
        "rules": {"packs": [], "extra_files": [test_rules]},
        "classifier": {"enabled": False},  # the live-path tests check rules; tests/test_model.py checks the model path
    }
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


async def seed_people(path: Path, users: dict[str, tuple[str, str | None]], password: str, bridge_token: str) -> None:
    """Users (name -> role, agent id) and a bridge API token in the archive at ``path``: auth is then on."""
    from compliance_monitor.api.auth import hash_secret
    from compliance_monitor.api.session import HASHER
    from compliance_monitor.archive.sqlite import Archive

    archive = Archive(path, lambda text: [])
    await archive.open()
    for name, (role, agent) in users.items():
        await archive.add_user(name, role, agent, HASHER.hash(password), "test")
    await archive.add_token("bridge", "bridge", None, hash_secret(bridge_token), "test")
    await archive.aclose()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(make_settings(tmp_path_factory.mktemp("server"))) as server:
        yield server
