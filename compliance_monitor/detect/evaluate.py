"""Rule pack quality: a pack's own examples (``rules check``) and labelled utterances (``rules eval``).

Dataset lines are JSON: ``{"text": ..., "speaker": "agent"|"customer", "labels": [category, ...]}``.
Per category: precision, recall, F1 of "some rule of this category fired" against "labelled with it".
Per rule: how often it fired and how often its category was in the labels (its precision).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from compliance_monitor.detect.rulepack import RulePack
from compliance_monitor.detect.rules import RuleEngine
from compliance_monitor.messages import Speaker
from compliance_monitor.text.normalise import normalise
from compliance_monitor.text.tokenise import Tokenizer


@dataclass(frozen=True)
class ExampleFailure:
    rule_id: str
    kind: str  # "positive" (should fire, did not) or "negative" (fired, should not)
    text: str


def check_examples(pack: RulePack, engine: RuleEngine, tokenizer: Tokenizer) -> list[ExampleFailure]:
    """Every positive example fires its rule; no negative example does."""
    failures = []
    for rule in pack.rules:
        if rule.kind != "utterance" or not rule.enabled:
            continue
        speaker = Speaker.CUSTOMER if rule.speaker == "customer" else Speaker.AGENT
        for kind, texts in (("positive", rule.examples.positive), ("negative", rule.examples.negative)):
            for text in texts:
                fired = {m.rule.id for m in engine.match(normalise(text, tokenizer), speaker)}
                if (rule.id in fired) != (kind == "positive"):
                    failures.append(ExampleFailure(rule.id, kind, text))
    return failures


@dataclass(frozen=True)
class Utterance:
    text: str
    speaker: Speaker
    labels: frozenset[str]


def load_dataset(path: Path) -> list[Utterance]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append(Utterance(row["text"], Speaker(row.get("speaker", "agent")), frozenset(row.get("labels", []))))
        except (json.JSONDecodeError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}:{n}: bad dataset line: {exc}") from exc
    return out


@dataclass
class Scores:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass
class EvalReport:
    categories: dict[str, Scores] = field(default_factory=dict)
    rules_fired: Counter[str] = field(default_factory=Counter)
    rules_correct: Counter[str] = field(default_factory=Counter)
    false_alarms: list[tuple[str, str]] = field(default_factory=list)  # (rule id, text)
    misses: list[tuple[str, str]] = field(default_factory=list)  # (category, text)
    n: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "utterances": self.n,
            "categories": {
                c: {
                    "precision": round(s.precision, 3),
                    "recall": round(s.recall, 3),
                    "f1": round(s.f1, 3),
                    "tp": s.tp,
                    "fp": s.fp,
                    "fn": s.fn,
                }
                for c, s in sorted(self.categories.items())
            },
            "rules": {
                r: {"fired": n, "correct": self.rules_correct[r], "precision": round(self.rules_correct[r] / n, 3)}
                for r, n in sorted(self.rules_fired.items())
            },
        }


def evaluate(
    data: Iterable[Utterance], engine: RuleEngine, tokenizer: Tokenizer, categories: Iterable[str] | None = None
) -> EvalReport:
    """Scores per category. ``categories`` limits scoring to those a dataset was labelled for (a set written
    before a category existed holds no labels of it, so every hit of that category would count as false)."""
    report = EvalReport()
    rule_categories = {r.category for r in engine.utterance_rules}
    only = set(categories) if categories is not None else None
    if only is not None:
        rule_categories &= only
    for utt in data:
        report.n += 1
        matches = [
            m
            for m in engine.match(normalise(utt.text, tokenizer), utt.speaker)
            if only is None or m.rule.category in only
        ]
        predicted = {m.rule.category for m in matches}
        for m in matches:
            report.rules_fired[m.rule.id] += 1
            if m.rule.category in utt.labels:
                report.rules_correct[m.rule.id] += 1
            else:
                report.false_alarms.append((m.rule.id, utt.text))
        for category in rule_categories | (utt.labels if only is None else utt.labels & only):
            scores = report.categories.setdefault(category, Scores())
            if category in predicted and category in utt.labels:
                scores.tp += 1
            elif category in predicted:
                scores.fp += 1
            elif category in utt.labels:
                scores.fn += 1
                report.misses.append((category, utt.text))
    return report


def format_report(report: EvalReport, *, show_errors: int = 0) -> str:
    lines = [
        f"{report.n} utterances",
        "",
        f"{'category':<24} {'P':>6} {'R':>6} {'F1':>6} {'TP':>5} {'FP':>5} {'FN':>5}",
    ]
    micro = Scores()
    for category, s in sorted(report.categories.items()):
        lines.append(f"{category:<24} {s.precision:>6.3f} {s.recall:>6.3f} {s.f1:>6.3f} {s.tp:>5} {s.fp:>5} {s.fn:>5}")
        micro.tp, micro.fp, micro.fn = micro.tp + s.tp, micro.fp + s.fp, micro.fn + s.fn
    lines.append(f"{'(micro)':<24} {micro.precision:>6.3f} {micro.recall:>6.3f} {micro.f1:>6.3f}")
    lines += ["", f"{'rule':<36} {'fired':>6} {'correct':>8} {'P':>6}"]
    for rule_id, n in sorted(report.rules_fired.items()):
        lines.append(
            f"{rule_id:<36} {n:>6} {report.rules_correct[rule_id]:>8} {report.rules_correct[rule_id] / n:>6.3f}"
        )
    if show_errors:
        lines += ["", "false alarms:"] + [f"  {r}: {t}" for r, t in report.false_alarms[:show_errors]]
        lines += ["", "misses:"] + [f"  {c}: {t}" for c, t in report.misses[:show_errors]]
    return "\n".join(lines)
