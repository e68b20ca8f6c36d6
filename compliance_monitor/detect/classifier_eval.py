"""``classifier eval``: the classifier alone, the rules alone and both together on labelled utterances.

Dataset lines as for ``rules eval``: ``{"text", "speaker", "labels"}``. Per label: precision, recall, F1 and the
confusion counts (TP, FP, FN, TN) of "this system raised the label" against "the line carries it". The classifier
counts only the labels it serves (``classifier.labels``); "rules + classifier" is what the live path raises.

``segments="split"`` cuts each line in two at the clause break (or else the word boundary) nearest its middle, as
a pause cuts a sentence into two finals: the halves are said in turn, the second with the first as context (for
the rules as on the live path; for the classifier when ``context`` > 0), and a label counts for the line when
either half raised it. Lines are independent of each other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from compliance_monitor.detect.evaluate import Scores, Utterance
from compliance_monitor.detect.model import Classifier, hits_in_context
from compliance_monitor.detect.rules import RuleEngine
from compliance_monitor.messages import UTTERANCE_CATEGORIES, NormalisedText
from compliance_monitor.text.normalise import normalise
from compliance_monitor.text.tokenise import Tokenizer

SYSTEMS = ("classifier", "rules", "rules + classifier")
Segmenting = Literal["whole", "split"]
CLAUSE_BREAK = re.compile(r"[，,。；;！!？?、…]+")
_MIN_HALF = 3  # characters; shorter lines stay whole


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


def split_in_two(text: str, tokenizer: Tokenizer) -> list[str]:
    """The line cut at the clause break nearest its middle, else at the word boundary nearest it."""
    middle = len(text) / 2
    cuts = [(m.start(), m.end()) for m in CLAUSE_BREAK.finditer(text)]
    if not cuts:
        ends = [len(w) for w in tokenizer.cut(text)]
        bounds = [sum(ends[: i + 1]) for i in range(len(ends) - 1)]
        cuts = [(b, b) for b in bounds]
    cuts = [c for c in cuts if len(text[: c[0]].strip()) >= _MIN_HALF and len(text[c[1] :].strip()) >= _MIN_HALF]
    if not cuts:
        return [text]
    start, end = min(cuts, key=lambda c: abs((c[0] + c[1]) / 2 - middle))
    return [text[:start], text[end:]]


def segment(data: Sequence[Utterance], tokenizer: Tokenizer, segments: Segmenting) -> list[list[str]]:
    return [split_in_two(u.text, tokenizer) if segments == "split" else [u.text] for u in data]


def predictions(
    data: Sequence[Utterance],
    engine: RuleEngine,
    tokenizer: Tokenizer,
    classifier: Classifier,
    labels: Iterable[str],
    *,
    segments: Segmenting = "whole",
    context: int = 0,
) -> dict[str, list[frozenset[str]]]:
    served = frozenset(labels)
    rules: list[frozenset[str]] = []
    model: list[frozenset[str]] = []
    for u, parts in zip(data, segment(data, tokenizer, segments), strict=True):
        found_by_rules: set[str] = set()
        found_by_model: set[str] = set()
        said: list[tuple[str, NormalisedText]] = []  # the line's earlier parts
        for part in parts:
            text = normalise(part, tokenizer)
            matches = engine.match(text, u.speaker, tuple(n for _, n in said))
            found_by_rules.update(m.rule.category for m in matches)
            hits = hits_in_context(classifier, part, u.speaker.value, [p for p, _ in said], context)
            found_by_model.update(h.label for h in hits if h.label in served)
            said.append((part, text))
        rules.append(frozenset(found_by_rules))
        model.append(frozenset(found_by_model))
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
