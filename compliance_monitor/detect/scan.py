"""One pass over a segment that says which keywords occur and which gated checks may succeed.

The rule engine then offers every occurrence of those keywords and runs only those checks (regexes,
token sequences, proximity, ``unless`` lists), so the cost of a segment hardly depends on the size of
the pack. A check is a list of gates, any of which may open it; a gate is a list of *covers*, literal
sets each of which every success contains one literal of (``prefilter.branch_covers`` derives them
for a regex). Cover words and keywords share one Aho-Corasick automaton. A check with no gates
(``None``) is always open; one with an empty list never is.

(Intel Hyperscan in prefilter mode would give the candidates in one C pass, but compiling these packs
took 20 s and more per pack here; the automaton builds in milliseconds.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter
from typing import NamedTuple

import ahocorasick

Gate = Sequence[frozenset[str]]  # covers that must all be hit (lowercase literals)
Check = Sequence[Gate] | None  # open when any gate opens; None: always open
Candidates = tuple[list[str], set[int]]  # the keywords that occur (lowercased, each once), the open checks

_literal_number = itemgetter(1)  # of an automaton hit (end, value)


def _bytewise(text: str) -> str:
    """``text`` as its UTF-8 bytes, one latin-1 character each (what the automaton is built on)."""
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


class _Literal(NamedTuple):
    opens: frozenset[int]  # checks it opens alone
    conditional: tuple[tuple[int, tuple[frozenset[int], ...]], ...]  # (check, its other covers' words)
    keyword: str | None  # the keyword it is, if it is one


class Scanner:
    """Keywords and gated checks of one text view, scanned in its lowercased form.

    A gate of one cover opens as soon as one of its words occurs. A gate of several is looked at when
    a word of its first (most selective) cover occurs, and opens if each other cover has a word too.

    The automaton runs over UTF-8 bytes: pyahocorasick looks a node's child up linearly, and with
    characters the root had a child for each of hundreds of first characters, a scan of them all for
    every character that starts no word; with bytes a node has 64 children at most. UTF-8 being
    self-synchronising, a word's bytes occur exactly where the word does. ``char_frequency`` (how
    common a character is in ordinary speech) puts the words of common characters first, so that
    their bytes come early in those linear lookups.
    """

    def __init__(
        self,
        keywords: Iterable[str],
        checks: Sequence[Check],
        char_frequency: Callable[[str], float] = lambda _ch: 0.0,
    ) -> None:
        keywords = set(keywords)
        cover_words = {word for gates in checks for covers in gates or () for cover in covers for word in cover}
        words = sorted(cover_words | keywords, key=lambda w: (-char_frequency(w[0]), w))
        number = {word: n for n, word in enumerate(words)}
        self._always = frozenset(c for c, gates in enumerate(checks) if gates is None)
        opens: list[set[int]] = [set() for _ in words]  # per word, the checks it opens alone
        conditional: list[list[tuple[int, tuple[frozenset[int], ...]]]] = [[] for _ in words]  # (check, other covers)
        for check, gates in enumerate(checks):
            for first, *rest in gates or ():
                others = tuple(frozenset(number[w] for w in cover) for cover in rest)
                for word in first:
                    if others:
                        conditional[number[word]].append((check, others))
                    else:
                        opens[number[word]].add(check)
        self._literals = [
            _Literal(frozenset(opens[n]), tuple(conditional[n]), word if word in keywords else None)
            for n, word in enumerate(words)
        ]
        self._automaton = ahocorasick.Automaton()
        for n, word in enumerate(words):
            self._automaton.add_word(_bytewise(word), n)
        if words:
            self._automaton.make_automaton()

    def scan(self, lowered: str) -> Candidates:
        keywords: list[str] = []
        checks = set(self._always)
        if not self._literals:
            return keywords, checks
        found = set(map(_literal_number, self._automaton.iter(_bytewise(lowered))))  # each word once
        for n in found:  # a handful: a plain loop beats set algebra here
            opens, conditional, keyword = self._literals[n]
            checks |= opens
            for check, others in conditional:
                if not any(map(found.isdisjoint, others)):
                    checks.add(check)
            if keyword is not None:
                keywords.append(keyword)
        return keywords, checks
