"""Settings: env vars (nested and the flat CM_ASR_MODEL), config files, and fail-fast validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from compliance_monitor.config import Settings, load_config_file

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CM_ASR_MODEL", "CM_ASR__MODEL", "CM_CONFIG_FILE", "CM_SERVER__HOST", "CM_AUTH__TOKENS"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_the_embedded_setup() -> None:
    s = Settings()
    assert (s.server.host, s.bus.backend, s.asr.model, s.asr.device) == ("127.0.0.1", "memory", "base", "auto")
    assert (s.rules.dir / "cn_collection.yaml").is_file()


def test_nested_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CM_ASR__BEAM_SIZE", "3")
    monkeypatch.setenv("CM_POLICY__AUTO_HALT", "true")
    s = Settings()
    assert s.asr.beam_size == 3 and s.policy.auto_halt is True


@pytest.mark.parametrize("name", ["CM_ASR_MODEL", "CM_ASR__MODEL"])
def test_model_from_either_env_spelling(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "/models/whisper-small-ct2")
    assert Settings().asr.model == "/models/whisper-small-ct2"


def test_config_file_is_read_and_env_overrides_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "cm.toml"
    path.write_text('[asr]\nbeam_size = 2\nlanguage = "zh"\n[server]\nport = 9001\n')
    monkeypatch.setenv("CM_CONFIG_FILE", str(path))
    monkeypatch.setenv("CM_SERVER__PORT", "9002")
    s = Settings()
    assert s.asr.beam_size == 2 and s.server.port == 9002


def test_yaml_config_file(tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text("vad:\n  min_silence_ms: 400\n")
    assert load_config_file(path) == {"vad": {"min_silence_ms": 400}}
    path.write_text("- not a mapping\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config_file(path)


def test_network_settings_load_and_the_server_decides_on_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    # Users live in the archive, so whether auth is on is known only when the server starts: a network bind with
    # no users and no tokens is refused then (tests/test_people.py::test_auth_off_acts_as_anonymous...).
    monkeypatch.setenv("CM_SERVER__HOST", "0.0.0.0")
    assert not Settings().loopback
    monkeypatch.setenv("CM_AUTH__TOKENS", '{"s3cret-token": "supervisor"}')
    assert Settings().auth.tokens == {"s3cret-token": "supervisor"}


@pytest.mark.parametrize("tokens", ['{"changeme": "supervisor"}', '{"tok": "root"}'])
def test_bad_tokens_fail_fast(monkeypatch: pytest.MonkeyPatch, tokens: str) -> None:
    monkeypatch.setenv("CM_AUTH__TOKENS", tokens)
    with pytest.raises(ValidationError):
        Settings()
