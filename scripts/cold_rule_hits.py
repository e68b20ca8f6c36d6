"""COLD "safe" lines on which a rule pack fires: the rules' false hits on lawful, non-collection Chinese text.

    python scripts/cold_rule_hits.py                        # rules/cn_collection.yaml, COLD train + dev
    python scripts/cold_rule_hits.py --show 20              # and list 20 of the hits with the rule that fired

Every COLD line labelled safe (``label`` 0) is matched as agent speech (the stricter framing: agent rules are
the many) and counted once if any rule fires. The pack commits quote this count ("COLD safe hits 111 of 16,223").
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from compliance_monitor.detect.rules import RuleEngine  # noqa: E402
from compliance_monitor.messages import Speaker  # noqa: E402
from compliance_monitor.text.normalise import normalise  # noqa: E402
from compliance_monitor.text.tokenise import Tokenizer  # noqa: E402

COLD = REPO.parent / "shared" / "data" / "cold"


def safe_lines(cold: Path) -> list[str]:
    out = []
    for name in ("train.csv", "dev.csv"):
        with (cold / name).open(encoding="utf-8-sig", newline="") as f:
            out += [row["TEXT"] for row in csv.DictReader(f) if row["label"] == "0"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pack", type=Path, nargs="+", default=[REPO / "rules" / "cn_collection.yaml"])
    ap.add_argument("--cold", type=Path, default=COLD, help="folder with COLD's train.csv and dev.csv")
    ap.add_argument("--show", type=int, default=0, help="list this many hits")
    args = ap.parse_args()
    engine = RuleEngine.from_files(args.pack)
    tokenizer = Tokenizer(REPO / "rules" / "user_dict.txt")
    lines = safe_lines(args.cold)
    by_rule: Counter[str] = Counter()
    hits = []
    for text in lines:
        fired = {m.rule.id for m in engine.match(normalise(text, tokenizer), Speaker.AGENT)}
        if fired:
            hits.append((sorted(fired), text))
            by_rule.update(fired)
    print(f"COLD safe hits: {len(hits)} of {len(lines)}")
    for rule, n in by_rule.most_common():
        print(f"  {rule:<40} {n}")
    for rule_ids, text in hits[: args.show]:
        print(f"  {','.join(rule_ids)}: {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
