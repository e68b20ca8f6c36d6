"""Utterance classifier: a small character-level BERT trained from scratch (``transformers``), multi-label.

Labels: threat, abuse, impersonation, third_party_disclosure, privacy_leak, customer_abuse. The speaker is part of
the input (a ``[A]`` / ``[C]`` token after ``[CLS]``); ``customer_abuse`` is forced to 0 for agent lines.

A model directory (built by ``scripts/train_classifier.py``) holds ``config.json`` + ``model.safetensors``
(``save_pretrained``), ``vocab.txt`` (one token a line, BERT style), ``thresholds.json`` and ``metrics.json``, and
optionally a character n-gram model (``ngram.py``) whose probabilities are averaged with the transformer's. A
directory with the n-gram model and ``thresholds.json`` but no transformer is served n-gram only
(``scripts/train_classifier.py --ngram-only``: built in well under a minute, so an install can afford it).

    clf = UtteranceClassifier.load("models/classifier")
    scores = clf.predict(["你再不还钱，小心点"], ["agent"])   # [{"threat": 0.97, ...}]
    hits = clf.above_threshold(scores[0])                      # [("threat", 0.97)]

The training loop (``train_model``) lives here too so the unit tests and the training script share one code path.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig, BertForSequenceClassification

from compliance_monitor.detect.ngram import NgramModel, marked
from compliance_monitor.messages import UTTERANCE_CATEGORIES
from compliance_monitor.text.normalise import collapse_spaces, to_half_width, to_simplified

__all__ = [
    "LABELS",
    "SPECIAL_TOKENS",
    "ClassifierNotFound",
    "TrainConfig",
    "UtteranceClassifier",
    "build_vocab",
    "preprocess",
    "train_model",
]

# a newly built model's heads; a loaded model keeps its own (an older one lacks the standard's three)
LABELS: tuple[str, ...] = UTTERANCE_CATEGORIES
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[A]", "[C]")
_SPEAKER_TOKEN = {"agent": "[A]", "customer": "[C]"}


class ClassifierNotFound(FileNotFoundError):
    """The model directory is missing or incomplete."""


def preprocess(text: str) -> str:
    """The cheap, idempotent part of ``normalise()``: simplified, half width, spaces collapsed; ASCII lower-cased."""
    return collapse_spaces(to_half_width(to_simplified(text))).lower()


def _speaker_token(speaker: object) -> str:
    s = str(getattr(speaker, "value", speaker)).lower()
    return _SPEAKER_TOKEN.get(s, "[A]")


def build_vocab(texts: Sequence[str], min_count: int = 2) -> list[str]:
    """Special tokens, then every character seen at least ``min_count`` times (most frequent first)."""
    counts: dict[str, int] = {}
    for t in texts:
        for ch in preprocess(t):
            if not ch.isspace():
                counts[ch] = counts.get(ch, 0) + 1
    chars = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
    return list(SPECIAL_TOKENS) + [c for c in chars if c not in SPECIAL_TOKENS]


class CharEncoder:
    """Characters → ids: ``[CLS] [A|C] c1 c2 ... [SEP]``, truncated to ``max_len``; spaces dropped."""

    def __init__(self, vocab: Sequence[str], max_len: int = 64) -> None:
        self.vocab = list(vocab)
        self.index = {tok: i for i, tok in enumerate(self.vocab)}
        self.max_len = max_len
        self.pad, self.unk = self.index["[PAD]"], self.index["[UNK]"]
        self.cls, self.sep = self.index["[CLS]"], self.index["[SEP]"]

    def ids(self, text: str, speaker: object) -> list[int]:
        body = [self.index.get(ch, self.unk) for ch in preprocess(text) if not ch.isspace()]
        body = body[: self.max_len - 3]
        return [self.cls, self.index[_speaker_token(speaker)], *body, self.sep]

    def batch(self, texts: Sequence[str], speakers: Sequence[object]) -> tuple[torch.Tensor, torch.Tensor]:
        seqs = [self.ids(t, s) for t, s in zip(texts, speakers, strict=True)]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        return ids, mask


@dataclass
class TrainConfig:
    hidden: int = 192
    layers: int = 3
    heads: int = 4
    intermediate: int = 512
    max_len: int = 64
    dropout: float = 0.1
    epochs: float = 3.0
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.06
    seed: int = 13
    threads: int = 2
    min_char_count: int = 2
    time_budget_s: float | None = None  # stop early (at a batch boundary) when exceeded


def make_model(vocab_size: int, cfg: TrainConfig) -> BertForSequenceClassification:
    config = BertConfig(  # type: ignore[call-arg]
        vocab_size=vocab_size,
        hidden_size=cfg.hidden,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.intermediate,
        max_position_embeddings=cfg.max_len,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        type_vocab_size=1,
        num_labels=len(LABELS),
        problem_type="multi_label_classification",
        id2label=dict(enumerate(LABELS)),
        label2id={lab: i for i, lab in enumerate(LABELS)},
        pad_token_id=0,
    )
    return BertForSequenceClassification(config)


def train_model(
    rows: Sequence[tuple[str, str, Sequence[str]]],
    cfg: TrainConfig,
    *,
    vocab: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
) -> UtteranceClassifier:
    """Train from scratch on ``(text, speaker, labels)`` rows; returns a classifier with thresholds at 0.5."""
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    if vocab is None:
        vocab = build_vocab([r[0] for r in rows], cfg.min_char_count)
    enc = CharEncoder(vocab, cfg.max_len)
    model = make_model(len(vocab), cfg)
    encoded = [enc.ids(t, s) for t, s, _ in rows]
    targets = torch.tensor([[1.0 if lab in labs else 0.0 for lab in LABELS] for _, _, labs in rows])

    n = len(rows)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = max(1, int(steps_per_epoch * cfg.epochs))
    warm = max(1, int(total * cfg.warmup))
    decay = [p for name, p in model.named_parameters() if p.ndim >= 2 and "LayerNorm" not in name]
    no_decay = [p for name, p in model.named_parameters() if not (p.ndim >= 2 and "LayerNorm" not in name)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    t0 = time.monotonic()

    def lr_factor(s: int) -> float:
        # linear warm-up, then linear decay to 0 by the last step or by the time budget, whichever comes first
        progress = s / total
        if cfg.time_budget_s:
            progress = max(progress, (time.monotonic() - t0) / cfg.time_budget_s)
        return min((s + 1) / warm, max(0.0, 1.0 - progress) / max(1e-9, 1.0 - warm / total))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    gen = random.Random(cfg.seed)
    model.train()
    step, running = 0, 0.0
    while step < total:
        # length-bucketed batches: shuffle, sort chunks of 50 batches by length, shuffle the batches
        order = list(range(n))
        gen.shuffle(order)
        chunk = cfg.batch_size * 50
        batches = []
        for i in range(0, n, chunk):
            part = sorted(order[i : i + chunk], key=lambda j: len(encoded[j]))
            batches += [part[k : k + cfg.batch_size] for k in range(0, len(part), cfg.batch_size)]
        gen.shuffle(batches)
        for b in batches:
            if step >= total:
                break
            width = max(len(encoded[j]) for j in b)
            ids = torch.zeros((len(b), width), dtype=torch.long)
            mask = torch.zeros((len(b), width), dtype=torch.long)
            for r, j in enumerate(b):
                ids[r, : len(encoded[j])] = torch.tensor(encoded[j])
                mask[r, : len(encoded[j])] = 1
            out = model(input_ids=ids, attention_mask=mask, labels=targets[b])
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            running = 0.98 * running + 0.02 * out.loss.item() if step else out.loss.item()
            step += 1
            if step % 200 == 0 or step == total:
                log(f"step {step}/{total} loss {running:.4f} {time.monotonic() - t0:.0f}s")
            if cfg.time_budget_s is not None and time.monotonic() - t0 > cfg.time_budget_s:
                log(f"time budget reached at step {step}/{total}")
                total = step
                break
    model.eval()
    return UtteranceClassifier(model, vocab, dict.fromkeys(LABELS, 0.5), threads=cfg.threads)


class UtteranceClassifier:
    def __init__(
        self,
        model: BertForSequenceClassification | None,
        vocab: Sequence[str],
        thresholds: dict[str, float] | None = None,
        *,
        threads: int | None = 2,
        batch_size: int = 32,
        ngram: NgramModel | None = None,
    ) -> None:
        self.ngram = ngram  # when present, its probabilities are averaged with the transformer's
        self.model = model.eval() if model is not None else None  # None: the n-gram model alone
        if model is not None:
            id2label: dict[Any, str] = dict(getattr(model.config, "id2label", None) or {})
            self.labels: tuple[str, ...] = tuple(
                str(id2label.get(i, id2label.get(str(i)))) for i in range(len(id2label))
            )
            self.encoder = CharEncoder(vocab, int(model.config.max_position_embeddings))
        elif ngram is not None:
            self.labels = ngram.labels
            self.encoder = CharEncoder(SPECIAL_TOKENS, 64)  # unused: kept so the object has one shape
        else:
            raise ValueError("a classifier needs a transformer, an n-gram model or both")
        self.thresholds = dict.fromkeys(self.labels, 0.5) | dict(thresholds or {})
        self.batch_size = batch_size
        if threads:
            torch.set_num_threads(threads)

    # ------------------------------------------------------------------ persistence

    @classmethod
    def load(cls, path: str | Path, *, threads: int | None = 2) -> UtteranceClassifier:
        path = Path(path)
        needed = ["config.json", "vocab.txt"]
        missing = [f for f in needed if not (path / f).is_file()]
        if not (path / "model.safetensors").is_file() and not (path / "pytorch_model.bin").is_file():
            missing.append("model.safetensors")
        if missing and (path / "thresholds.json").is_file() and (ngram := NgramModel.load(path)) is not None:
            thresholds = json.loads((path / "thresholds.json").read_text(encoding="utf-8"))
            return cls(None, list(SPECIAL_TOKENS), thresholds, threads=threads, ngram=ngram)
        if missing:
            raise ClassifierNotFound(
                f"utterance classifier not found at {path} (missing {', '.join(missing)}); "
                "build it with: python scripts/train_classifier.py --out " + str(path)
            )
        if threads:
            torch.set_num_threads(threads)
        model = BertForSequenceClassification.from_pretrained(path)
        vocab = (path / "vocab.txt").read_text(encoding="utf-8").split("\n")
        if vocab and vocab[-1] == "":
            vocab = vocab[:-1]
        thr_file = path / "thresholds.json"
        thresholds = json.loads(thr_file.read_text(encoding="utf-8")) if thr_file.is_file() else None
        return cls(model, vocab, thresholds, threads=threads, ngram=NgramModel.load(path))

    def save(self, path: str | Path, metrics: dict[str, object] | None = None) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.model is not None:
            self.model.save_pretrained(path)
            # "\n".join: a vocab entry can never contain a newline (build_vocab drops whitespace)
            (path / "vocab.txt").write_text("\n".join(self.encoder.vocab) + "\n", encoding="utf-8")
        (path / "thresholds.json").write_text(json.dumps(self.thresholds, indent=2), encoding="utf-8")
        if self.ngram is not None:
            self.ngram.save(path)
        if metrics is not None:
            (path / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")

    # ------------------------------------------------------------------ inference

    def predict(self, texts: Sequence[str], speakers: Sequence[object]) -> list[dict[str, float]]:
        """Per-label probabilities for each (text, speaker); speakers are "agent"/"customer" (or a Speaker)."""
        if len(texts) != len(speakers):
            raise ValueError("texts and speakers differ in length")
        out: list[dict[str, float]] = []
        ca = self.labels.index("customer_abuse") if "customer_abuse" in self.labels else None
        if self.model is None:
            assert self.ngram is not None
            for text, sp in zip(texts, speakers, strict=True):
                scores = self.ngram.predict_one(marked(preprocess(text), sp))
                if ca is not None and _speaker_token(sp) == "[A]":
                    scores["customer_abuse"] = 0.0
                out.append(scores)
            return out
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                t, s = texts[i : i + self.batch_size], speakers[i : i + self.batch_size]
                ids, mask = self.encoder.batch(t, s)
                probs = torch.sigmoid(self.model(input_ids=ids, attention_mask=mask).logits)
                for text, row, sp in zip(t, probs.tolist(), s, strict=True):
                    scores = dict(zip(self.labels, row, strict=True))
                    if self.ngram is not None:
                        ngram = self.ngram.predict_one(marked(preprocess(text), sp))
                        scores = {lab: (p + ngram.get(lab, p)) / 2 for lab, p in scores.items()}
                    if ca is not None and _speaker_token(sp) == "[A]":
                        scores["customer_abuse"] = 0.0
                    out.append(scores)
        return out

    def above_threshold(self, scores: dict[str, float]) -> list[tuple[str, float]]:
        """Labels whose score reaches its calibrated threshold, highest score first."""
        hits = [(lab, s) for lab, s in scores.items() if s >= self.thresholds.get(lab, 0.5)]
        return sorted(hits, key=lambda h: -h[1])

    def latency_ms(
        self, batch: int = 1, *, repeats: int = 50, text: str = "你今天再不还钱，我们就派人上门找你家里人。"
    ) -> float:
        """Median wall time of one ``predict`` call of ``batch`` utterances, in milliseconds."""
        texts, speakers = [text] * batch, ["agent"] * batch
        for _ in range(5):
            self.predict(texts, speakers)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            self.predict(texts, speakers)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        return times[len(times) // 2]
