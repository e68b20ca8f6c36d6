"""The rule matcher for utterance rules.

All keywords of all loaded packs go into one Aho-Corasick automaton per field (``text`` / ``digits``),
plus one pinyin automaton per tolerance mode, so a segment is scanned once whatever the number of
rules. Regexes, jieba-token sequences and proximity run only for the rules that use them. Guards
then drop matches: wrong speaker, an ``unless`` phrase in the segment, a negation just before the match
(我们不会上门), or a check digit that fails (PII). A rule fires at most once per segment.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import ahocorasick

from compliance_monitor.detect.pii import VALIDATORS
from compliance_monitor.detect.pinyin import PinyinIndex, PinyinMode
from compliance_monitor.detect.prefilter import branch_covers
from compliance_monitor.detect.rulepack import Rule, RulePack, load_pack
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


def token_spans(text: str, tokens: Sequence[str]) -> list[Span]:
    spans, pos = [], 0
    for tok in tokens:
        at = text.find(tok, pos)
        at = pos if at < 0 else at
        spans.append((at, at + len(tok)))
        pos = at + len(tok)
    return spans


class RuleEngine:
    def __init__(self, packs: Iterable[RulePack], *, prefilter: bool = True) -> None:
        self.packs = list(packs)
        self.rules: dict[str, Rule] = {}
        self._regexes: dict[str, tuple[re.Pattern[str], ...]] = {}
        self._automata: dict[str, ahocorasick.Automaton] = {}
        self._pinyin: dict[PinyinMode, PinyinIndex] = {}
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
                self._regexes[rule.id] = tuple(re.compile(p, re.IGNORECASE) for p in m.regex)
                for word in m.keywords:
                    keywords[m.field].setdefault(word.lower(), []).append(rule.id)
                    if m.pinyin:
                        self._pinyin.setdefault(m.pinyin, PinyinIndex(m.pinyin)).add(word, rule.id)
        for field, words in keywords.items():
            if words:
                automaton = ahocorasick.Automaton()
                for word, rule_ids in words.items():
                    automaton.add_word(word, (word, tuple(rule_ids)))
                automaton.make_automaton()
                self._automata[field] = automaton
        for index in self._pinyin.values():
            index.finish()
        self.utterance_rules = [r for r in self.rules.values() if r.kind == "utterance"]
        # Only rules with regex, token sequences or proximity need per-rule work on each segment.
        self._structured = [
            _Structured(
                r,
                self._regexes[r.id],
                _any_of(r.match.near.a) if r.match.near else None,
                _any_of(r.match.near.b) if r.match.near else None,
                VALIDATORS.get(r.match.validate_as or ""),
            )
            for r in self.utterance_rules
            if r.match and (r.match.regex or r.match.tokens or r.match.near)
        ]
        self._token_rules = [s for s in self._structured if s.rule.match and (s.rule.match.tokens or s.rule.match.near)]
        self._build_regex_prefilter(prefilter)
        self.omission_rules = [r for r in self.rules.values() if r.kind == "omission"]
        self.call_start_rules = [r for r in self.rules.values() if r.kind == "call_start"]

    def _build_regex_prefilter(self, enabled: bool) -> None:
        """Number every regex and find the literals its matches must contain, per top-level alternative.

        Each alternative is a *gate*: a few literal sets (covers) a match of it hits every one of. One
        automaton per field holds all cover literals. A segment's hits give the set of literals present;
        a gate opens if its first cover is hit (looked up by literal) and every other cover too (set
        intersections, in C); a regex runs if one of its gates opens.
        """
        self._regex_table: list[tuple[_Structured, re.Pattern[str]]] = []
        self._ungated: set[int] = set()
        self._gate_regex: list[int] = []  # gate -> regex number
        self._gate_others: list[tuple[frozenset[str], ...]] = []  # gate -> covers after the first
        first: dict[str, dict[str, set[int]]] = {"text": {}, "digits": {}}
        literals: dict[str, set[str]] = {"text": set(), "digits": set()}
        for st in self._structured:
            assert st.rule.match is not None
            field = st.rule.match.field
            for regex in st.regexes:
                g = len(self._regex_table)
                self._regex_table.append((st, regex))
                gates = branch_covers(regex.pattern, re.IGNORECASE) if enabled else None
                if gates is None:
                    self._ungated.add(g)
                    continue
                for covers in gates:
                    gate = len(self._gate_regex)
                    self._gate_regex.append(g)
                    self._gate_others.append(tuple(covers[1:]))
                    for word in covers[0]:
                        first[field].setdefault(word, set()).add(gate)
                    for cover in covers:
                        literals[field] |= cover
        self._first_cover = {field: {w: frozenset(ids) for w, ids in table.items()} for field, table in first.items()}
        self._triggers: dict[str, ahocorasick.Automaton] = {}
        for field, words in literals.items():
            if words:
                automaton = ahocorasick.Automaton()
                for word in words:
                    automaton.add_word(word, word)
                automaton.make_automaton()
                self._triggers[field] = automaton

    def _enabled_regexes(self, text: NormalisedText) -> set[int]:
        enabled: set[int] = set()
        for field, automaton in self._triggers.items():
            haystack = (text.text if field == "text" else text.digits).lower()
            present = {word for _end, word in automaton.iter(haystack)}
            if not present:
                continue
            first = self._first_cover[field]
            gates: set[int] = set()
            for word in present:
                if (ids := first.get(word)) is not None:
                    gates |= ids
            others = self._gate_others
            enabled.update(
                self._gate_regex[gate] for gate in gates if all(not present.isdisjoint(cover) for cover in others[gate])
            )
        return enabled

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
            if any(guard.lower() in lowered_text for guard in m.unless):
                return
            hits[rule_id] = (matched, span)

        for field, automaton in self._automata.items():
            haystack = text.text if field == "text" else text.digits
            lowered = haystack.lower() if len(haystack.lower()) == len(haystack) else haystack
            for end, (_word, rule_ids) in automaton.iter(lowered):
                span = (end - len(_word) + 1, end + 1)
                if _word_bounded(haystack, span):
                    for rule_id in rule_ids:
                        offer(rule_id, haystack[span[0] : span[1]], span, haystack)
        for index in self._pinyin.values():
            for _keyword, rule_ids, span in index.iter(text.text):
                for rule_id in rule_ids:
                    offer(rule_id, text.text[span[0] : span[1]], span, text.text)
        has_digits = _DIGIT.search(text.digits) is not None
        # Regexes: only those whose required words occur in the segment, plus the few that need none.
        for g in sorted(self._ungated | self._enabled_regexes(text)):
            st, regex = self._regex_table[g]
            m = st.rule.match
            assert m is not None
            if st.rule.id in hits or (m.field == "digits" and not has_digits):
                continue  # most speech has no numbers: the PII regexes need not run
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
