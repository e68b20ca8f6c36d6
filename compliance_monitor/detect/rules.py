"""The rule matcher for utterance rules.

All keywords and regexes of all loaded packs go into one scanner per field (``text`` / ``digits``;
Aho-Corasick with literal gates for the regexes, see ``scan``), plus one pinyin automaton, so a segment
is scanned once whatever the number of rules; only the regexes the scan allows then run, and
jieba-token sequences and proximity only for the rules that use them. Guards
then drop matches: wrong speaker, an ``unless`` phrase in the segment, a negation just before the match
(我们不会上门), or a check digit that fails (PII). A rule fires at most once per segment.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from compliance_monitor.detect.pii import VALIDATORS
from compliance_monitor.detect.pinyin import PinyinIndex
from compliance_monitor.detect.rulepack import Rule, RulePack, load_pack
from compliance_monitor.detect.scan import Scanner
from compliance_monitor.messages import Finding, NormalisedText, Speaker, Transcript

# Negators that cancel a match that follows them in the same clause (我们不会上门, 没有人要告诉你家人).
NEGATORS = ("不会", "不要", "没有", "不是", "绝不", "决不", "并不", "从不", "不用", "不必", "不再", "没", "别")
NEGATION_WINDOW = 5  # characters looked back
_CLAUSE_END = re.compile(r"[,，。.!！?？;；:：]")
_ASCII_WORD = re.compile(r"[A-Za-z0-9]")
_DIGIT = re.compile(r"\d")

Span = tuple[int, int]


@dataclass(frozen=True, slots=True)
class RuleMatch:
    rule: Rule
    matched_text: str
    span: Span


def negated(text: str, start: int) -> bool:
    window = text[max(0, start - NEGATION_WINDOW) : start]
    if clause := _CLAUSE_END.split(window):
        window = clause[-1]
    return window.endswith("不") or any(neg in window for neg in NEGATORS)


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


class RuleEngine:
    """All loaded packs' utterance rules, matched together; see the module docstring."""

    def __init__(self, packs: Iterable[RulePack], *, prefilter: bool = True) -> None:
        self.packs = list(packs)
        self.rules: dict[str, Rule] = {}
        self._pinyin = PinyinIndex()
        self.max_context = 1
        keywords: dict[str, dict[str, list[str]]] = {"text": {}, "digits": {}}
        for pack in self.packs:
            for rule in pack.rules:
                if not rule.enabled:
                    continue
                if rule.id in self.rules:
                    raise ValueError(f"rule id {rule.id!r} is defined by two packs")
                self.rules[rule.id] = rule
                if rule.match is None:
                    continue
                m = rule.match
                self.max_context = max(self.max_context, m.context)
                for word in m.keywords:
                    keywords[m.field].setdefault(word.lower(), []).append(rule.id)
                    if m.pinyin:
                        self._pinyin.add(word, rule.id, m.pinyin)
        self._pinyin.finish()
        # `unless` phrases of a rule: one regex search instead of a loop over phrases.
        self._unless = {
            rule_id: re.compile("|".join(re.escape(g.lower()) for g in rule.match.unless))
            for rule_id, rule in self.rules.items()
            if rule.match and rule.match.unless
        }
        self.utterance_rules = [r for r in self.rules.values() if r.kind == "utterance"]
        # Only rules with regex, token sequences or proximity need per-rule work on each segment.
        self._structured = [
            _Structured(
                r,
                tuple(re.compile(p, re.IGNORECASE) for p in r.match.regex),
                _any_of(r.match.near.a) if r.match.near else None,
                _any_of(r.match.near.b) if r.match.near else None,
                VALIDATORS.get(r.match.validate_as or ""),
            )
            for r in self.utterance_rules
            if r.match and (r.match.regex or r.match.tokens or r.match.near)
        ]
        self._token_rules = [s for s in self._structured if s.rule.match and (s.rule.match.tokens or s.rule.match.near)]
        self._build_scanners(keywords, prefilter)
        self.omission_rules = [r for r in self.rules.values() if r.kind == "omission"]
        self.call_start_rules = [r for r in self.rules.values() if r.kind == "call_start"]

    def _build_scanners(self, keywords: dict[str, dict[str, list[str]]], prefilter: bool) -> None:
        """Per field, one scanner (see ``scan``) for its keywords and the regexes of its rules."""
        self._keyword_rules = keywords
        self._regex_table: list[tuple[_Structured, re.Pattern[str]]] = []
        self._scanners: dict[str, tuple[Scanner, list[int]]] = {}
        for field in ("text", "digits"):
            numbers: list[int] = []  # scanner's regex number -> engine's
            for st in self._structured:
                if st.rule.match is not None and st.rule.match.field == field:
                    for regex in st.regexes:
                        numbers.append(len(self._regex_table))
                        self._regex_table.append((st, regex))
            patterns = [self._regex_table[g][1].pattern for g in numbers]
            scanner = Scanner(list(keywords[field]), patterns, prefilter=prefilter)
            self._scanners[field] = (scanner, numbers)
        # Without a digit in the digits view, digit regexes cannot match: that pass is only for keywords.
        self._digit_keywords = bool(keywords["digits"])

    @classmethod
    def from_files(cls, paths: Iterable[Path]) -> RuleEngine:
        return cls(load_pack(p) for p in paths)

    @property
    def rule_count(self) -> int:
        return len(self.rules)

    def rule(self, rule_id: str) -> Rule:
        return self.rules[rule_id]

    # ------------------------------------------------------------------ matching

    def match(self, text: NormalisedText, speaker: Speaker, context: Sequence[NormalisedText] = ()) -> list[RuleMatch]:
        """Every rule that fires on ``text`` (said by ``speaker``), first match each.

        ``context`` holds the speaker's previous segments, oldest first; rules with ``context: N`` see
        the last N-1 of them joined to this one, but only matches reaching into this segment count.
        """
        hits = self._scan(text, speaker, max_context=1)
        if context and self.max_context > 1:
            joined, offset = _join([*context[-(self.max_context - 1) :], text])
            for rule_id, (matched, span) in self._scan(joined, speaker, max_context=self.max_context).items():
                if rule_id not in hits and span[1] > offset:
                    hits[rule_id] = (matched, (max(0, span[0] - offset), span[1] - offset))
        return [RuleMatch(self.rules[rid], matched, span) for rid, (matched, span) in hits.items()]

    def _scan(self, text: NormalisedText, speaker: Speaker, max_context: int) -> dict[str, tuple[str, Span]]:
        hits: dict[str, tuple[str, Span]] = {}
        lowered_text = text.text.lower()

        def offer(rule_id: str, matched: str, span: Span, haystack: str) -> None:
            rule = self.rules[rule_id]
            m = rule.match
            assert m is not None
            if rule_id in hits or (max_context > 1 and m.context == 1):
                return
            if rule.speaker not in ("both", speaker.value):
                return
            if m.negation and m.field == "text" and negated(haystack, span[0]):
                return
            if (unless := self._unless.get(rule_id)) is not None and unless.search(lowered_text):
                return
            hits[rule_id] = (matched, span)

        has_digits = _DIGIT.search(text.digits) is not None
        regexes: list[int] = []
        for field, (scanner, numbers) in self._scanners.items():
            if field == "digits" and not (has_digits or self._digit_keywords):
                continue
            haystack = text.text if field == "text" else text.digits
            found = scanner.scan(haystack)
            if found.keywords:
                lowered = lowered_text if field == "text" else haystack.lower()
                if len(lowered) != len(haystack):  # a few characters change length when lowered
                    lowered = haystack
                # In text order (by end, like an automaton): a rule reports its first match.
                occurrences = sorted(
                    ((span, word) for word in found.keywords for span in _occurrences(lowered, word)),
                    key=lambda o: (o[0][1], o[0][0]),  # longest first among those ending together
                )
                for span, word in occurrences:
                    if _ASCII_WORD.search(word) is None or _word_bounded(haystack, span):
                        for rule_id in self._keyword_rules[field][word]:
                            offer(rule_id, haystack[span[0] : span[1]], span, haystack)
            if field == "text" or has_digits:
                regexes.extend(numbers[g] for g in found.regexes)
        for _keyword, rule_id, span in self._pinyin.iter(text.text):
            offer(rule_id, text.text[span[0] : span[1]], span, text.text)
        for g in sorted(set(regexes)):
            st, regex = self._regex_table[g]
            m = st.rule.match
            assert m is not None
            if st.rule.id in hits:
                continue
            haystack = text.text if m.field == "text" else text.digits
            for found in regex.finditer(haystack):
                if st.validator is None or st.validator(re.sub(r"[^0-9Xx]", "", found.group(0))):
                    offer(st.rule.id, found.group(0), found.span(), haystack)
                    break
        spans: list[Span] | None = None
        for st in self._token_rules:
            m = st.rule.match
            assert m is not None
            if st.rule.id in hits:
                continue
            if m.tokens:
                spans = spans or token_spans(text.text, text.tokens)
                if (seq_span := _sequence(text.tokens, spans, m.tokens)) is not None:
                    offer(st.rule.id, text.text[seq_span[0] : seq_span[1]], seq_span, text.text)
            # Proximity: cheap whole-text test first; token positions only when both sides occur.
            if (
                m.near
                and st.near_a
                and st.near_b
                and st.rule.id not in hits
                and st.near_a.search(text.text)
                and st.near_b.search(text.text)
            ):
                spans = spans or token_spans(text.text, text.tokens)
                if (near_span := _near(text.tokens, spans, st.near_a, st.near_b, m.near.within)) is not None:
                    offer(st.rule.id, text.text[near_span[0] : near_span[1]], near_span, text.text)
        return hits

    def detect(
        self, transcript: Transcript, text: NormalisedText, context: Sequence[NormalisedText] = ()
    ) -> list[Finding]:
        return [
            finding_for(m.rule, transcript, m.matched_text, m.span)
            for m in self.match(text, transcript.speaker, context)
        ]


@dataclass(frozen=True, slots=True)
class _Structured:
    rule: Rule
    regexes: tuple[re.Pattern[str], ...]
    near_a: re.Pattern[str] | None
    near_b: re.Pattern[str] | None
    validator: Callable[[str], bool] | None


def _any_of(words: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)), re.IGNORECASE)


def _sequence(tokens: Sequence[str], spans: list[Span], sequences: list[list[str]]) -> Span | None:
    for seq in sequences:
        n = len(seq)
        for i in range(len(tokens) - n + 1):
            if tokens[i] == seq[0] and list(tokens[i : i + n]) == seq:
                return spans[i][0], spans[i + n - 1][1]
    return None


def _near(tokens: Sequence[str], spans: list[Span], a: re.Pattern[str], b: re.Pattern[str], within: int) -> Span | None:
    a_at = [i for i, t in enumerate(tokens) if a.search(t)]
    b_at = [i for i, t in enumerate(tokens) if b.search(t)]
    for i in a_at:
        for j in b_at:
            if i != j and abs(i - j) <= within:
                lo, hi = min(i, j), max(i, j)
                return spans[lo][0], spans[hi][1]
    return None


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
        action_hint=rule.action,
    )
