"""Character error rate for Mandarin, after the normalisation every report uses."""

from __future__ import annotations

import re

from compliance_monitor.text.normalise import numerals_to_digits, to_half_width, to_simplified

_DROP = re.compile(r"[\W_]+")


def normalise_for_cer(text: str) -> str:
    return _DROP.sub("", numerals_to_digits(to_half_width(to_simplified(text))))


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def cer(hypothesis: str, reference: str) -> float:
    ref, hyp = normalise_for_cer(reference), normalise_for_cer(hypothesis)
    return edit_distance(hyp, ref) / max(1, len(ref))
