"""Rule engine throughput: short segments per second for a pack on one core.

    python scripts/bench_rules.py                       # rules/cn_collection.yaml: labelled utterances, dev calls
    python scripts/bench_rules.py --pack rules/us_fdcpa.yaml --data tests/data/fdcpa_utterances.jsonl --calls

Prints segments/s for matching alone (text already normalised, as in the live path where normalisation
is shared by rules, archive and classifier) and for normalise + match, and the ratio to the 100,000/s goal.
Two corpora: the labelled utterances, two thirds of them violations (each fires rules and runs their
checks and validators), and the turns of whole calls (``--calls``, by default ``../shared``'s dev calls as
Whisper heard them), mostly ordinary talk, as live traffic is.
Each figure is the fastest of the passes over the data made in ``--seconds``, as ``timeit`` reports, so
that other load on the machine distorts it as little as possible.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from compliance_monitor.detect.rules import RuleEngine  # noqa: E402
from compliance_monitor.messages import Speaker  # noqa: E402
from compliance_monitor.text.normalise import normalise  # noqa: E402
from compliance_monitor.text.tokenise import Tokenizer  # noqa: E402

GOAL = 100_000
Segments = list[tuple[str, Speaker]]
SHARED_CALLS = REPO.parent / "shared" / "calls" / "dev" / "manifest.jsonl"  # the team's synthetic calls, if present


def load_texts(paths: list[Path]) -> Segments:
    rows = [json.loads(line) for p in paths for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(r["text"], Speaker(r.get("speaker", "agent"))) for r in rows]


def load_call_turns(manifests: list[Path]) -> Segments:
    """Every turn of every call in the manifests, as the ASR heard it where the manifest says."""
    calls = [json.loads(line) for p in manifests for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(t.get("asr_text") or t["text"], Speaker(t["speaker"])) for call in calls for t in call["turns"]]


def rate(fn: Callable[[], None], n_items: int, min_seconds: float) -> float:
    """Items per second of the fastest pass over all items, passes repeated for ``min_seconds``.

    The fastest pass (as ``timeit`` reports) is the least disturbed by other processes on the machine.
    """
    best, started = float("inf"), time.perf_counter()
    while time.perf_counter() - started < min_seconds or best == float("inf"):
        begun = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - begun)
    return n_items / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", type=Path, default=REPO / "rules" / "cn_collection.yaml")
    parser.add_argument(
        "--data",
        type=Path,
        nargs="+",
        default=[REPO / "tests/data/utterances_dev.jsonl", REPO / "tests/data/utterances_test.jsonl"],
    )
    parser.add_argument(
        "--calls", type=Path, nargs="*", default=[SHARED_CALLS], help="call manifests (JSONL, turns); none: skip"
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    engine = RuleEngine.from_files([args.pack])
    tokenizer = Tokenizer(REPO / "rules" / "user_dict.txt")
    print(f"pack {args.pack.name}: {engine.rule_count} rules")
    corpora = {"labelled utterances": load_texts(args.data)}
    if args.calls and all(p.is_file() for p in args.calls):
        corpora["turns of whole calls"] = load_call_turns(args.calls)
    for name, texts in corpora.items():
        report(name, engine, tokenizer, texts, args.seconds)


def report(name: str, engine: RuleEngine, tokenizer: Tokenizer, texts: Segments, seconds: float) -> None:
    normalised = [(normalise(t, tokenizer), s) for t, s in texts]
    mean_chars = sum(len(n.text) for n, _ in normalised) / len(normalised)
    firing = sum(1 for n, s in normalised if engine.match(n, s)) / len(normalised)

    def match_all() -> None:
        for text, speaker in normalised:
            engine.match(text, speaker)

    def normalise_and_match() -> None:
        for text, speaker in texts:
            engine.match(normalise(text, tokenizer), speaker)

    matched = rate(match_all, len(normalised), seconds)
    full = rate(normalise_and_match, len(texts), seconds)
    print(f"{name}: {len(texts)} segments, {mean_chars:.0f} chars on average, {firing:.0%} fire a rule")
    print(f"  match only:        {matched:>10,.0f} segments/s  ({matched / GOAL:.2f}x the {GOAL:,}/s goal)")
    print(f"  normalise + match: {full:>10,.0f} segments/s  ({full / GOAL:.2f}x)")


if __name__ == "__main__":
    main()
