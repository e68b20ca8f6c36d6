"""Which literals must occur in any match of a regex — so a regex runs only when one of them is present.

Most of a pack's regexes are anchored on specific words (``(你|你个)(就是)?(骗子|垃圾)``); on a typical
segment none of those words occur and the regex cannot match. From the parse tree we derive a set of
literals such that every match contains at least one of them: a sequence contributes its most selective
element, an alternation the union of its branches, an optional part nothing. ``None`` means "no such
set" (e.g. ``\\d{11}``): the regex always runs.

"Most selective" is the set least likely to occur in ordinary speech, estimated from the word and
character frequencies of jieba's dictionary: ``(告诉|通知)(你)(家人|同事)`` is gated on the verbs or the
people, never on 你, which is in almost every segment.
"""

from __future__ import annotations

import os
import re
import re._constants as sre_c  # type: ignore[import-not-found]
import re._parser as sre_parse  # type: ignore[import-not-found]
from functools import lru_cache

MAX_CLASS_CHARS = 8  # a character class larger than this is not a useful trigger
MAX_TRIGGERS = 64
# A cover this likely (a lone comma or digit) filters almost nothing and only adds hits; 你 still pays off.
COMMON_COVER = 0.05

Triggers = frozenset[str] | None


@lru_cache(maxsize=1)
def _frequencies() -> tuple[dict[str, float], dict[str, float]]:
    """Relative word and character frequencies from jieba's dictionary (read once, ~1 s)."""
    import jieba

    words: dict[str, int] = {}
    chars: dict[str, int] = {}
    with open(os.path.join(os.path.dirname(jieba.__file__), "dict.txt"), encoding="utf-8") as f:
        for line in f:
            word, count, *_ = line.split(" ")
            n = int(count)
            words[word] = n
            for ch in word:
                chars[ch] = chars.get(ch, 0) + n
    word_total, char_total = sum(words.values()), sum(chars.values())
    return (
        {w: n / word_total for w, n in words.items()},
        {c: n / char_total for c, n in chars.items()},
    )


def occurrence_cost(literal: str) -> float:
    """How likely ``literal`` is in a segment of ordinary speech, up to a constant factor."""
    words, chars = _frequencies()
    if (p := words.get(literal)) is not None and len(literal) > 1:
        return p
    cost = 1.0
    for ch in literal:
        if "\u4e00" <= ch <= "\u9fff":  # an ideograph unknown to the dictionary is rare
            cost *= chars.get(ch, 1e-6) * (1 if len(literal) == 1 else 50)  # adjacent characters co-occur
        else:  # digits, Latin letters, punctuation, spaces: common one by one
            cost *= 0.2
    return cost


def _cost(triggers: frozenset[str]) -> float:
    return sum(occurrence_cost(t.lower()) for t in triggers)


def required_literals(pattern: str, flags: int = 0) -> Triggers:
    """The most selective set of literals one of which every match contains (``None``: no such set)."""
    covers = required_covers(pattern, flags)
    return covers[0] if covers else None


def required_covers(pattern: str, flags: int = 0, limit: int = 3) -> list[frozenset[str]]:
    """Up to ``limit`` independent literal sets, most selective first; every match hits each of them.

    ``(去|到)(你|你们)(家|单位)`` gives three covers: checking all of them gates the regex far better
    than its best one alone, since each is common on its own.
    """
    try:
        parsed = sre_parse.parse(pattern, flags)
    except re.error:
        return []
    return _covers(_unwrap(list(parsed)), limit)


def branch_covers(pattern: str, flags: int = 0, limit: int = 3) -> list[list[frozenset[str]]] | None:
    """Covers per top-level alternative (``A|B|C``): a match of the pattern is a match of one of them.

    ``None`` when some alternative needs no literal at all (the regex must always run).
    """
    try:
        parsed = sre_parse.parse(pattern, flags)
    except re.error:
        return None
    items = _unwrap(list(parsed))
    branches = (
        [_unwrap(list(b)) for b in items[0][1][1]] if len(items) == 1 and items[0][0] is sre_c.BRANCH else [items]
    )  # type: ignore[index]
    gates = [_covers(branch, limit) for branch in branches]
    return None if any(not covers for covers in gates) else gates


def _unwrap(items: list[tuple[object, object]]) -> list[tuple[object, object]]:
    """A pattern wrapped in one group is that group's contents."""
    while len(items) == 1 and items[0][0] is sre_c.SUBPATTERN:
        items = list(items[0][1][-1])  # type: ignore[index]
    return items


def _covers(items: list[tuple[object, object]], limit: int) -> list[frozenset[str]]:
    """The most selective cover, then the others that are worth a look (not a lone comma)."""
    usable = {frozenset(t.lower() for t in c) for c in _candidates(items) if c and len(c) <= MAX_TRIGGERS and all(c)}
    ranked = sorted(usable, key=_cost)[:limit]
    return ranked[:1] + [c for c in ranked[1:] if _cost(c) <= COMMON_COVER]


def _candidates(items: list[tuple[object, object]]) -> list[frozenset[str]]:
    """The literal sets each required element of a sequence contributes (runs of literals merged)."""
    candidates: list[frozenset[str]] = []
    run = ""
    for op, arg in items:
        if op is sre_c.LITERAL:
            run += chr(arg)  # type: ignore[arg-type]
            continue
        if run:
            candidates.append(frozenset({run}))
            run = ""
        found = _node(op, arg)
        if found:
            candidates.append(found)
    if run:
        candidates.append(frozenset({run}))
    return candidates


def _sequence(items: list[tuple[object, object]]) -> Triggers:
    """The most selective required element of a sequence."""
    candidates = _candidates(items)
    return min(candidates, key=_cost) if candidates else None


def _node(op: object, arg: object) -> Triggers:
    if op is sre_c.SUBPATTERN:
        return _sequence(list(arg[-1]))  # type: ignore[index]
    if op is sre_c.BRANCH:
        union: set[str] = set()
        for branch in arg[1]:  # type: ignore[index]
            found = _sequence(list(branch))
            if not found:
                return None  # one branch can match without any literal
            union |= found
        return frozenset(union)
    if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, getattr(sre_c, "POSSESSIVE_REPEAT", None)):
        low, _high, item = arg  # type: ignore[misc]
        return _sequence(list(item)) if low >= 1 else None
    if op is sre_c.IN:
        chars = [chr(a) for o, a in arg if o is sre_c.LITERAL]  # type: ignore[union-attr]
        if len(chars) == len(arg) and 0 < len(chars) <= MAX_CLASS_CHARS:  # type: ignore[arg-type]
            return frozenset(chars)
        return None
    return None  # ANY, categories, lookarounds, anchors: no literal required
