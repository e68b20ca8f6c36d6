"""The rule matcher: every keyword of every loaded pack in one Aho-Corasick automaton, plus regexes.

Matching is over ``NormalisedText.text`` (simplified, half-width) or, for PII rules, ``.digits``
(Chinese numerals turned into digits). A rule fires at most once per segment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import ahocorasick

from compliance_monitor.detect.rulepack import Rule, RulePack, load_pack
from compliance_monitor.messages import Finding, NormalisedText, Speaker, Transcript


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: Rule
    regexes: tuple[re.Pattern[str], ...]
    unless: tuple[str, ...]


class RuleEngine:
    def __init__(self, packs: Iterable[RulePack]) -> None:
        self.packs = list(packs)
        self._rules: dict[str, _CompiledRule] = {}
        self._automaton: dict[str, ahocorasick.Automaton] = {}  # per field
        keywords: dict[str, dict[str, list[str]]] = {"text": {}, "digits": {}}
        for pack in self.packs:
            for rule in pack.rules:
                if not rule.enabled:
                    continue
                if rule.id in self._rules:
                    raise ValueError(f"rule id {rule.id!r} is defined by two packs")
                self._rules[rule.id] = _CompiledRule(
                    rule, tuple(re.compile(p) for p in rule.match.regex), tuple(rule.match.unless)
                )
                for word in rule.match.keywords:
                    keywords[rule.match.field].setdefault(word, []).append(rule.id)
        for field, words in keywords.items():
            if words:
                automaton = ahocorasick.Automaton()
                for word, rule_ids in words.items():
                    automaton.add_word(word, (word, tuple(rule_ids)))
                automaton.make_automaton()
                self._automaton[field] = automaton

    @classmethod
    def from_files(cls, paths: Iterable[Path]) -> RuleEngine:
        return cls(load_pack(p) for p in paths)

    @property
    def rule_count(self) -> int:
        return len(self._rules)

    def rule(self, rule_id: str) -> Rule:
        return self._rules[rule_id].rule

    def match(self, text: NormalisedText, speaker: Speaker) -> list[tuple[Rule, str, tuple[int, int]]]:
        """(rule, matched text, span) for every rule that fires on this text, first match each."""
        hits: dict[str, tuple[str, tuple[int, int]]] = {}
        for field, automaton in self._automaton.items():
            haystack = text.text if field == "text" else text.digits
            for end, (word, rule_ids) in automaton.iter(haystack):
                for rule_id in rule_ids:
                    hits.setdefault(rule_id, (word, (end - len(word) + 1, end + 1)))
        for rule_id, compiled in self._rules.items():
            if rule_id in hits or not compiled.regexes:
                continue
            haystack = text.text if compiled.rule.match.field == "text" else text.digits
            for regex in compiled.regexes:
                if m := regex.search(haystack):
                    hits[rule_id] = (m.group(0), m.span())
                    break
        results = []
        for rule_id, (matched, span) in hits.items():
            compiled = self._rules[rule_id]
            rule = compiled.rule
            if rule.speaker != "both" and rule.speaker != speaker.value:
                continue
            if any(guard in text.text for guard in compiled.unless):
                continue
            results.append((rule, matched, span))
        return results

    def detect(self, transcript: Transcript, text: NormalisedText) -> list[Finding]:
        return [
            Finding(
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
            for rule, matched, span in self.match(text, transcript.speaker)
        ]
