"""Scoring recognised text against references: CER after one normalisation, per clip and pooled, lost clips.

CER is computed after the normalisation every report uses: 繁→简, full/half width, numerals as digits, punctuation
and spaces dropped. Pooled CER is all edits over all reference characters (long clips weigh more, as they should);
a clip is *lost* when what was recognised holds under half of the reference's characters.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compliance_monitor.asr.scheduler import percentiles
from compliance_monitor.text.normalise import numerals_to_digits, to_half_width, to_simplified

LOST_BELOW = 0.5

_DROP = re.compile(r"[\W_]+")
_AS_HANZI = str.maketrans("0123456789", "零一二三四五六七八九")


def normalise_for_cer(text: str) -> str:
    """One canonical form for both sides: whisper writes 一二线 as 12線 or 1-2线, 六千三百二十 as 6320."""
    return _DROP.sub("", numerals_to_digits(to_half_width(to_simplified(text)))).translate(_AS_HANZI)


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


@dataclass(frozen=True)
class Clip:
    name: str
    audio: np.ndarray  # 16 kHz mono float32
    reference: str
    kind: str
    source: str


@dataclass(frozen=True)
class Scored:
    """One clip under one condition and mode: edits against the reference, for per-clip and pooled CER."""

    clip: str
    kind: str
    condition: str
    mode: str
    setting: str
    hypothesis: str
    edits: int
    ref_chars: int
    hyp_chars: int
    audio_s: float
    decode_s: list[float] = field(default_factory=list)  # per final segment (live) or the whole decode
    withdrawn: int = 0

    @property
    def cer(self) -> float:
        return self.edits / max(1, self.ref_chars)

    @property
    def lost(self) -> bool:
        return self.hyp_chars < LOST_BELOW * self.ref_chars


def score(clip: Clip, condition: str, mode: str, hypothesis: str, setting: str = "served", **extra: Any) -> Scored:
    ref, hyp = normalise_for_cer(clip.reference), normalise_for_cer(hypothesis)
    return Scored(
        clip.name,
        clip.kind,
        condition,
        mode,
        setting,
        hypothesis,
        edit_distance(hyp, ref),
        len(ref),
        len(hyp),
        len(clip.audio) / 16_000,
        **extra,
    )


def pooled(rows: list[Scored]) -> list[dict[str, Any]]:
    """Per condition × mode × setting: pooled CER (all edits over all reference characters), mean CER, lost clips."""
    groups: dict[tuple[str, str, str], list[Scored]] = defaultdict(list)
    for r in rows:
        groups[(r.condition, r.mode, r.setting)].append(r)
    out = []
    for (condition, mode, setting), g in sorted(groups.items()):
        out.append(
            {
                "condition": condition,
                "mode": mode,
                "setting": setting,
                "clips": len(g),
                "cer_pooled": round(sum(r.edits for r in g) / max(1, sum(r.ref_chars for r in g)), 3),
                "cer_mean": round(sum(r.cer for r in g) / len(g), 3),
                "lost": sum(r.lost for r in g),
                "withdrawn": sum(r.withdrawn for r in g),
                "decode_s": percentiles([d for r in g for d in r.decode_s]),
            }
        )
    return out


def format_report(rows: list[Scored]) -> str:
    lines = [f"{'clip':<28} {'cond':<9} {'mode':<9} {'setting':<34} {'CER':>6} {'lost':>4}  hypothesis"]
    for r in sorted(rows, key=lambda r: (r.clip, r.condition, r.mode, r.setting)):
        lost = "LOST" if r.lost else ""
        lines.append(
            f"{r.clip:<28} {r.condition:<9} {r.mode:<9} {r.setting:<34} {r.cer:>6.3f} {lost:>4}  {r.hypothesis}"
        )
    lines += [
        "",
        f"{'cond':<9} {'mode':<9} {'setting':<34} {'clips':>5} {'CER pooled':>10} {'CER mean':>8} {'lost':>4} "
        f"{'wdrn':>4}  decode s (per segment live) p50 / p95 / max",
    ]
    for s in pooled(rows):
        d = s["decode_s"]
        timing = " / ".join("-" if d[k] is None else f"{d[k]:.2f}" for k in ("p50", "p95", "max"))
        lines.append(
            f"{s['condition']:<9} {s['mode']:<9} {s['setting']:<34} {s['clips']:>5} {s['cer_pooled']:>10.3f} "
            f"{s['cer_mean']:>8.3f} {s['lost']:>4} {s['withdrawn']:>4}  {timing}"
        )
    return "\n".join(lines)
