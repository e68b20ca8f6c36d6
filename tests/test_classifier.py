"""Utterance classifier: a tiny model trained in seconds through the real training code path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from compliance_monitor.detect.classifier import (  # noqa: E402
    LABELS,
    ClassifierNotFound,
    TrainConfig,
    UtteranceClassifier,
    train_model,
)

pytestmark = pytest.mark.unit

THREAT = "再不还钱我们就派人上门找你算账"
SAFE = "好的感谢您的配合祝您生活愉快"

FIXTURES = [
    (THREAT, "agent", ["threat"]),
    ("你今天不还钱后果自负", "agent", ["threat"]),
    ("小心你家里人的安全", "agent", ["threat"]),
    ("你就是个废物垃圾", "agent", ["abuse"]),
    ("我是法院的法官现在通知你", "agent", ["impersonation"]),
    ("我已经告诉你领导你欠钱了", "agent", ["third_party_disclosure"]),
    ("你的身份证号是一一零一零五", "agent", ["privacy_leak"]),
    ("你们这帮畜生滚", "customer", ["customer_abuse"]),
    (SAFE, "agent", []),
    ("您的账单已经逾期请尽快还款", "agent", []),
    ("请核对一下您的手机尾号", "agent", []),
    ("我下个月发工资就还", "customer", []),
]


@pytest.fixture(scope="module")
def tiny() -> UtteranceClassifier:
    cfg = TrainConfig(
        hidden=32,
        layers=1,
        heads=2,
        intermediate=64,
        max_len=32,
        dropout=0.0,
        epochs=300,
        batch_size=12,
        lr=5e-3,
        warmup=0.05,
        min_char_count=1,
        threads=2,
    )
    return train_model(FIXTURES, cfg, log=lambda _msg: None)


def test_output_shape_and_labels(tiny: UtteranceClassifier) -> None:
    scores = tiny.predict([THREAT, SAFE, "你们这帮畜生滚"], ["agent", "agent", "customer"])
    assert len(scores) == 3
    for s in scores:
        assert tuple(s) == LABELS
        assert all(0.0 <= v <= 1.0 for v in s.values())
    assert scores[0]["customer_abuse"] == 0.0  # never for agent lines
    assert tiny.predict([], []) == []
    with pytest.raises(ValueError):
        tiny.predict(["x"], [])


def test_learns_threat_over_safe(tiny: UtteranceClassifier) -> None:
    threat, safe = tiny.predict([THREAT, SAFE], ["agent", "agent"])
    assert threat["threat"] > safe["threat"]
    assert threat["threat"] > 0.5 > safe["threat"]


def test_thresholds_applied(tiny: UtteranceClassifier) -> None:
    scores = dict.fromkeys(LABELS, 0.0) | {"threat": 0.6, "abuse": 0.3}
    tiny.thresholds = dict.fromkeys(LABELS, 0.5) | {"threat": 0.7, "abuse": 0.2}
    assert tiny.above_threshold(scores) == [("abuse", 0.3)]
    tiny.thresholds["threat"] = 0.55
    assert tiny.above_threshold(scores) == [("threat", 0.6), ("abuse", 0.3)]
    tiny.thresholds = dict.fromkeys(LABELS, 0.5)


def test_save_load_round_trip(tiny: UtteranceClassifier, tmp_path: Path) -> None:
    tiny.thresholds = dict.fromkeys(LABELS, 0.5) | {"threat": 0.42}
    tiny.save(tmp_path / "clf", metrics={"note": "unit test"})
    for name in ("config.json", "vocab.txt", "thresholds.json", "metrics.json"):
        assert (tmp_path / "clf" / name).is_file()
    loaded = UtteranceClassifier.load(tmp_path / "clf")
    assert loaded.thresholds["threat"] == 0.42
    assert json.loads((tmp_path / "clf" / "thresholds.json").read_text())["threat"] == 0.42
    texts, speakers = [THREAT, SAFE, "未见过的字"], ["agent", "agent", "customer"]
    for a, b in zip(tiny.predict(texts, speakers), loaded.predict(texts, speakers), strict=True):
        assert a == pytest.approx(b, abs=1e-5)
    tiny.thresholds = dict.fromkeys(LABELS, 0.5)


def test_batched_equals_single(tiny: UtteranceClassifier) -> None:
    texts = [THREAT, SAFE, "你就是个废物垃圾", "好"]
    speakers = ["agent", "agent", "agent", "customer"]
    batched = tiny.predict(texts, speakers)
    single = [tiny.predict([t], [s])[0] for t, s in zip(texts, speakers, strict=True)]
    for a, b in zip(batched, single, strict=True):
        assert a == pytest.approx(b, abs=1e-5)


def test_latency_helper(tiny: UtteranceClassifier) -> None:
    assert tiny.latency_ms(1, repeats=3) > 0


def test_load_missing_gives_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ClassifierNotFound, match="train_classifier.py"):
        UtteranceClassifier.load(tmp_path / "nope")


def test_ngram_model_scores_like_tfidf_and_logistic_regression(tmp_path: Path) -> None:
    """The exported n-gram model: sublinear tf × idf over char 1-3-grams, l2-normalised, then a sigmoid per label."""
    import math

    import numpy as np

    from compliance_monitor.detect.ngram import NgramModel, char_ngrams, marked

    assert char_ngrams("Ab  c") == ["a", "b", " ", "c", "ab", "b ", " c", "ab ", "b c"]
    vocab = {"ⓐ": 0, "滚": 1, "滚滚": 2}  # lower-cased like sklearn: the marker Ⓐ becomes ⓐ
    model = NgramModel(vocab, np.array([1.0, 2.0, 3.0]), np.array([[0.5, 4.0, 1.0]]), np.array([-2.0]), ["abuse"])
    text = marked("滚滚", "agent")  # ⓐ滚滚: ⓐ once, 滚 twice, 滚滚 once (plus unknown n-grams)
    x = np.array([1.0 * 1.0, (1 + math.log(2)) * 2.0, 1.0 * 3.0])
    x /= np.linalg.norm(x)
    expected = 1 / (1 + math.exp(-(-2.0 + float(np.array([0.5, 4.0, 1.0]) @ x))))
    assert model.predict_one(text)["abuse"] == pytest.approx(expected, rel=1e-6)
    assert model.predict_one(marked("你好", "agent"))["abuse"] < expected  # no abusive n-gram
    model.save(tmp_path)
    again = NgramModel.load(tmp_path)
    assert again is not None and again.predict_one(text) == pytest.approx(model.predict_one(text))
    assert NgramModel.load(tmp_path / "missing") is None


def test_ngram_model_is_averaged_with_the_transformer(tiny: UtteranceClassifier, tmp_path: Path) -> None:
    import numpy as np

    from compliance_monitor.detect.ngram import NgramModel

    labels = list(tiny.labels)
    # An n-gram model that is sure of threat (logit +20) and sure of nothing else (−20) whatever the text.
    ngram = NgramModel(
        {},
        np.zeros(0),
        np.zeros((len(labels), 0)),
        np.array([20.0 if lab == "threat" else -20.0 for lab in labels]),
        labels,
    )
    texts, speakers = ["今天天气不错", "你再不还钱小心点"], ["agent", "customer"]
    alone = tiny.predict(texts, speakers)
    both = UtteranceClassifier(tiny.model, tiny.encoder.vocab, tiny.thresholds, threads=None, ngram=ngram)
    for a, b, sp in zip(alone, both.predict(texts, speakers), speakers, strict=True):
        assert b["threat"] == pytest.approx((a["threat"] + 1.0) / 2, abs=1e-6)
        assert b["abuse"] == pytest.approx(a["abuse"] / 2, abs=1e-6)
        assert (b["customer_abuse"] == 0.0) is (sp == "agent")  # still forced off for the agent
    both.save(tmp_path)
    assert UtteranceClassifier.load(tmp_path, threads=None).ngram is not None
