"""Classifier findings on the live path (with a stand-in model): labels become findings, off the loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from compliance_monitor.analysis.frames import Said
from compliance_monitor.analysis.model import same_breath
from compliance_monitor.detect.model import ModelDetector, RecentScores, hits_in_context, load_model_detector
from compliance_monitor.messages import NormalisedText, Severity, Speaker, Transcript
from compliance_monitor.text.normalise import normalise
from compliance_monitor.text.tokenise import Tokenizer

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


class SplitThreat(StandIn):
    """Says threat only for text holding both halves of a conditional threat: 不还 ... 家里人."""

    def __init__(self) -> None:
        super().__init__({})

    def predict(self, texts: list[str], speakers: list[str]) -> list[dict[str, float]]:
        self.calls.append((texts, speakers))
        return [{"threat": 0.8 if "不还" in t and "家里人" in t else 0.1} for t in texts]


def test_a_threat_cut_in_two_by_a_pause_is_caught_with_context() -> None:
    model = SplitThreat()
    first, second = "你要是今天还不还", "你家里人会怎么样"
    assert hits_in_context(model, second, "agent", [first], window=0) == []
    (hit,) = hits_in_context(model, second, "agent", ["您好", first], window=1)
    assert (hit.label, hit.score, hit.context) == ("threat", 0.8, 1)
    # one batch: the segment, then the previous one joined to it and alone
    assert model.calls[-1][0] == [second, f"{first}，{second}", first]


def test_context_does_not_raise_again_what_the_previous_segment_said() -> None:
    model = SplitThreat()
    assert hits_in_context(model, "好的", "agent", ["今天不还你家里人就知道了"], window=2) == []


def test_joined_view_keeps_the_end_where_the_segment_is() -> None:
    model = SplitThreat()
    long_context = "不还" + "啊" * 100
    hits_in_context(model, "家里人", "agent", [long_context], window=1)
    joined = model.calls[-1][0][1]
    assert len(joined) == 60 and joined.endswith("，家里人")


def test_the_previous_final_alone_is_read_once() -> None:
    model = SplitThreat()
    scored = RecentScores(model, size=8)
    finals = ["你要是今天还不还", "你家里人会怎么样", "我可不敢保证", "你自己想清楚"]
    remembered = [hits_in_context(scored, text, "agent", finals[:i], window=1) for i, text in enumerate(finals)]
    fresh = [hits_in_context(SplitThreat(), text, "agent", finals[:i], window=1) for i, text in enumerate(finals)]
    assert remembered == fresh and remembered[1][0].context == 1
    read = [texts for texts, _speakers in model.calls]
    assert read[1] == ["你家里人会怎么样", "你要是今天还不还，你家里人会怎么样"]  # not the first final again
    assert sum(map(len, read)) == 1 + 2 * 3
    hits_in_context(scored, finals[1], "customer", finals[:1], window=1)  # same words, other speaker: read anew
    assert len(model.calls[-1][0]) == 3


def test_remembered_scores_are_bounded() -> None:
    model = SplitThreat()
    scored = RecentScores(model, size=2)
    scored.predict(["a", "b", "c"], ["agent"] * 3)
    scored.predict(["a"], ["agent"])  # forgotten: only b and c were kept
    assert model.calls[-1][0] == ["a"]


async def test_context_findings_say_they_read_the_previous_segment() -> None:
    detector = ModelDetector(SplitThreat(), context=1)
    tr = Transcript("c1", Speaker.AGENT, 4, "你家里人会怎么样", 13.0, 14.5, True)
    previous = NormalisedText("你要是今天还不还", "你要是今天还不还", "你要是今天还不还", ())
    now = NormalisedText("你家里人会怎么样", "你家里人会怎么样", "你家里人会怎么样", ())
    (finding,) = await detector.detect(tr, now, (previous,))
    assert finding.category == "threat" and "结合此前 1 句" in finding.explanation
    assert finding.segment_no == 4
    assert await ModelDetector(SplitThreat()).detect(tr, now, (previous,)) == []  # context 0: segment alone
    detector.close()


def said(t0: float, t1: float, text: str) -> Said:
    return Said(t0, t1, NormalisedText(text, text, text, ()))


def test_only_finals_a_short_pause_apart_are_joined() -> None:
    history = [said(0.0, 3.0, "您好"), said(9.0, 11.0, "你要是今天还不还"), said(11.6, 12.4, "我跟你讲")]
    # 12.4 -> 13.0 and 11.0 -> 11.6 are pauses inside a sentence; 3.0 -> 9.0 is another turn
    assert [t.text for t in same_breath(history, 13.0, 2.0)] == ["你要是今天还不还", "我跟你讲"]
    assert same_breath(history, 20.0, 2.0) == ()  # after a long silence: a new sentence
    assert same_breath([], 1.0, 2.0) == ()


# --------------------------------------------------------------------------- the classifier a fresh install runs


def test_a_fresh_install_runs_the_bundled_ngram_classifier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import compliance_monitor.resources as resources

    default = tmp_path / "models" / "classifier"  # not built, as after `make install`
    monkeypatch.setattr(resources, "default_classifier_dir", lambda: default)
    with caplog.at_level("INFO"):
        detector = load_model_detector(default, threads=1, labels=["threat", "abuse"])
    assert detector is not None and detector.labels == {"threat", "abuse"}
    assert "bundled n-gram classifier" in caplog.text
    detector.close()
    # a path someone configured and did not build is not silently replaced
    assert load_model_detector(tmp_path / "elsewhere", threads=1) is None


def test_the_bundled_ngram_classifier_scores_collection_lines() -> None:
    from compliance_monitor.detect.classifier import UtteranceClassifier
    from compliance_monitor.resources import bundled_classifier_dir

    clf = UtteranceClassifier.load(bundled_classifier_dir(), threads=1)
    assert clf.model is None and "threat" in clf.labels
    threat, lawful, swearing = clf.predict(
        ["你再不还钱，我就找人上门收拾你全家", "您好，这边提醒您本月账单已出，请按时还款", "你他妈的傻逼"],
        ["agent", "agent", "agent"],
    )
    assert ("threat", threat["threat"]) in clf.above_threshold(threat)
    assert clf.above_threshold(lawful) == []
    assert swearing["customer_abuse"] == 0.0  # an agent line is never customer abuse
    assert 0.5 <= clf.thresholds["threat"] <= 1.0


# Tuning lines the classifier is not trained on (tests/data/utterances_standard_dev3.jsonl, ids sd3_…): one per new
# category, and lawful mirror images of each.
STANDARD_VIOLATIONS = [
    ("misrepresentation", "我们已经把您报给了全国失信黑名单，坐飞机高铁都会受限。"),
    ("induced_borrowing", "您看能不能用信用卡先套一笔出来，把我们这边结清。"),
    ("improper_payment", "你把钱打到我个人微信上，我给你销账。"),
]
STANDARD_HARD_NEGATIVES = [
    "根据征信管理条例，逾期记录会如实报送人行征信系统，结清后保留五年。",
    "如果一直协商不成，我们公司可能会依法向法院提起诉讼，最终以法院判决为准。",
    "请您通过官方APP或者我们公司的对公账户还款，不要转给任何个人。",
    "您可以申请分期还款，我们按照规定帮您提交个性化分期方案。",
    "请不要为了还款去借网贷或者高利贷，那样只会让负担更重。",
]


@pytest.mark.parametrize(("label", "text"), STANDARD_VIOLATIONS)
def test_the_bundled_classifier_has_heads_for_the_standards_categories(label: str, text: str) -> None:
    from compliance_monitor.config import Settings
    from compliance_monitor.detect.classifier import UtteranceClassifier
    from compliance_monitor.resources import bundled_classifier_dir

    clf = UtteranceClassifier.load(bundled_classifier_dir(), threads=1)
    assert label in clf.labels and label in Settings().classifier.labels  # scored, and raised by the pipeline
    (scores,) = clf.predict([text], ["agent"])
    assert [lab for lab, _ in clf.above_threshold(scores)] == [label]
    assert clf.thresholds[label] >= 0.5


@pytest.mark.parametrize(("label", "text"), STANDARD_VIOLATIONS)
async def test_the_served_detector_raises_the_standards_categories(label: str, text: str, tokenizer: Tokenizer) -> None:
    """Through the detector the pipeline runs, with the default labels: the heads are not only scored but raised."""
    from compliance_monitor.config import Settings
    from compliance_monitor.resources import bundled_classifier_dir

    detector = load_model_detector(bundled_classifier_dir(), threads=1, labels=Settings().classifier.labels)
    assert detector is not None
    try:
        tr = Transcript("c-std", Speaker.AGENT, 1, text, 0.0, 3.0, True)
        findings = await detector.detect(tr, normalise(text, tokenizer))
    finally:
        detector.close()
    assert [(f.category, f.source, f.severity) for f in findings] == [(label, "model", Severity.HIGH)]
    assert findings[0].explanation.startswith("模型判断")


def test_the_bundled_classifier_leaves_lawful_talk_of_the_standards_topics_alone() -> None:
    from compliance_monitor.detect.classifier import UtteranceClassifier
    from compliance_monitor.resources import bundled_classifier_dir

    clf = UtteranceClassifier.load(bundled_classifier_dir(), threads=1)
    for text, scores in zip(
        STANDARD_HARD_NEGATIVES,
        clf.predict(STANDARD_HARD_NEGATIVES, ["agent"] * len(STANDARD_HARD_NEGATIVES)),
        strict=True,
    ):
        assert clf.above_threshold(scores) == [], text


async def test_the_demo_call_shows_a_model_finding_next_to_the_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bundled call, as scripted, through both detectors as the pipeline combines them (a model finding only
    for a category no rule raised on that segment): a fresh install's demo shows a finding with source "model",
    and it is one the script labels, on an agent turn; no lawful turn raises one."""
    import json

    import compliance_monitor.resources as resources
    from compliance_monitor.config import Settings
    from compliance_monitor.detect.engine import pack_files
    from compliance_monitor.detect.rules import RuleEngine
    from compliance_monitor.text.normalise import normalise
    from compliance_monitor.text.tokenise import Tokenizer

    monkeypatch.setattr(resources, "default_classifier_dir", lambda: tmp_path / "models" / "classifier")
    settings = Settings()
    detector = load_model_detector(
        tmp_path / "models" / "classifier", threads=1, labels=settings.classifier.labels, context=0
    )
    assert detector is not None  # the shipped n-gram classifier
    engine = RuleEngine.from_files(pack_files(settings.rules), regime=settings.rules.regime)
    tokenizer = Tokenizer(settings.rules.dir / settings.rules.user_dict)
    script = json.loads((resources.assets_dir() / "demo_call.json").read_text(encoding="utf-8"))
    model_findings = []
    for n, turn in enumerate(script["turns"]):
        speaker = Speaker(turn["speaker"])
        text = normalise(turn["text"], tokenizer)
        named = {m.rule.category for m in engine.match(text, speaker)}
        tr = Transcript("demo", speaker, n, turn["text"], turn["t0"], turn["t1"], True)
        for finding in await detector.detect(tr, text):
            if finding.category not in named:
                model_findings.append((finding, set(turn["labels"])))
    detector.close()
    assert model_findings, "the demo would show rule findings only"
    for finding, labels in model_findings:
        assert finding.source == "model" and finding.speaker is Speaker.AGENT
        assert finding.category in labels, (finding.category, labels)


def test_pruning_keeps_the_heaviest_ngrams() -> None:
    import numpy as np

    from compliance_monitor.detect.ngram import NgramModel

    vocab = {"滚": 0, "你": 1, "好": 2, "钱": 3}
    coef = np.array([[3.0, 0.1, -2.0, 0.2]], dtype=np.float32)
    model = NgramModel(vocab, np.ones(4, np.float32), coef, np.zeros(1, np.float32), ["abuse"])
    small = model.pruned(2)
    assert set(small.vocab) == {"滚", "好"} and small.coef.shape == (1, 2)
    assert small.coef[0, small.vocab["滚"]] == 3.0 and small.coef[0, small.vocab["好"]] == -2.0
    assert model.pruned(10) is model
    assert small.predict_one("滚")["abuse"] > 0.9 and small.predict_one("钱")["abuse"] == 0.5
