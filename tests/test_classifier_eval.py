"""`classifier eval`: per-label confusion counts for the classifier, the rules and both, and the CLI's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compliance_monitor.cli import main
from compliance_monitor.detect.classifier_eval import as_dict, confusion, predictions, report, split_in_two
from compliance_monitor.detect.evaluate import Utterance
from compliance_monitor.detect.rules import RuleEngine
from compliance_monitor.messages import Speaker
from compliance_monitor.text.tokenise import Tokenizer

pytestmark = pytest.mark.unit


class StandIn:
    """Says threat for lines with 小心 and privacy_leak for every line (a label it is not served for)."""

    def predict(self, texts: list[str], speakers: list[str]) -> list[dict[str, float]]:
        return [{"threat": 0.9 if "小心" in t else 0.1, "privacy_leak": 0.9} for t in texts]

    def above_threshold(self, scores: dict[str, float]) -> list[tuple[str, float]]:
        return [(lab, s) for lab, s in scores.items() if s >= 0.5]


@pytest.fixture(scope="module")
def cn_engine() -> RuleEngine:
    return RuleEngine.from_files([Path(__file__).resolve().parents[1] / "rules" / "cn_collection.yaml"])


DATA = [
    Utterance("你自己小心着点", Speaker.AGENT, frozenset({"threat"})),  # paraphrase: the model's catch
    Utterance("今天不还款后果自负", Speaker.AGENT, frozenset({"threat"})),  # the rules' catch
    Utterance("您好，请问是张先生吗", Speaker.AGENT, frozenset()),
    Utterance("出门小心，路上注意安全", Speaker.AGENT, frozenset()),  # the model's false alarm
]


def test_rules_classifier_and_both_are_scored(cn_engine: RuleEngine, tokenizer: Tokenizer) -> None:
    preds = predictions(DATA, cn_engine, tokenizer, StandIn(), ["threat", "abuse"])
    assert preds["classifier"] == [frozenset({"threat"}), frozenset(), frozenset(), frozenset({"threat"})]
    assert "threat" in preds["rules"][1] and "threat" not in preds["rules"][0]
    table = report(preds, DATA)
    both = table["rules + classifier"]["threat"]
    assert (both.tp, both.fp, both.fn, both.tn) == (2, 1, 0, 1)
    assert table["classifier"]["threat"].precision == 0.5
    assert table["classifier"]["privacy_leak"].fp == 0  # not served, not counted
    assert as_dict(table)["rules"]["(micro)"]["tp"] == 1


def test_micro_pools_every_label() -> None:
    preds = [frozenset({"threat", "abuse"}), frozenset()]
    data = [Utterance("x", Speaker.AGENT, frozenset({"threat"})), Utterance("y", Speaker.AGENT, frozenset({"abuse"}))]
    micro = confusion(preds, data, None)
    assert (micro.tp, micro.fp, micro.fn) == (1, 1, 1)


def test_missing_model_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = tmp_path / "d.jsonl"
    dataset.write_text(json.dumps({"text": "你好", "speaker": "agent", "labels": []}) + "\n", encoding="utf-8")
    assert main(["classifier", "eval", str(dataset), "--model", str(tmp_path / "none")]) == 2
    assert "train_classifier.py" in capsys.readouterr().err


def test_lines_split_at_the_clause_break_nearest_the_middle(tokenizer: Tokenizer) -> None:
    assert split_in_two("你今天不还，明天我们就去你单位，找你领导", tokenizer) == [
        "你今天不还",
        "明天我们就去你单位，找你领导",
    ]
    halves = split_in_two("明天我们就去你单位找你领导谈谈", tokenizer)  # no break: a word boundary
    assert len(halves) == 2 and "".join(halves) == "明天我们就去你单位找你领导谈谈"
    assert split_in_two("好的，谢谢", tokenizer) == ["好的，谢谢"]  # halves too short: stays whole


class HalfThreat(StandIn):
    def predict(self, texts: list[str], speakers: list[str]) -> list[dict[str, float]]:
        return [{"threat": 0.9 if "不还" in t and "家里人" in t else 0.1} for t in texts]


def test_split_lines_need_context_to_be_caught(cn_engine: RuleEngine, tokenizer: Tokenizer) -> None:
    data = [Utterance("你要是再拖着不还，你家里人会怎么样", Speaker.AGENT, frozenset({"threat"}))]
    whole = predictions(data, cn_engine, tokenizer, HalfThreat(), ["threat"], segments="whole")
    alone = predictions(data, cn_engine, tokenizer, HalfThreat(), ["threat"], segments="split", context=0)
    joined = predictions(data, cn_engine, tokenizer, HalfThreat(), ["threat"], segments="split", context=1)
    assert whole["classifier"] == joined["classifier"] == [frozenset({"threat"})]
    assert alone["classifier"] == [frozenset()]
