"""Classifier findings on the live path (with a stand-in model): labels become findings, off the loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from compliance_monitor.detect.model import ModelDetector, load_model_detector
from compliance_monitor.messages import NormalisedText, Severity, Speaker, Transcript

pytestmark = pytest.mark.unit


class StandIn:
    def __init__(self, scores: dict[str, float], threshold: float = 0.5) -> None:
        self.scores, self.threshold, self.calls = scores, threshold, []

    def predict(self, texts: list[str], speakers: list[str]) -> list[dict[str, float]]:
        self.calls.append((texts, speakers))
        return [dict(self.scores) for _ in texts]

    def above_threshold(self, scores: dict[str, float]) -> list[tuple[str, float]]:
        return [(label, s) for label, s in scores.items() if s >= self.threshold]


def transcript(speaker: Speaker) -> Transcript:
    return Transcript("c1", speaker, 3, "你想想你家里人会怎么样", 10.0, 12.5, True)


TEXT = NormalisedText("你想想你家里人会怎么样", "你想想你家里人会怎么样", "你想想你家里人会怎么样", ())


async def test_labels_above_threshold_become_model_findings() -> None:
    model = StandIn({"threat": 0.91, "abuse": 0.2, "customer_abuse": 0.8})
    detector = ModelDetector(model)
    (finding,) = await detector.detect(transcript(Speaker.AGENT), TEXT)
    assert (finding.category, finding.source, finding.score, finding.rule_id) == (
        "threat",
        "model",
        0.91,
        "model.threat",
    )
    assert finding.severity is Severity.HIGH and "0.91" in finding.explanation
    assert (finding.t0, finding.t1, finding.segment_no) == (10.0, 12.5, 3)
    assert model.calls == [(["你想想你家里人会怎么样"], ["agent"])]
    detector.close()


async def test_customer_speech_only_yields_customer_abuse() -> None:
    detector = ModelDetector(StandIn({"threat": 0.9, "customer_abuse": 0.8}))
    findings = await detector.detect(transcript(Speaker.CUSTOMER), TEXT)
    assert [f.category for f in findings] == ["customer_abuse"]
    assert findings[0].severity is Severity.INFO
    detector.close()


async def test_only_configured_labels_raise_findings() -> None:
    from compliance_monitor.config import ClassifierSettings

    scores = {"threat": 0.9, "privacy_leak": 0.95}
    served = ModelDetector(StandIn(scores), ClassifierSettings().labels)  # PII is the rules' job by default
    assert [f.category for f in await served.detect(transcript(Speaker.AGENT), TEXT)] == ["threat"]
    everything = ModelDetector(StandIn(scores))
    assert {f.category for f in await everything.detect(transcript(Speaker.AGENT), TEXT)} == {"threat", "privacy_leak"}
    served.close()
    everything.close()


def test_missing_model_means_rules_only(tmp_path: Path) -> None:
    assert load_model_detector(tmp_path / "nothing-here", threads=1) is None
