"""The rule matcher for utterance rules.

The rules of all loaded packs that a speaker's segments are matched against are compiled together:
all their keywords go into one scanner per field (``text`` / ``digits``; Aho-Corasick, see ``scan``),
with the literals that gate every other check: the regexes (gated per alternative on words their
matches must contain, see ``prefilter``), the jieba-token sequences and proximity pairs (on their
words) and the ``unless`` lists. So a segment is scanned once whatever the number of rules, plus once
by sound for pinyin keywords, and only the checks the scan opens then run; on a benign segment that
is none. Guards then drop matches: an ``unless`` phrase in the segment, a negation just before the
match (我们不会上门), or a check digit that fails (PII). A rule fires at most once per segment.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import NamedTuple

from compliance_monitor.detect.pii import VALIDATORS
from compliance_monitor.detect.pinyin import PinyinIndex
from compliance_monitor.detect.prefilter import alternatives, branch_covers, character_frequency, min_digits
from compliance_monitor.detect.rulepack import MatchSpec, Rule, RulePack, load_pack
from compliance_monitor.detect.scan import Check, Scanner
from compliance_monitor.messages import Finding, NormalisedText, Speaker, Transcript

# Negators that cancel a match that follows them in the same clause (我们不会上门, 没有人要告诉你家人).
NEGATORS = ("不会", "不要", "没有", "不是", "绝不", "决不", "并不", "从不", "不用", "不必", "不再", "没", "别")
NEGATION_WINDOW = 5  # characters looked back
_CLAUSE_ENDS = ",，。.!！?？;；:："
# A negator with no clause end after it, or a bare 不, right before the match (the end of the window).
_NEGATED = re.compile(f"(?:{'|'.join(NEGATORS)})[^{_CLAUSE_ENDS}]*\\Z|不\\Z")
_ASCII_WORD = re.compile(r"[A-Za-z0-9]")
_DIGIT = re.compile(r"\d")
_NOT_ID_CHAR = re.compile(r"[^0-9Xx]")
_TOKEN_BREAK = "\x00"  # joins a segment's tokens for the proximity check; no text holds it

Span = tuple[int, int]
Hit = tuple[str, Span]  # matched text, span


class RuleMatch(NamedTuple):  # a tuple: made for every finding, and cheaper than a frozen dataclass
    rule: Rule
    matched_text: str
    span: Span


def negated(text: str, start: int) -> bool:
    """Whether a negator precedes ``start`` closely, in the same clause."""
    return _NEGATED.search(text, max(0, start - NEGATION_WINDOW), start) is not None


def _word_bounded(text: str, span: Span) -> bool:
    """For Latin-script keywords: 'ass' must not fire inside 'class'."""
    start, end = span
    before_ok = start == 0 or not (_ASCII_WORD.match(text[start]) and _ASCII_WORD.match(text[start - 1]))
    after_ok = end >= len(text) or not (_ASCII_WORD.match(text[end - 1]) and _ASCII_WORD.match(text[end]))
    return before_ok and after_ok


def _occurrences(text: str, word: str) -> list[Span]:
    spans, at = [], text.find(word)
    while at >= 0:
        spans.append((at, at + len(word)))
        at = text.find(word, at + 1)
    return spans


def token_spans(text: str, tokens: Sequence[str]) -> list[Span]:
    spans, pos = [], 0
    for tok in tokens:
        at = text.find(tok, pos)
        at = pos if at < 0 else at
        spans.append((at, at + len(tok)))
        pos = at + len(tok)
    return spans


# ---------------------------------------------------------------------- checks the scanner gates


@dataclass(frozen=True, slots=True)
class _RegexCheck:
    rule_id: str
    regex: re.Pattern[str]
    digits: bool  # matched against the digits view
    validator: Callable[[str], bool] | None

    def find(self, text: NormalisedText, haystack: str, only: re.Pattern[str] | None) -> Span | None:
        """The first match that passes the validator, if any.

        ``only``: the one top-level alternative that can match (the others' covers are missing); it
        finds what the whole regex would, faster.
        """
        if self.validator is not None:
            for found in self.regex.finditer(haystack):
                if self.validator(_NOT_ID_CHAR.sub("", found.group(0))):
                    return found.span()
            return None
        first = (only or self.regex).search(haystack)
        return None if first is None else first.span()


@dataclass(frozen=True, slots=True)
class _TokensCheck:
    rule_id: str
    sequences: list[list[str]]
    digits = False

    def find(self, text: NormalisedText, haystack: str, only: re.Pattern[str] | None) -> Span | None:
        found = _sequence(text.tokens, self.sequences)
        return None if found is None else _tokens_span(haystack, text.tokens, *found)


@dataclass(frozen=True, slots=True)
class _NearCheck:
    rule_id: str
    a: re.Pattern[str]
    b: re.Pattern[str]
    within: int
    digits = False

    def find(self, text: NormalisedText, haystack: str, only: re.Pattern[str] | None) -> Span | None:
        found = _near(text.tokens, self.a, self.b, self.within)
        return None if found is None else _tokens_span(haystack, text.tokens, *found)


_Check = _RegexCheck | _TokensCheck | _NearCheck


def _regex_gates(regex: re.Pattern[str]) -> Check:
    # One cover per alternative: spelled-out covers (你个骗子) are selective enough that a second one
    # rarely spares a regex run, while every segment would pay for checking it.
    return branch_covers(regex.pattern, re.IGNORECASE, limit=1)


def _digits_needed(check: _Check, prefilter: bool) -> int:
    """Digits a segment's view must have for ``check`` to match (a digits regex needs one at least)."""
    needed = min_digits(check.regex.pattern) if prefilter and isinstance(check, _RegexCheck) else 0
    return max(1, needed) if check.digits else needed


def _with_digits_for(checks: set[int], needs: dict[int, int], haystack: str) -> set[int]:
    """``checks`` less the regexes that need more digits than ``haystack`` has."""
    n_digits = len(_DIGIT.findall(haystack))
    return {c for c in checks if needs.get(c, 0) <= n_digits}


def _spec(rule: Rule) -> MatchSpec:
    assert rule.match is not None  # utterance rules have one
    return rule.match


def _lowered(words: Iterable[str]) -> frozenset[str]:
    return frozenset(w.lower() for w in words)


def _regex_check(rule: Rule, pattern: str) -> _RegexCheck:
    m = _spec(rule)
    return _RegexCheck(
        rule.id, re.compile(pattern, re.IGNORECASE), m.field == "digits", VALIDATORS.get(m.validate_as or "")
    )


def _regex_entries(check: _RegexCheck, prefilter: bool) -> list[tuple[_Check, Check, re.Pattern[str] | None]]:
    """A regex's places among the checks: one, or one per top-level alternative with its own gate."""
    gates = _regex_gates(check.regex) if prefilter else None
    if gates is None or len(gates) == 1 or check.validator is not None:
        return [(check, gates, None)]
    split = alternatives(check.regex.pattern, re.IGNORECASE)
    return [(check, [gate], alternative) for gate, alternative in zip(gates, split, strict=True)]


def _token_checks(rule: Rule) -> list[tuple[_Check, Check]]:
    """A rule's token-sequence and proximity checks, gated on their words."""
    m = _spec(rule)
    checks: list[tuple[_Check, Check]] = []
    if m.tokens:  # every token of a sequence occurs in the text
        checks.append((_TokensCheck(rule.id, m.tokens), [[_lowered([token]) for token in seq] for seq in m.tokens]))
    if m.near:
        near = _NearCheck(rule.id, _any_of(m.near.a), _any_of(m.near.b), m.near.within)
        checks.append((near, [[_lowered(m.near.a), _lowered(m.near.b)]]))
    return checks


# ---------------------------------------------------------------------- the engine


class RuleEngine:
    """All loaded packs' utterance rules, matched together; see the module docstring."""

    def __init__(self, packs: Iterable[RulePack], *, prefilter: bool = True, regime: str | None = None) -> None:
        self.packs = list(packs)
        self.regime = regime
        self.rules: dict[str, Rule] = {}
        for pack in self.packs:
            for rule in pack.in_force(regime):
                if rule.id in self.rules:
                    raise ValueError(f"rule id {rule.id!r} is defined by two packs")
                self.rules[rule.id] = rule
        self.utterance_rules = [r for r in self.rules.values() if r.kind == "utterance"]
        self.omission_rules = [r for r in self.rules.values() if r.kind == "omission"]
        self.call_start_rules = [r for r in self.rules.values() if r.kind == "call_start"]
        self.max_context = max((_spec(r).context for r in self.utterance_rules), default=1)
        # Each speaker's segments are matched against that speaker's rules only, alone and joined to
        # the segments before (rules with ``context`` > 1).
        said_by = {s: [r for r in self.utterance_rules if r.speaker in ("both", s.value)] for s in Speaker}
        self._alone = {s: _Matcher(rules, prefilter) for s, rules in said_by.items()}
        self._across = {
            s: _Matcher([r for r in rules if _spec(r).context > 1], prefilter)
            for s, rules in said_by.items()
            if self.max_context > 1
        }

    @classmethod
    def from_files(cls, paths: Iterable[Path], *, regime: str | None = None) -> RuleEngine:
        """``regime`` selects among a pack's regimes; a pack that does not define it runs its default."""
        return cls((load_pack(p) for p in paths), regime=regime)

    @property
    def rule_count(self) -> int:
        return len(self.rules)

    def rule(self, rule_id: str) -> Rule:
        return self.rules[rule_id]

    def match(self, text: NormalisedText, speaker: Speaker, context: Sequence[NormalisedText] = ()) -> list[RuleMatch]:
        """Every rule that fires on ``text`` (said by ``speaker``), first match each.

        ``context`` holds the speaker's previous segments, oldest first; rules with ``context: N`` see
        the last N-1 of them joined to this one, but only matches reaching into this segment count.
        """
        hits = self._alone[speaker].scan(text)
        if context and self.max_context > 1:
            joined, offset = _join([*context[-(self.max_context - 1) :], text])
            for rule_id, (matched, span) in self._across[speaker].scan(joined).items():
                if rule_id not in hits and span[1] > offset:
                    hits[rule_id] = (matched, (max(0, span[0] - offset), span[1] - offset))
        return [RuleMatch(self.rules[rid], matched, span) for rid, (matched, span) in hits.items()]

    def detect(
        self, transcript: Transcript, text: NormalisedText, context: Sequence[NormalisedText] = ()
    ) -> list[Finding]:
        return [
            finding_for(m.rule, transcript, m.matched_text, m.span)
            for m in self.match(text, transcript.speaker, context)
        ]


class _Matcher:
    """Some utterance rules compiled for matching: keywords and gated checks in a scanner per field,
    and the keywords that may be misheard in a pinyin index."""

    def __init__(self, rules: list[Rule], prefilter: bool) -> None:
        self._negatable = frozenset(r.id for r in rules if _spec(r).negation and _spec(r).field == "text")
        self._build_keywords(rules)
        self._build_checks(rules, prefilter)

    def _build_keywords(self, rules: list[Rule]) -> None:
        self._keyword_rules: dict[str, dict[str, tuple[str, ...]]] = {"text": {}, "digits": {}}
        self._pinyin = PinyinIndex()
        for rule in rules:
            m = _spec(rule)
            for word in m.keywords:
                keyword_rules = self._keyword_rules[m.field]
                keyword_rules[word.lower()] = (*keyword_rules.get(word.lower(), ()), rule.id)
                if m.pinyin:
                    self._pinyin.add(word, rule.id, m.pinyin)
        self._pinyin.finish()
        self._latin_keywords = frozenset(
            w for words in self._keyword_rules.values() for w in words if _ASCII_WORD.search(w)
        )

    def _build_checks(self, rules: list[Rule], prefilter: bool) -> None:
        """The checks both scanners gate, numbered in the order their matches are offered.

        The regexes on the text and on the digits view, then token sequences and proximity, then each
        rule's ``unless`` list (found: the rule is off for the segment). A check that belongs to the
        other scanner has no gate there (``[]``: never open); without ``prefilter``, every other check
        is always open.
        """
        regexes = sorted((_regex_check(rule, p) for rule in rules for p in _spec(rule).regex), key=lambda c: c.digits)
        entries = [entry for check in regexes for entry in _regex_entries(check, prefilter)]
        entries += [(check, gates if prefilter else None, None) for r in rules for check, gates in _token_checks(r)]
        self._checks: list[_Check] = [check for check, _, _ in entries]
        self._alternative = {n: alternative for n, (_, _, alternative) in enumerate(entries) if alternative}
        unless = [(r.id, _lowered(_spec(r).unless)) for r in rules if _spec(r).unless]
        self._unless_rule = {len(entries) + n: rule_id for n, (rule_id, _) in enumerate(unless)}
        self._unless_checks = frozenset(self._unless_rule)
        self._text_scanner = Scanner(
            self._keyword_rules["text"],
            [[] if check.digits else gates for check, gates, _ in entries] + [[[words]] for _, words in unless],
            character_frequency,
        )
        self._digit_scanner = Scanner(
            self._keyword_rules["digits"], [gates if check.digits else [] for check, gates, _ in entries]
        )
        # A regex runs only on a segment with as many digits as its matches have (a phone number has
        # 11); without that many for any digits regex, the digits view is scanned for keywords only.
        needs = {n: _digits_needed(check, prefilter) for n, check in enumerate(self._checks)}
        self._min_digits = {n: need for n, need in needs.items() if self._checks[n].digits}
        self._fewest_digits = min(self._min_digits.values(), default=0)
        self._text_min_digits = {n: need for n, need in needs.items() if need and not self._checks[n].digits}
        self._digit_keywords = bool(self._keyword_rules["digits"])

    def scan(self, text: NormalisedText) -> dict[str, Hit]:
        """The first match of each rule: keywords in text order, then by sound, then regexes, then token
        sequences and proximity."""
        hits: dict[str, Hit] = {}
        lowered = text.text.lower()
        keywords, checks = self._text_scanner.scan(lowered)
        off: AbstractSet[str] = frozenset()  # rules an `unless` phrase turns off
        if checks and (unless := checks & self._unless_checks):
            off = set(map(self._unless_rule.__getitem__, unless))
            checks -= unless
        if checks and not checks.isdisjoint(self._text_min_digits):
            checks = _with_digits_for(checks, self._text_min_digits, text.text)
        if keywords:
            self._offer_keywords(hits, off, "text", text.text, lowered, keywords)
        n_digits = len(_DIGIT.findall(text.digits)) if self._min_digits else 0
        if self._digit_keywords or (self._min_digits and n_digits >= self._fewest_digits):
            checks |= self._scan_digits(hits, off, text.digits, n_digits)
        for _keyword, rule_id, span in self._pinyin.matches(text.text):
            self._offer(hits, off, rule_id, text.text, span)
        if checks:
            self._run_checks(hits, off, text, checks)
        return hits

    def _scan_digits(self, hits: dict[str, Hit], off: AbstractSet[str], digits: str, n_digits: int) -> set[int]:
        """Offers the keywords of the digits view; returns its regexes that may match."""
        lowered = digits.lower()
        keywords, checks = self._digit_scanner.scan(lowered)
        if keywords:
            self._offer_keywords(hits, off, "digits", digits, lowered, keywords)
        return {c for c in checks if self._min_digits[c] <= n_digits}

    def _offer_keywords(
        self, hits: dict[str, Hit], off: AbstractSet[str], field: str, haystack: str, lowered: str, words: list[str]
    ) -> None:
        if len(lowered) != len(haystack):  # a few characters change length when lowered
            lowered = haystack
        # In text order (by end, like an automaton): a rule reports its first match.
        occurrences = sorted(
            ((span, word) for word in words for span in _occurrences(lowered, word)),
            key=lambda o: (o[0][1], o[0][0]),  # longest first among those ending together
        )
        for span, word in occurrences:
            if word not in self._latin_keywords or _word_bounded(haystack, span):
                for rule_id in self._keyword_rules[field][word]:
                    self._offer(hits, off, rule_id, haystack, span)

    def _run_checks(self, hits: dict[str, Hit], off: AbstractSet[str], text: NormalisedText, opened: set[int]) -> None:
        """Offers the first match of each opened check, in the order of their numbers.

        A regex gated by alternative has a number for each; they follow one another.
        """
        numbers = sorted(opened)
        done = None
        for at, number in enumerate(numbers, 1):
            check = self._checks[number]
            if check is done:  # another alternative of the regex just run
                continue
            done = check
            if check.rule_id not in hits and check.rule_id not in off:
                alone = at == len(numbers) or self._checks[numbers[at]] is not check
                haystack = text.digits if check.digits else text.text
                span = check.find(text, haystack, self._alternative.get(number) if alone else None)
                if span is not None:
                    self._offer(hits, off, check.rule_id, haystack, span)

    def _offer(self, hits: dict[str, Hit], off: AbstractSet[str], rule_id: str, haystack: str, span: Span) -> None:
        if rule_id in hits or rule_id in off:
            return
        if rule_id in self._negatable and negated(haystack, span[0]):
            return
        hits[rule_id] = (haystack[span[0] : span[1]], span)


def _any_of(words: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)), re.IGNORECASE)


def _sequence(tokens: Sequence[str], sequences: list[list[str]]) -> tuple[int, int] | None:
    """The first and last token of the first of ``sequences`` to occur in ``tokens``."""
    for seq in sequences:
        n = len(seq)
        for i in range(len(tokens) - n + 1):
            if tokens[i] == seq[0] and list(tokens[i : i + n]) == seq:
                return i, i + n - 1
    return None


def _near(tokens: Sequence[str], a: re.Pattern[str], b: re.Pattern[str], within: int) -> tuple[int, int] | None:
    """The first and last token of the first pair of tokens, one holding an ``a`` word and another a ``b``
    word, at most ``within`` tokens apart (the first ``a`` token that has such a partner)."""
    joined = _TOKEN_BREAK.join(tokens)  # a word never holds the break, so each match lies in one token
    starts = list(accumulate((len(t) + 1 for t in tokens[:-1]), initial=0))
    a_at = sorted({bisect_right(starts, m.start()) - 1 for m in a.finditer(joined)})
    b_at = sorted({bisect_right(starts, m.start()) - 1 for m in b.finditer(joined)}) if a_at else []
    for i in a_at:
        for j in b_at:
            if i != j and abs(i - j) <= within:
                return min(i, j), max(i, j)
    return None


def _tokens_span(haystack: str, tokens: Sequence[str], first: int, last: int) -> Span:
    spans = token_spans(haystack, tokens[: last + 1])
    return spans[first][0], spans[last][1]


def _join(texts: Sequence[NormalisedText]) -> tuple[NormalisedText, int]:
    """Segments joined with a clause break; returns the joined text and where the last one starts."""
    sep = "。"
    offset = sum(len(t.text) + 1 for t in texts[:-1])
    joined = NormalisedText(
        raw=sep.join(t.raw for t in texts),
        text=sep.join(t.text for t in texts),
        digits=sep.join(t.digits for t in texts),
        tokens=tuple(tok for i, t in enumerate(texts) for tok in ((sep,) if i else ()) + t.tokens),
    )
    return joined, offset


def finding_for(rule: Rule, transcript: Transcript, matched: str, span: Span) -> Finding:
    return Finding(
        call_id=transcript.call_id,
        speaker=transcript.speaker,
        segment_no=transcript.segment_no,
        rule_id=rule.id,
        category=rule.category,
        severity=rule.severity,
        matched_text=matched,
        span=span,
        t0=transcript.t0,
        t1=transcript.t1,
        explanation=rule.explanation.supervisor,
        collector_explanation=rule.explanation.collector,
        source="rule",
        rule_source=rule.source,
        action_hint=rule.action,
    )
