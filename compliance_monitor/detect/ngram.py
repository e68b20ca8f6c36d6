"""Character n-gram model: TF-IDF over characters 1–3 + one logistic regression per label, for inference.

Trained with scikit-learn by ``scripts/train_classifier.py`` (the ``train`` extra) and exported as plain arrays, so
serving needs numpy only. Averaged with the transformer in ``UtteranceClassifier``: on held-out collection lines
the n-grams are strong where wording is close to training text, the transformer where it is not.

Files in the model directory: ``ngram.npz`` (``idf``, ``coef`` labels × features, ``intercept``) and
``ngram_vocab.json`` (n-gram → feature column). The text is prepared exactly as sklearn's ``char`` analyzer
does (lower-cased, whitespace runs as one space) after a speaker marker character.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SPEAKER_MARK = {"customer": "Ⓒ", "agent": "Ⓐ"}
NGRAM_RANGE = (1, 3)
_WHITESPACE = re.compile(r"\s\s+")
VOCAB_FILE, ARRAYS_FILE = "ngram_vocab.json", "ngram.npz"


def marked(text: str, speaker: object) -> str:
    s = str(getattr(speaker, "value", speaker)).lower()
    return SPEAKER_MARK.get(s, SPEAKER_MARK["agent"]) + text


def char_ngrams(text: str) -> list[str]:
    """sklearn ``TfidfVectorizer(analyzer="char", ngram_range=(1, 3))`` n-grams of ``text``."""
    text = _WHITESPACE.sub(" ", text.lower())
    low, high = NGRAM_RANGE
    return [text[i : i + n] for n in range(low, high + 1) for i in range(len(text) - n + 1)]


class NgramModel:
    def __init__(
        self, vocab: dict[str, int], idf: np.ndarray, coef: np.ndarray, intercept: np.ndarray, labels: Sequence[str]
    ) -> None:
        self.vocab, self.idf, self.coef, self.intercept = vocab, idf, coef, intercept
        self.labels = tuple(labels)

    @classmethod
    def from_sklearn(cls, vectorizer: Any, models: dict[str, Any]) -> NgramModel:
        labels = tuple(models)
        return cls(
            {str(k): int(v) for k, v in vectorizer.vocabulary_.items()},
            np.asarray(vectorizer.idf_, dtype=np.float32),
            np.vstack([models[lab].coef_[0] for lab in labels]).astype(np.float32),
            np.array([models[lab].intercept_[0] for lab in labels], dtype=np.float32),
            labels,
        )

    def save(self, path: Path) -> None:
        (path / VOCAB_FILE).write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")
        np.savez_compressed(
            path / ARRAYS_FILE, idf=self.idf, coef=self.coef, intercept=self.intercept, labels=np.array(self.labels)
        )

    @classmethod
    def load(cls, path: Path) -> NgramModel | None:
        if not ((path / VOCAB_FILE).is_file() and (path / ARRAYS_FILE).is_file()):
            return None
        arrays = np.load(path / ARRAYS_FILE)
        vocab = json.loads((path / VOCAB_FILE).read_text(encoding="utf-8"))
        return cls(vocab, arrays["idf"], arrays["coef"], arrays["intercept"], [str(x) for x in arrays["labels"]])

    def pruned(self, max_features: int) -> NgramModel:
        """The ``max_features`` n-grams that weigh most in any label (max |coef| × idf), the rest dropped: a smaller
        file to ship. Documents keep their other n-grams' weight in the norm no longer, so scores shift slightly."""
        if max_features >= len(self.vocab):
            return self
        weight = np.abs(self.coef).max(axis=0) * self.idf
        keep = np.sort(np.argsort(-weight, kind="stable")[:max_features])
        new_col = {int(old): i for i, old in enumerate(keep)}
        vocab = {g: new_col[c] for g, c in self.vocab.items() if c in new_col}
        return NgramModel(vocab, self.idf[keep], self.coef[:, keep], self.intercept, self.labels)

    def predict_one(self, text: str) -> dict[str, float]:
        """Label probabilities for one speaker-marked text (see ``marked``)."""
        counts = Counter(g for g in char_ngrams(text) if g in self.vocab)
        logits = self.intercept.astype(np.float64)
        if counts:
            cols = np.fromiter((self.vocab[g] for g in counts), dtype=np.int64, count=len(counts))
            tf = np.fromiter((1.0 + math.log(c) for c in counts.values()), dtype=np.float64, count=len(counts))
            x = tf * self.idf[cols]
            x /= np.linalg.norm(x)
            logits = logits + self.coef[:, cols] @ x
        return {lab: float(1.0 / (1.0 + math.exp(-z))) for lab, z in zip(self.labels, logits, strict=True)}
