"""Which literals must occur in any match of a regex — so a regex runs only when one of them is present.

Most of a pack's regexes are anchored on specific words (``(你|你个)(就是)?(骗子|垃圾)``); on a typical
segment none of those words occur and the regex cannot match. From the parse tree we derive sets of
literals (*covers*) such that every match contains at least one literal of each: a run of small, finite
parts gives the strings it can spell (你骗子, 你个骗子, 你就是垃圾 …), any other required element
what it needs in turn (an alternation the union of its branches, an optional part nothing). ``None``
means "no such set" (e.g. ``\\d{11}``): the regex always runs.

"Most selective" is the set least likely to occur in ordinary speech, estimated from the word and
character frequencies of jieba's dictionary: ``(告诉|通知)(你)(家人|同事)`` is gated on 告诉你家人,
通知你同事 …, or on the verbs or the people, never on 你, which is in almost every segment.
"""

from __future__ import annotations

import os
import re
import re._compiler as sre_compile
import re._constants as sre_c
import re._parser as sre_parse
from functools import lru_cache
from typing import Any

MAX_CLASS_CHARS = 8  # a character class larger than this is not a useful trigger
MAX_TRIGGERS = 256  # literals in one cover (the automaton holds them all; a segment only pays for hits)
MAX_SPELLED_REPEAT = 3  # x{0,3} is spelled out; x{0,4} and longer break a run
# Each character a literal has beyond a known word or character makes it this much rarer.
RARER_PER_CHAR = 0.2
# English words in nearly every English segment: a trigger as poor as a comma (the dictionary is Chinese).
_COMMON_ENGLISH = (
    "a an the i me my you your he him his she her it its we us our they them their this that what who "
    "is are was were be been am do does did have has had will would can could should not no to of in "
    "on at for with from by and or but if so up out about just like get got going"
)
COMMON_ENGLISH = frozenset(_COMMON_ENGLISH.split())
# A cover this likely (a lone comma or digit) filters almost nothing and only adds hits; 你 still pays off.
COMMON_COVER = 0.05

Triggers = frozenset[str] | None
_Item = tuple[Any, Any]  # (opcode, argument) of re's parse tree, which is untyped


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


def character_frequency(ch: str) -> float:
    """Relative frequency of ``ch`` in jieba's dictionary words (0 for a character it does not know)."""
    return _frequencies()[1].get(ch, 0.0)


@lru_cache(maxsize=1 << 16)
def occurrence_cost(literal: str) -> float:
    """How likely ``literal`` is in a segment of ordinary speech, up to a constant factor.

    A word of known frequency has it. Any other literal is no more likely than a piece of it, less so
    by ``RARER_PER_CHAR`` for each further character: 你个骗子 is rarer than 骗子.
    """
    words, chars = _frequencies()
    if len(literal) > 1 and (p := words.get(literal)) is not None:
        return p
    if literal in COMMON_ENGLISH:
        return COMMON_COVER
    cost = 1.0
    for ch in literal:
        if "\u4e00" <= ch <= "\u9fff":  # an ideograph unknown to the dictionary is rare
            cost *= chars.get(ch, 1e-6) * (1 if len(literal) == 1 else 50)  # adjacent characters co-occur
        else:  # digits, Latin letters, punctuation, spaces: common one by one
            cost *= 0.2
    if len(literal) > 1:
        cost = min(cost, RARER_PER_CHAR * min(occurrence_cost(literal[1:]), occurrence_cost(literal[:-1])))
    return cost


def _cost(triggers: frozenset[str]) -> float:
    return sum(occurrence_cost(t.lower()) for t in triggers)


def required_literals(pattern: str, flags: int = 0) -> Triggers:
    """The most selective set of literals one of which every match contains (``None``: no such set)."""
    covers = required_covers(pattern, flags)
    return covers[0] if covers else None


def required_covers(pattern: str, flags: int = 0, limit: int = 3) -> list[frozenset[str]]:
    """Up to ``limit`` independent literal sets, most selective first; every match hits each of them.

    ``(去|到).{0,3}(你|你们).{0,3}(家|单位)`` gives three covers: checking all of them gates the regex
    far better than its best one alone, since each is common on its own.
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
    gates = [_covers(_unwrap(branch), limit) for branch in _top_level_branches(parsed)]
    return None if any(not covers for covers in gates) else gates


def alternatives(pattern: str, flags: int = 0) -> list[re.Pattern[str]]:
    """The top-level alternatives of ``pattern`` (``A|B|C``), each compiled on its own.

    Of a regex's alternatives, only those whose covers occur can match; searching with just those
    finds the regex's first match (the leftmost of theirs, the earliest on a tie) at a fraction of the
    cost, as no other alternative is tried at every position. One alternative: ``[pattern]``.
    """
    parsed = sre_parse.parse(pattern, flags)
    branches = _top_level_branches(parsed)
    if len(branches) == 1:
        return [re.compile(pattern, flags)]
    # Compiled from the parse tree, with the whole pattern's flags and groups.
    return [sre_compile.compile(sre_parse.SubPattern(parsed.state, branch), flags) for branch in branches]


def _top_level_branches(parsed: sre_parse.SubPattern) -> list[list[_Item]]:
    items = _unwrap(list(parsed))
    if len(items) == 1 and items[0][0] is sre_c.BRANCH:
        return [list(b) for b in items[0][1][1]]
    return [items]


def min_digits(pattern: str, flags: int = 0) -> int:
    """How many digits (``\\d``) every match of ``pattern`` has at least: 18 for an ID number.

    A regex for long numbers then need not run on a segment with fewer digits in all.
    """
    try:
        return _digits_in(list(sre_parse.parse(pattern, flags)))
    except re.error:
        return 0


def _digits_in(items: list[_Item]) -> int:
    return sum(_digits_of(op, arg) for op, arg in items)


def _digits_of(op: Any, arg: Any) -> int:
    if op is sre_c.LITERAL:
        return int(chr(arg).isdecimal())
    if op is sre_c.IN:
        return int(all(_digit_only(o, a) for o, a in arg))
    if op is sre_c.SUBPATTERN:
        return _digits_in(list(arg[-1]))
    if op is sre_c.BRANCH:
        return min(_digits_in(list(branch)) for branch in arg[1])
    if op in _REPEATS:
        low, _high, item = arg
        return int(low) * _digits_in(list(item))
    return 0  # anything else may match without a digit (lookarounds consume none)


def _digit_only(op: Any, arg: Any) -> bool:
    """Whether a member of a character class matches digits only."""
    if op is sre_c.CATEGORY:
        return arg is sre_c.CATEGORY_DIGIT
    if op is sre_c.LITERAL:
        return chr(arg).isdecimal()
    if op is sre_c.RANGE:
        low, high = arg
        return all(chr(c).isdecimal() for c in range(low, high + 1))
    return False


def _unwrap(items: list[_Item]) -> list[_Item]:
    """A pattern wrapped in one group is that group's contents."""
    while len(items) == 1 and items[0][0] is sre_c.SUBPATTERN:
        items = list(items[0][1][-1])
    return items


def _covers(items: list[_Item], limit: int) -> list[frozenset[str]]:
    """The most selective cover, then others that are worth a look (not a lone comma) and independent:
    they rest on other parts of the sequence."""
    usable: dict[frozenset[str], range] = {}
    for cover, parts in _candidates(items):
        lowered = frozenset(t.lower() for t in cover)
        if lowered and len(lowered) <= MAX_TRIGGERS and all(lowered):
            usable.setdefault(_shortest(lowered), parts)
    chosen: list[frozenset[str]] = []
    taken: set[int] = set()
    for cover in sorted(usable, key=_cost):
        if len(chosen) == limit:
            break
        if chosen and (_cost(cover) > COMMON_COVER or not taken.isdisjoint(usable[cover])):
            continue
        chosen.append(cover)
        taken.update(usable[cover])
    return chosen


def _shortest(cover: frozenset[str]) -> frozenset[str]:
    """The cover without the literals that contain another of its literals (你个 when 你 is in)."""
    return frozenset(t for t in cover if not any(u != t and u in t for u in cover))


def _candidates(items: list[_Item]) -> list[tuple[frozenset[str], range]]:
    """Literal sets every match of a sequence contains one of, with the parts of the sequence they rest on.

    A run of parts with few possible spellings gives the spellings of each of its stretches; any other
    required part, what it needs in turn. A part repeated without a small bound (``操+``) ends one run
    and starts the next: its first and its last copy border on their neighbours (操操你 has 操你).
    """
    candidates: list[tuple[frozenset[str], range]] = []
    run: list[frozenset[str]] = []  # spellings of each part of the current run
    start = 0  # where the run starts in ``items``
    for index, (op, arg) in enumerate(items):
        if (spellings := _spellings(op, arg)) is not None:
            run.append(spellings)
            continue
        copy = _repeated_copy(op, arg)
        candidates += _stretches(run if copy is None else [*run, copy], start)
        run, start = ([], index + 1) if copy is None else ([copy], index)
        if copy is None and (found := _node(op, arg)):
            candidates.append((found, range(index, index + 1)))
    candidates += _stretches(run, start)
    return candidates


def _repeated_copy(op: Any, arg: Any) -> frozenset[str] | None:
    """The spellings of one copy of a part repeated at least once and too often to spell out."""
    if op not in _REPEATS:
        return None
    low, _high, item = arg
    return _spell(list(item)) if low >= 1 else None


def _stretches(run: list[frozenset[str]], first: int) -> list[tuple[frozenset[str], range]]:
    """What each stretch of a run of parts can spell, where that is few strings and never empty."""
    found = []
    for start in range(len(run)):
        spelled = frozenset({""})
        for end in range(start, len(run)):
            spelled = frozenset(a + b for a in spelled for b in run[end])
            if len(spelled) > MAX_TRIGGERS:
                break
            if "" not in spelled:
                found.append((spelled, range(first + start, first + end + 1)))
    return found


def _spell(items: list[_Item]) -> frozenset[str] | None:
    """Every string a sequence can match, if they are few (``None``: many, or unbounded)."""
    spelled = frozenset({""})
    for op, arg in items:
        part = _spellings(op, arg)
        if part is None:
            return None
        spelled = frozenset(a + b for a in spelled for b in part)
        if len(spelled) > MAX_TRIGGERS:
            return None
    return spelled


_REPEATS = (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, getattr(sre_c, "POSSESSIVE_REPEAT", None))
_ZERO_WIDTH = (sre_c.AT, sre_c.ASSERT, sre_c.ASSERT_NOT)  # anchors and lookarounds consume nothing


def _spellings(op: Any, arg: Any) -> frozenset[str] | None:
    """Every string one part of a pattern can match, if they are few."""
    if op is sre_c.LITERAL:
        return frozenset({chr(arg)})
    if op is sre_c.IN:
        return _class_chars(arg)
    if op is sre_c.SUBPATTERN:
        return _spell(list(arg[-1]))
    if op is sre_c.BRANCH:
        spelled: set[str] = set()
        for branch in arg[1]:
            if (part := _spell(list(branch))) is None:
                return None
            spelled |= part
        return frozenset(spelled) if len(spelled) <= MAX_TRIGGERS else None
    if op in _REPEATS:
        low, high, item = arg
        once = _spell(list(item)) if high <= MAX_SPELLED_REPEAT else None
        if once is None:
            return None
        spelled, repeated = set(), frozenset({""})
        for count in range(high + 1):
            if count >= low:
                spelled |= repeated
            if count < high:
                repeated = frozenset(a + b for a in repeated for b in once)
        return frozenset(spelled) if len(spelled) <= MAX_TRIGGERS else None
    if op in _ZERO_WIDTH:
        return frozenset({""})
    return None


def _class_chars(arg: Any) -> frozenset[str] | None:
    """The characters of a small class of literals (``[寄送发]``), else ``None``."""
    chars = [chr(a) for o, a in arg if o is sre_c.LITERAL]
    if len(chars) == len(arg) and 0 < len(chars) <= MAX_CLASS_CHARS:
        return frozenset(chars)
    return None


def _sequence(items: list[_Item]) -> Triggers:
    """The most selective required element of a sequence."""
    candidates = [cover for cover, _parts in _candidates(items)]
    return min(candidates, key=_cost) if candidates else None


def _node(op: Any, arg: Any) -> Triggers:
    if op is sre_c.SUBPATTERN:
        return _sequence(list(arg[-1]))
    if op is sre_c.BRANCH:
        union: set[str] = set()
        for branch in arg[1]:
            found = _sequence(list(branch))
            if not found:
                return None  # one branch can match without any literal
            union |= found
        return frozenset(union)
    if op in _REPEATS:
        low, _high, item = arg
        return _sequence(list(item)) if low >= 1 else None
    if op is sre_c.IN:
        return _class_chars(arg)
    return None  # ANY, categories, lookarounds, anchors: no literal required
