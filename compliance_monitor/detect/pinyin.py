"""Homophone-tolerant keyword matching through pinyin, for what Whisper mishears.

Whisper writes what it hears, so a threat comes out as 弄屎你 (nòng shǐ) for 弄死你 (nòng sǐ), 沙了你 for
杀了你. Every character is mapped to a *sound class* — one private-use code point per syllable — with
``str.translate`` (C speed, and the same length, so match offsets are character offsets in the
transcript). Keywords are translated the same way and matched with Aho-Corasick.

Modes: ``tones`` (same syllable and tone), ``toneless``, and ``fuzzy``: toneless plus the initials and
finals Mandarin speakers and ASR confuse most (zh/z, ch/c, sh/s, n/l, -ing/-in, -eng/-en, -ang/-an), the
模糊音 of Chinese input methods. A character's first reading is used for keywords and transcripts alike,
so heteronyms stay consistent.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import ahocorasick

PinyinMode = Literal["tones", "toneless", "fuzzy"]

_FUZZY_INITIALS = (("zh", "z"), ("ch", "c"), ("sh", "s"), ("n", "l"))
_FUZZY_FINALS = (("ing", "in"), ("eng", "en"), ("ang", "an"))
_CLASS_BASE = 0xF0000  # Supplementary Private Use Area-A: never in a transcript


def syllable(reading: str, mode: PinyinMode) -> str:
    """A tone-marked reading ('shǐ') in the form ``mode`` compares."""
    from pypinyin.contrib.tone_convert import to_normal, to_tone3

    if mode == "tones":
        return str(to_tone3(reading))
    syl = str(to_normal(reading))
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


@lru_cache(maxsize=3)
def sound_table(mode: PinyinMode) -> dict[int, int]:
    """Code point → sound-class code point, for every character pypinyin knows (~42k; built once, ~0.6 s)."""
    from pypinyin.pinyin_dict import pinyin_dict

    classes: dict[str, int] = {}
    return {
        cp: _CLASS_BASE + classes.setdefault(syllable(readings.split(",")[0], mode), len(classes))
        for cp, readings in pinyin_dict.items()
    }


def sounds(text: str, mode: PinyinMode) -> str:
    return text.translate(sound_table(mode))


@lru_cache(maxsize=4)
def _translation_list(soundless: frozenset[str]) -> list[int]:
    """The fuzzy ``sound_table`` as a list: str.translate indexes it faster than it hashes into a dict
    (1.6 MB, shared by the indexes whose keys hold the same ``soundless`` characters; usually none).

    A character without a sound stays itself if a key holds it; all others become one filler no key
    holds, so they match nothing, as before.
    """
    table = sound_table("fuzzy")
    filler = next(cp for cp in range(_CLASS_BASE - 1, 0, -1) if chr(cp) not in soundless)
    heard = [filler] * (max(table) + 1)
    for ch in soundless:
        if ord(ch) < len(heard):
            heard[ord(ch)] = ord(ch)
    classes: dict[int, int] = {}  # one int object per sound class: few, so they stay in cache
    for cp, sound in table.items():
        heard[cp] = classes.setdefault(sound, sound)
    return heard


class PinyinIndex:
    """Keywords of several rules and tolerance modes, matched by sound in one pass.

    The modes nest (same tone ⇒ same toneless syllable ⇒ same fuzzy class), so the transcript is
    translated once, to fuzzy classes, and scanned once; a hit for a stricter mode is then confirmed
    on the few characters it covers.
    """

    def __init__(self) -> None:
        self._automaton = ahocorasick.Automaton()
        self._size = 0
        self._heard_as: list[int] = []  # code point -> fuzzy sound class, for str.translate

    def add(self, keyword: str, rule_id: str, mode: PinyinMode) -> None:
        key = sounds(keyword, "fuzzy")
        entries: list[tuple[str, str, PinyinMode, str]] = self._automaton.get(key, [])
        entries.append((keyword, rule_id, mode, sounds(keyword, mode)))
        self._automaton.add_word(key, entries)
        self._size += 1

    def finish(self) -> None:
        if self._size:
            self._automaton.make_automaton()
            soundless = frozenset(ch for key in self._automaton for ch in key if ord(ch) < _CLASS_BASE)
            self._heard_as = _translation_list(soundless)

    def matches(self, text: str) -> list[tuple[str, str, tuple[int, int]]]:
        """(keyword, rule id, character span in ``text``) for each sound-alike occurrence, in text order."""
        found: list[tuple[str, str, tuple[int, int]]] = []
        if not self._size:
            return found
        for end, entries in self._automaton.iter(text.translate(self._heard_as)):
            start = end - len(entries[0][0]) + 1
            heard = text[start : end + 1]
            for keyword, rule_id, mode, key in entries:
                if mode == "fuzzy" or sounds(heard, mode) == key:
                    found.append((keyword, rule_id, (start, end + 1)))
        return found
