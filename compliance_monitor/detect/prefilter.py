"""Which literals must occur in any match of a regex — so a regex runs only when one of them is present.

Most of a pack's regexes are anchored on specific words (``(你|你个)(就是)?(骗子|垃圾)``); on a typical
segment none of those words occur and the regex cannot match. From the parse tree we derive a set of
literals such that every match contains at least one of them: a sequence contributes its most selective
element (the one whose shortest literal is longest), an alternation the union of its branches, an
optional part nothing. ``None`` means "no such set" (e.g. ``\\d{11}``): the regex always runs.
"""

from __future__ import annotations

import re
import re._constants as sre_c  # type: ignore[import-not-found]
import re._parser as sre_parse  # type: ignore[import-not-found]

MAX_CLASS_CHARS = 8  # a character class larger than this is not a useful trigger
MAX_TRIGGERS = 64

Triggers = frozenset[str] | None


def required_literals(pattern: str, flags: int = 0) -> Triggers:
    try:
        parsed = sre_parse.parse(pattern, flags)
    except re.error:
        return None
    triggers = _sequence(list(parsed))
    if triggers is None or not triggers or len(triggers) > MAX_TRIGGERS or any(not t for t in triggers):
        return None
    return frozenset(t.lower() for t in triggers)


def _sequence(items: list[tuple[object, object]]) -> Triggers:
    """Best element of a sequence; runs of plain literals are merged into longer words first."""
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
    if not candidates:
        return None
    return max(candidates, key=lambda c: (min(len(t) for t in c), -len(c)))


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
