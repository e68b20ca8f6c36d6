"""Homophone-tolerant keyword matching through pinyin, for what Whisper mishears.

Whisper writes what it hears, so a threat comes out as 弄屎你 (nòng shǐ) for 弄死你 (nòng sǐ), 沙了你 for
杀了你. Each character maps to its first pinyin reading (the same map for keywords and transcripts, so
heteronyms stay consistent); ``toneless`` drops tones, ``fuzzy`` also merges the initials and finals that
Mandarin speakers and ASR confuse most (zh/z, ch/c, sh/s, n/l, -ing/-in, -eng/-en, -ang/-an) — the
模糊音 of Chinese input methods. Matching is Aho-Corasick over ``|syllable|syllable|`` strings, with
matches mapped back to character offsets.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from functools import lru_cache
from typing import Literal

import ahocorasick
from pypinyin import Style, lazy_pinyin

PinyinMode = Literal["tones", "toneless", "fuzzy"]

_FUZZY_INITIALS = (("zh", "z"), ("ch", "c"), ("sh", "s"), ("n", "l"))
_FUZZY_FINALS = (("ing", "in"), ("eng", "en"), ("ang", "an"))


@lru_cache(maxsize=65_536)
def syllable(ch: str, mode: PinyinMode) -> str:
    if not "\u3400" <= ch <= "\u9fff":
        return ch.lower()
    style = Style.TONE3 if mode == "tones" else Style.NORMAL
    syl = lazy_pinyin(ch, style=style, errors="default")[0]
    if mode == "fuzzy":
        for a, b in _FUZZY_INITIALS:
            if syl.startswith(a):
                syl = b + syl[len(a) :]
                break
        for a, b in _FUZZY_FINALS:
            if syl.endswith(a):
                syl = syl[: -len(a)] + b
                break
    return syl


def spell(text: str, mode: PinyinMode) -> tuple[str, list[int]]:
    """'|syl|syl|…|' for ``text`` and the offset in it where each character's syllable starts."""
    parts, starts, pos = ["|"], [], 1
    for ch in text:
        syl = syllable(ch, mode)
        starts.append(pos)
        parts.append(syl + "|")
        pos += len(syl) + 1
    return "".join(parts), starts


class PinyinIndex:
    """Keywords of several rules, matched by sound."""

    def __init__(self, mode: PinyinMode) -> None:
        self.mode = mode
        self._automaton = ahocorasick.Automaton()
        self._size = 0

    def add(self, keyword: str, rule_id: str) -> None:
        key = spell(keyword, self.mode)[0]
        entry = self._automaton.get(key, (keyword, [], len(key)))
        entry[1].append(rule_id)
        self._automaton.add_word(key, entry)
        self._size += 1

    def finish(self) -> None:
        if self._size:
            self._automaton.make_automaton()

    def iter(self, text: str) -> Iterator[tuple[str, tuple[str, ...], tuple[int, int]]]:
        """(keyword, rule ids, character span in ``text``) for each sound-alike occurrence."""
        if not self._size:
            return
        spelled, starts = spell(text, self.mode)
        for end, (keyword, rule_ids, key_len) in self._automaton.iter(spelled):
            begin = end - key_len + 2  # first char of the first syllable
            first = bisect.bisect_left(starts, begin)
            yield keyword, tuple(rule_ids), (first, first + len(keyword))
