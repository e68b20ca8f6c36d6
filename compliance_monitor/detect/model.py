"""Classifier findings on the live path: the utterance classifier, run off the event loop, as Findings.

Rules catch what compliance officers can name; the classifier catches paraphrases and what ASR garbles.
Its findings say so (``source="model"``, ``score``) and go through the same policy as rule findings. On a
segment where a rule already raised the same category, the model adds nothing (one alert per category).

Sliding context: a pause can cut one sentence into two finals (你要是今天不还 | 你家里人会怎么样我可不敢保证), and
neither half reads as a threat alone. Each final is also scored joined to the speaker's previous one or two
finals; a label the joined text reaches counts for this segment only when those previous finals alone do not
reach it, so a violation already raised is not raised again on the lines that follow it. Those previous
finals alone were read when they were said: ``RecentScores`` remembers them, so with context 1 a final
costs two views, not three.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from compliance_monitor.messages import Finding, NormalisedText, Severity, Speaker, Transcript

log = logging.getLogger(__name__)

# Model findings are one step more cautious than the rules' usual severity: a score, not a named phrase.
SEVERITY = {
    "threat": Severity.HIGH,
    "impersonation": Severity.HIGH,
    "third_party_disclosure": Severity.HIGH,
    "abuse": Severity.WARN,
    "privacy_leak": Severity.WARN,
    "customer_abuse": Severity.INFO,
    # The 2025 standard's categories: high, as the pack's rules for them.
    "misrepresentation": Severity.HIGH,
    "induced_borrowing": Severity.HIGH,
    "improper_payment": Severity.HIGH,
}
EXPLANATION = {
    "threat": ("模型判断：疑似威胁恐吓。", "请勿使用威胁或暗示性的恐吓语言。"),
    "abuse": ("模型判断：疑似辱骂或侮辱。", "请保持礼貌用语。"),
    "impersonation": ("模型判断：疑似冒充公检法或虚构法律后果。", "请如实说明身份与可能的合法途径。"),
    "third_party_disclosure": ("模型判断：疑似向第三方透露债务。", "不得向他人透露或威胁透露客户债务。"),
    "privacy_leak": ("模型判断：疑似泄露个人信息。", "请勿读出完整的个人信息。"),
    "customer_abuse": ("模型判断：客户言语激动（仅提示）。", "客户情绪激动，请保持冷静。"),
    "misrepresentation": (
        "模型判断：疑似虚假陈述（虚构黑名单、夸大欠款或法律后果）。",
        "请如实说明欠款金额与可能的合法后果，不得夸大。",
    ),
    "induced_borrowing": ("模型判断：疑似诱导借新还旧或套现还款。", "不得诱导客户向其他机构借款或套现还款。"),
    "improper_payment": (
        "模型判断：疑似违规收费或引导向非官方账户还款。",
        "请只引导客户通过官方渠道还款，不得收取额外费用。",
    ),
}


CONTEXT_SEPARATOR = "，"
CONTEXT_CHARS = 60  # the served model reads 61 characters; a joined view keeps its end, where this segment is


class Classifier(Protocol):
    def predict(self, texts: list[str], speakers: list[str]) -> list[dict[str, float]]: ...

    def above_threshold(self, scores: dict[str, float]) -> list[tuple[str, float]]: ...


@dataclass(frozen=True, slots=True)
class ModelHit:
    label: str
    score: float
    context: int  # previous finals of the speaker the label needed; 0: this segment alone


def hits_in_context(
    classifier: Classifier, text: str, speaker: str, context: Sequence[str] = (), window: int = 0
) -> list[ModelHit]:
    """Labels raised by ``text``, alone or joined to up to ``window`` of the speaker's previous segments.

    One batch: the segment, then for k = 1..window the last k previous segments with and without it.
    """
    recent = list(context)[-window:] if window > 0 else []
    views = [text]
    for k in range(1, len(recent) + 1):
        views += [_joined([*recent[-k:], text]), _joined(recent[-k:])]
    scores = classifier.predict(views, [speaker] * len(views))
    hits = {label: ModelHit(label, score, 0) for label, score in classifier.above_threshold(scores[0])}
    for k in range(1, len(recent) + 1):
        already = {label for label, _ in classifier.above_threshold(scores[2 * k])}
        for label, score in classifier.above_threshold(scores[2 * k - 1]):
            if label not in hits and label not in already:
                hits[label] = ModelHit(label, score, k)
    return sorted(hits.values(), key=lambda h: -h.score)


def _joined(texts: Sequence[str]) -> str:
    return CONTEXT_SEPARATOR.join(texts)[-CONTEXT_CHARS:]


class RecentScores:
    """A classifier that remembers the scores of the last views it read, and reads only new ones.

    A final's context views (the previous final alone; with context 2, the two before it joined) are the
    views the previous final's batch held, so they need not be read again.
    """

    def __init__(self, classifier: Classifier, size: int = 256) -> None:
        self.classifier = classifier
        self._size = size
        self._scores: OrderedDict[tuple[str, str], dict[str, float]] = OrderedDict()

    def predict(self, texts: list[str], speakers: list[str]) -> list[dict[str, float]]:
        views = list(zip(texts, speakers, strict=True))
        known = {view: self._scores[view] for view in views if view in self._scores}
        new = [view for view in dict.fromkeys(views) if view not in known]
        if new:
            read = self.classifier.predict([text for text, _ in new], [speaker for _, speaker in new])
            known.update(zip(new, read, strict=True))
        for view in views:
            self._remember(view, known[view])
        return [known[view] for view in views]

    def above_threshold(self, scores: dict[str, float]) -> list[tuple[str, float]]:
        return self.classifier.above_threshold(scores)

    def _remember(self, view: tuple[str, str], scores: dict[str, float]) -> None:
        self._scores[view] = scores
        self._scores.move_to_end(view)
        if len(self._scores) > self._size:
            self._scores.popitem(last=False)


class ModelDetector:
    def __init__(self, classifier: Classifier, labels: Sequence[str] | None = None, *, context: int = 0) -> None:
        self.classifier = classifier
        self.labels = frozenset(SEVERITY if labels is None else labels) & SEVERITY.keys()
        self.context = context  # previous finals of the same speaker to join (0: each segment alone)
        self._scored = RecentScores(classifier)  # used by the one executor thread only
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="classifier")

    async def detect(
        self, tr: Transcript, text: NormalisedText, context: Sequence[NormalisedText] = ()
    ) -> list[Finding]:
        loop = asyncio.get_running_loop()
        previous = [c.text for c in context]
        hits = await loop.run_in_executor(
            self._executor, hits_in_context, self._scored, text.text, tr.speaker.value, previous, self.context
        )
        return [
            self._finding(tr, hit)
            for hit in hits
            if hit.label in self.labels and (hit.label == "customer_abuse") == (tr.speaker is Speaker.CUSTOMER)
        ]

    @staticmethod
    def _finding(tr: Transcript, hit: ModelHit) -> Finding:
        label, score = hit.label, hit.score
        supervisor, collector = EXPLANATION[label]
        joined = f"，结合此前 {hit.context} 句" if hit.context else ""
        return Finding(
            call_id=tr.call_id,
            speaker=tr.speaker,
            segment_no=tr.segment_no,
            rule_id=f"model.{label}",
            category=label,
            severity=SEVERITY[label],
            matched_text="",
            span=(0, 0),
            t0=tr.t0,
            t1=tr.t1,
            explanation=f"{supervisor}（置信度 {score:.2f}{joined}）",
            collector_explanation=collector,
            source="model",
            score=round(score, 3),
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def load_model_detector(
    path: Path, threads: int, labels: Sequence[str] | None = None, *, context: int = 0
) -> ModelDetector | None:
    """The trained classifier, or None (with the reason logged) when there is none.

    A full classifier (transformer + n-grams) at ``path`` when built there; else, when ``path`` is the default, the
    small n-gram classifier shipped with the package, so that a fresh install runs both detectors."""
    from compliance_monitor.detect.ngram import VOCAB_FILE
    from compliance_monitor.resources import bundled_classifier_dir, default_classifier_dir

    def built(p: Path) -> bool:
        return (p / "config.json").is_file() or ((p / VOCAB_FILE).is_file() and (p / "thresholds.json").is_file())

    if not built(path):
        bundled = bundled_classifier_dir()
        if path.resolve() != default_classifier_dir().resolve() or not built(bundled):
            log.warning("no utterance classifier at %s (build it with scripts/train_classifier.py): rules only", path)
            return None
        log.info("no classifier built at %s: using the bundled n-gram classifier %s", path, bundled)
        path = bundled
    from compliance_monitor.detect.classifier import UtteranceClassifier

    detector = ModelDetector(UtteranceClassifier.load(path, threads=threads), labels, context=context)
    log.info("utterance classifier from %s: %s", path, ", ".join(sorted(detector.labels)))
    return detector
