"""The typed messages that flow, one way, between the analysis stages of one call."""

from __future__ import annotations

from dataclasses import dataclass

from compliance_monitor.messages import Action, Finding, NormalisedText, Transcript

FindingKey = tuple[str, str, int]  # (rule, speaker, segment): a partial's finding and its final's are the same one


def finding_key(finding: Finding) -> FindingKey:
    return (finding.rule_id, finding.speaker.value, finding.segment_no)


@dataclass(frozen=True, slots=True)
class Said:
    """A final of one speaker, kept as context for the next ones."""

    t0: float
    t1: float
    text: NormalisedText


@dataclass(frozen=True, slots=True)
class Heard:
    """A transcript (partial or final) with its normalised text; empty text: ASR heard nothing after all."""

    transcript: Transcript
    text: NormalisedText


@dataclass(frozen=True, slots=True)
class Segment:
    """A transcript with something said, published to the feeds and (finals only) archived."""

    transcript: Transcript
    text: NormalisedText
    segment_id: int | None  # the archive's id of a final; None for a partial
    earlier: tuple[Said, ...]  # the speaker's previous finals, oldest first
    first_speech: bool = False  # the first final of the call that said anything


@dataclass(frozen=True, slots=True)
class Unsaid:
    """A segment whose final heard nothing: what its partials raised is taken back."""

    transcript: Transcript


@dataclass(frozen=True, slots=True)
class RulesChecked:
    """A final the rules have read, with the categories they named (the classifier adds only others)."""

    segment: Segment
    named: frozenset[str]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A finding to raise. ``provisional``: raised on a partial, until its final confirms or withdraws it."""

    finding: Finding
    segment_id: int | None
    provisional: bool = False


@dataclass(frozen=True, slots=True)
class Confirmed:
    """The final bears out a finding raised on its partial: ``finding`` is the final's own."""

    finding: Finding
    segment_id: int | None


@dataclass(frozen=True, slots=True)
class Withdrawn:
    """A finding raised on a partial that the final does not bear out (ASR revised what it heard)."""

    finding: Finding


@dataclass(frozen=True, slots=True)
class Raised:
    """A finding archived and published, with its archive id."""

    finding_id: int
    finding: Finding


@dataclass(frozen=True, slots=True)
class Decided:
    """An action the policy wants for a raised finding; the session carries it out on the call."""

    action: Action
    finding_id: int


Frame = Transcript | Heard | Segment | Unsaid | RulesChecked | Candidate | Confirmed | Withdrawn | Raised | Decided
