"""``classifier eval``: the classifier alone, the rules alone and both together on labelled utterances.

Dataset lines as for ``rules eval``: ``{"text", "speaker", "labels"}``. Per label: precision, recall, F1 and the
confusion counts (TP, FP, FN, TN) of "this system raised the label" against "the line carries it". The classifier
counts only the labels it serves (``classifier.labels``); "rules + classifier" is what the live path raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from compliance_monitor.detect.evaluate import Scores, Utterance
from compliance_monitor.detect.model import Classifier
from compliance_monitor.detect.rules import RuleEngine
from compliance_monitor.messages import UTTERANCE_CATEGORIES
from compliance_monitor.text.normalise import normalise
from compliance_monitor.text.tokenise import Tokenizer

SYSTEMS = ("classifier", "rules", "rules + classifier")


@dataclass
class Confusion(Scores):
    """``rules eval``'s precision / recall / F1 counts, plus the true negatives."""

    tn: int = 0


def confusion(predicted: Sequence[frozenset[str]], data: Sequence[Utterance], label: str | None) -> Confusion:
    """Counts for one label, or pooled over every label (``None``: micro average)."""
    labels = UTTERANCE_CATEGORIES if label is None else (label,)
    pairs = [(lab in p, lab in u.labels) for p, u in zip(predicted, data, strict=True) for lab in labels]
    return Confusion(
        sum(p and g for p, g in pairs),
        sum(p and not g for p, g in pairs),
        sum(g and not p for p, g in pairs),
        sum(not (p or g) for p, g in pairs),
    )


def predictions(
    data: Sequence[Utterance], engine: RuleEngine, tokenizer: Tokenizer, classifier: Classifier, labels: Iterable[str]
) -> dict[str, list[frozenset[str]]]:
    served = frozenset(labels)
    rules = [frozenset(m.rule.category for m in engine.match(normalise(u.text, tokenizer), u.speaker)) for u in data]
    scores = classifier.predict([u.text for u in data], [u.speaker.value for u in data])
    model = [frozenset(lab for lab, _ in classifier.above_threshold(s) if lab in served) for s in scores]
    return {
        "classifier": model,
        "rules": rules,
        "rules + classifier": [a | b for a, b in zip(rules, model, strict=True)],
    }


def report(preds: dict[str, list[frozenset[str]]], data: Sequence[Utterance]) -> dict[str, dict[str, Confusion]]:
    return {
        system: {lab: confusion(p, data, lab) for lab in UTTERANCE_CATEGORIES} | {"(micro)": confusion(p, data, None)}
        for system, p in preds.items()
    }


def format_report(table: dict[str, dict[str, Confusion]], n: int) -> str:
    lines = [f"{n} utterances"]
    for system, rows in table.items():
        lines += ["", system, f"{'label':24}{'P':>7}{'R':>7}{'F1':>7}{'TP':>6}{'FP':>6}{'FN':>6}{'TN':>6}"]
        for lab, c in rows.items():
            lines.append(f"{lab:24}{c.precision:7.3f}{c.recall:7.3f}{c.f1:7.3f}{c.tp:6d}{c.fp:6d}{c.fn:6d}{c.tn:6d}")
    return "\n".join(lines)


def as_dict(table: dict[str, dict[str, Confusion]]) -> dict[str, dict[str, dict[str, float]]]:
    return {
        system: {
            lab: {"precision": round(c.precision, 4), "recall": round(c.recall, 4), "f1": round(c.f1, 4)}
            | {"tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn}
            for lab, c in rows.items()
        }
        for system, rows in table.items()
    }
