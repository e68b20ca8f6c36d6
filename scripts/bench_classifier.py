"""Classifier latency per final on the live path: one segment alone and with its sliding context.

    python scripts/bench_classifier.py                  # models/classifier, 1 thread (classifier.threads)
    python scripts/bench_classifier.py --threads 2

With context k the live path needs 1 + 2k views (the segment; the last k previous segments with and without it);
the k without it were read with the previous final and are remembered (``RecentScores``), so it reads 1 + k.
``--no-memory`` reads all 1 + 2k. Prints the median and p95 per final and the ratio to the 15 ms goal.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from compliance_monitor.detect.classifier import UtteranceClassifier  # noqa: E402
from compliance_monitor.detect.model import Classifier, RecentScores, hits_in_context  # noqa: E402

GOAL_MS = 15.0


def agent_lines(path: Path) -> list[str]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["text"] for r in rows if r.get("speaker", "agent") == "agent"]


def timings_ms(clf: Classifier, lines: list[str], context: int) -> list[float]:
    """Per final, said in order, as on the live path."""
    out = []
    for i, text in enumerate(lines):
        previous = lines[max(0, i - context) : i]
        started = time.perf_counter()
        hits_in_context(clf, text, "agent", previous, context)
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "classifier")
    parser.add_argument("--data", type=Path, default=REPO / "tests" / "data" / "utterances_dev.jsonl")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-memory", action="store_true", help="read every view, as before RecentScores")
    args = parser.parse_args()

    clf = UtteranceClassifier.load(args.model, threads=args.threads)
    lines = agent_lines(args.data)
    timings_ms(clf, lines[:20], 2)  # warm up
    print(f"{len(lines)} agent lines, {args.threads} thread(s), batch 1 per final")
    for context in (0, 1, 2):
        scorer: Classifier = clf if args.no_memory else RecentScores(clf)
        t = sorted(timings_ms(scorer, lines, context))
        p50, p95 = statistics.median(t), t[int(0.95 * (len(t) - 1))]
        ratio = GOAL_MS / p95
        print(f"context {context}: p50 {p50:5.2f} ms, p95 {p95:5.2f} ms ({ratio:.1f}x under the {GOAL_MS:.0f} ms goal)")


if __name__ == "__main__":
    main()
