"""Typed messages that flow one way through the pipeline.

Internal stage-to-stage messages are frozen dataclasses (cheap, no validation on the hot
audio path). Everything that leaves the process towards a browser or another service is an
``Event`` pydantic model, so the wire format has one schema (``GET /api/events/schema``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

# One category vocabulary for rule packs, the classifier, console events, the archive and every report.
# The first six are what the utterance classifier was first trained on (CLASSIFIER_CATEGORIES); the last three come
# from GB/T 45251—2025 and the banking association's 2026 guideline. A model built now has heads for all nine.
CLASSIFIER_CATEGORIES = ("threat", "abuse", "impersonation", "third_party_disclosure", "privacy_leak", "customer_abuse")
STANDARD_CATEGORIES = ("misrepresentation", "induced_borrowing", "improper_payment")
UTTERANCE_CATEGORIES = CLASSIFIER_CATEGORIES + STANDARD_CATEGORIES
CALL_CATEGORIES = ("missing_disclosure", "calling_hours", "call_frequency")  # decided per call, not per turn
# What each category is called on every screen and report (ui/common.js holds the same; a test keeps them equal).
CATEGORY_TITLES: dict[str, tuple[str, str]] = {
    "threat": ("威胁恐吓", "Threat"),
    "abuse": ("辱骂侮辱", "Abusive language"),
    "impersonation": ("冒充公检法", "Impersonating officials"),
    "third_party_disclosure": ("向第三方透露债务", "Debt disclosed to a third party"),
    "privacy_leak": ("泄露个人信息", "Personal data disclosed"),
    "missing_disclosure": ("未做身份披露", "Required disclosure missing"),
    "customer_abuse": ("客户辱骂", "Customer abuse"),
    "misrepresentation": ("虚假陈述/夸大后果", "Misrepresentation"),
    "induced_borrowing": ("诱导借贷还款", "Induced borrowing"),
    "improper_payment": ("违规收费/私人收款", "Improper payment request"),
    "calling_hours": ("非催收时段", "Outside permitted calling hours"),
    "call_frequency": ("联系频次超限", "Too many calls to this debtor"),
}


def category_title(category: str) -> str:
    """'非催收时段 · Outside permitted calling hours'; a category of a pack's own keeps its id."""
    zh, en = CATEGORY_TITLES.get(category, ("", ""))
    return f"{zh} · {en}" if zh else category


class Speaker(StrEnum):
    AGENT = "agent"  # the collector (催收员)
    CUSTOMER = "customer"  # the debtor or whoever answered


class Severity(StrEnum):
    INFO = "info"
    WARN = "warn"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARN: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


class ActionKind(StrEnum):
    WARN_COLLECTOR = "warn_collector"
    ALERT_SUPERVISOR = "alert_supervisor"
    HALT_CALL = "halt_call"


class Outcome(StrEnum):
    """What an action did to the phone call (archived in ``actions.outcome``, published to the console)."""

    PENDING = "pending"  # the bridge has been asked; an ``action_outcome`` event follows
    DONE = "done"
    FAILED = "failed"
    NOT_SUPPORTED = "not_supported"  # this bridge cannot do it (a Twilio stream cannot whisper to the collector)
    RECOMMENDED = "recommended"  # a halt the policy may not perform itself (policy.auto_halt off): awaits a supervisor


# --------------------------------------------------------------------------- stage messages


@dataclass(frozen=True, slots=True)
class CallStarted:
    call_id: str
    agent_id: str | None
    bridge: str
    speakers: tuple[Speaker, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    wall_time: float = field(default_factory=time.time)
    # Set when this connection carries one party's leg of a call whose legs arrive on separate connections
    # (Asterisk: one AudioSocket per leg); ``speakers`` then lists every leg of the call (see Monitor.live_call).
    leg: Speaker | None = None


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """PCM for one speaker, already decoded to float32 mono at 16 kHz.

    ``t`` is the stream time (seconds since the call started) of the first sample, so
    timestamps stay right even when frames are dropped or a track starts late.
    """

    call_id: str
    speaker: Speaker
    pcm: np.ndarray
    t: float

    @property
    def duration(self) -> float:
        return len(self.pcm) / 16_000


@dataclass(frozen=True, slots=True)
class CallEnded:
    call_id: str
    reason: str
    wall_time: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class SpeechSegment:
    """Audio between two VAD boundaries (``final``) or the growing head of one (partial)."""

    call_id: str
    speaker: Speaker
    segment_no: int
    t0: float
    t1: float
    audio: np.ndarray
    final: bool


@dataclass(frozen=True, slots=True)
class Transcript:
    call_id: str
    speaker: Speaker
    segment_no: int
    text: str
    t0: float
    t1: float
    final: bool
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    asr_latency_s: float = 0.0  # from the segment's end (audio time) to the result


@dataclass(frozen=True, slots=True)
class NormalisedText:
    raw: str
    text: str  # simplified, half-width, no spaces: what rules and search see
    digits: str  # as ``text`` with Chinese numerals turned into Arabic digits (PII checks)
    tokens: tuple[str, ...]  # jieba tokens of ``text``


@dataclass(frozen=True, slots=True)
class Finding:
    call_id: str
    speaker: Speaker
    segment_no: int
    rule_id: str
    category: str
    severity: Severity
    matched_text: str
    span: tuple[int, int]  # offsets into NormalisedText.text (.digits for rules on the digits field)
    t0: float
    t1: float
    explanation: str  # for the supervisor
    collector_explanation: str = ""  # what the collector sees: short, calm, what to do instead
    source: Literal["rule", "model"] = "rule"
    score: float = 1.0
    action_hint: ActionKind | None = None
    rule_source: str = ""  # the rule's `source`: the document and clause it enforces ("" for model findings)


@dataclass(frozen=True, slots=True)
class ControlResult:
    """What a bridge did when asked to act on the phone call (``CallControl.hangup`` / ``warn_agent``)."""

    outcome: Outcome
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Action:
    call_id: str
    kind: ActionKind
    finding: Finding
    reason: str


# --------------------------------------------------------------------------- wire events


class _EventBase(BaseModel):
    call_id: str
    agent_id: str | None = None
    ts: float = Field(default_factory=time.time, description="server wall time, Unix seconds")


class CallStartedEvent(_EventBase):
    type: Literal["call_started"] = "call_started"
    bridge: str
    speakers: list[Speaker]
    metadata: dict[str, Any] = Field(default_factory=dict)


class TranscriptEvent(_EventBase):
    type: Literal["transcript"] = "transcript"
    speaker: Speaker
    segment_no: int
    text: str
    t0: float
    t1: float
    final: bool
    segment_id: int | None = Field(None, description="archive row id (finals only)")
    asr_s: float | None = Field(None, description="finals: seconds from the segment's end to its transcript")


class FindingEvent(_EventBase):
    type: Literal["finding"] = "finding"
    finding_id: int
    speaker: Speaker
    segment_no: int
    rule_id: str
    category: str
    severity: Severity
    matched_text: str
    span: tuple[int, int]
    t0: float
    t1: float
    explanation: str
    collector_explanation: str
    source: Literal["rule", "model"]
    score: float
    rule_source: str = Field("", description="the document and clause the rule enforces; empty for model findings")
    suggestion: str = Field("", description="what the collector could say instead (the rule's `suggestion`)")


class DisclosureEvent(_EventBase):
    """One item the collector must say early in the call (an omission rule's ``required``) was just said."""

    type: Literal["disclosure"] = "disclosure"
    rule_id: str
    item: str = Field(description="the required item's name, as the pack names it (催收员身份, 所属机构…)")
    speaker: Speaker
    t0: float = Field(description="stream time of the segment that said it")


class FindingConfirmedEvent(_EventBase):
    """A finding raised on a partial transcript that the segment's final bears out: from now on it quotes the
    final's words (which the archived segment holds; the partial's may not be in it)."""

    type: Literal["finding_confirmed"] = "finding_confirmed"
    finding_id: int
    speaker: Speaker
    segment_no: int
    segment_id: int | None = Field(None, description="the final's archive row")
    matched_text: str
    span: tuple[int, int]
    t0: float
    t1: float


class FindingWithdrawnEvent(_EventBase):
    """A finding raised on a partial transcript that the segment's final transcript does not bear out."""

    type: Literal["finding_withdrawn"] = "finding_withdrawn"
    finding_id: int
    speaker: Speaker
    segment_no: int
    reason: str


class ActionEvent(_EventBase):
    type: Literal["action"] = "action"
    action_id: int
    action: ActionKind
    finding_id: int | None
    category: str | None
    severity: Severity | None
    reason: str
    outcome: Outcome | None = Field(
        None, description="halt_call: pending / recommended / done...; warn_collector: the audio prompt's outcome"
    )
    detail: str = ""


class ActionOutcomeEvent(_EventBase):
    """What the bridge did with an action published as ``pending``: the phone call ended, the prompt played..."""

    type: Literal["action_outcome"] = "action_outcome"
    action_id: int
    action: ActionKind
    outcome: Outcome
    detail: str = ""


class MonitoringLostEvent(_EventBase):
    """The call goes on, but nothing listens to it any more: a supervisor must know, and why."""

    type: Literal["monitoring_lost"] = "monitoring_lost"
    reason: str
    message: str


class CallEndedEvent(_EventBase):
    type: Literal["call_ended"] = "call_ended"
    reason: str


class ErrorEvent(_EventBase):
    type: Literal["error"] = "error"
    code: str
    message: str


class AlertUpdatedEvent(_EventBase):
    """A supervisor acknowledged, assigned, resolved or annotated an alert (one alert per finding): every open
    console shows the new state. ``agent_id`` stays empty, so collectors' feeds never carry supervisors' notes."""

    type: Literal["alert_updated"] = "alert_updated"
    alert_id: int = Field(description="the finding's id")
    change: Literal["acknowledged", "assigned", "resolved", "note"]
    actor: str
    alert: dict[str, Any] = Field(description="the alert as GET /api/alerts returns it (masked)")


class WarningAckedEvent(_EventBase):
    """The collector acknowledged a warning on their screen: the supervisor's alert for that finding says so."""

    type: Literal["warning_acked"] = "warning_acked"
    finding_id: int
    acked_by: str


Event = Annotated[
    CallStartedEvent
    | TranscriptEvent
    | FindingEvent
    | FindingConfirmedEvent
    | FindingWithdrawnEvent
    | DisclosureEvent
    | ActionEvent
    | ActionOutcomeEvent
    | MonitoringLostEvent
    | CallEndedEvent
    | ErrorEvent
    | AlertUpdatedEvent
    | WarningAckedEvent,
    Field(discriminator="type"),
]
