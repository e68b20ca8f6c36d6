"""One pass over a segment that says which keywords occur and which regexes can match.

The rule engine then offers every occurrence of those keywords and runs only those regexes, so the
cost of a segment hardly depends on the size of the pack. A regex is split into its top-level
alternatives, each gated on literal sets its matches must contain (``prefilter.branch_covers``);
cover words and keywords share one Aho-Corasick automaton, each cover is a bit, and a gate opens when
all of its bits are set. Regexes with nothing to gate on always run.

(Intel Hyperscan in prefilter mode would give the candidates in one C pass, but compiling these packs
took 20 s and more per pack here; the automaton builds in milliseconds.)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import ahocorasick

from compliance_monitor.detect.prefilter import branch_covers


@dataclass(frozen=True, slots=True)
class Candidates:
    keywords: frozenset[str]  # lowercased keywords that occur
    regexes: frozenset[int]  # numbers of the regexes that may match


@dataclass(frozen=True, slots=True)
class _Literal:
    word: str
    keyword: bool
    cover_bits: int  # the covers this word belongs to
    first_gates: tuple[int, ...]  # gates whose first (rarest) cover holds this word


class Scanner:
    """Keywords and regexes of one field; ``prefilter=False`` runs every regex (for tests)."""

    def __init__(self, keywords: Sequence[str], regexes: Sequence[str], *, prefilter: bool = True) -> None:
        self._ungated: list[int] = []
        self._gate_regex: list[int] = []  # gate -> regex number
        self._gate_need: list[int] = []  # gate -> bits of all its covers
        cover_bit: dict[frozenset[str], int] = {}
        words: dict[str, tuple[int, list[int]]] = {w: (0, []) for w in keywords}
        for g, pattern in enumerate(regexes):
            gates = branch_covers(pattern, re.IGNORECASE) if prefilter else None
            if gates is None:
                self._ungated.append(g)
                continue
            for covers in gates:
                gate = len(self._gate_regex)
                bits = [cover_bit.setdefault(c, 1 << len(cover_bit)) for c in covers]
                self._gate_regex.append(g)
                self._gate_need.append(sum(set(bits)))
                for cover, bit in zip(covers, bits, strict=True):
                    for word in cover:
                        old_bits, first = words.get(word, (0, []))
                        words[word] = (old_bits | bit, [*first, gate] if cover is covers[0] else first)
        keyword_set = set(keywords)
        self._automaton = ahocorasick.Automaton()
        for word, (bits, first) in words.items():
            self._automaton.add_word(word, _Literal(word, word in keyword_set, bits, tuple(first)))
        if words:
            self._automaton.make_automaton()
        self._empty = not words

    def scan(self, haystack: str) -> Candidates:
        present, gates, found = 0, [], []
        if not self._empty:
            for _end, literal in self._automaton.iter(haystack.lower()):
                present |= literal.cover_bits
                if literal.first_gates:
                    gates.extend(literal.first_gates)
                if literal.keyword:
                    found.append(literal.word)
        need, gate_regex = self._gate_need, self._gate_regex
        regexes = {gate_regex[g] for g in gates if need[g] & present == need[g]}
        if self._ungated:
            regexes.update(self._ungated)
        return Candidates(frozenset(found), frozenset(regexes))
