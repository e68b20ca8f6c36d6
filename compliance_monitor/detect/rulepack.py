"""Rule packs as data: the YAML schema, validation with line-numbered errors, and loading.

A pack is a YAML file in ``rules/``; a compliance officer edits it without touching Python.
Validation is strict (unknown fields are errors) because a typo in a rule must not silently turn
it off.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from compliance_monitor.detect.pinyin import PinyinMode
from compliance_monitor.messages import ActionKind, Severity

SpeakerScope = Literal["agent", "customer", "both"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NearSpec(_Strict):
    """A word from ``a`` within ``within`` jieba tokens of a word from ``b``, either order."""

    a: list[str] = Field(min_length=1)
    b: list[str] = Field(min_length=1)
    within: int = Field(8, ge=1, le=50)


class MatchSpec(_Strict):
    keywords: list[str] = Field(default_factory=list, description="literal phrases (Aho-Corasick)")
    regex: list[str] = Field(default_factory=list, description="regular expressions")
    tokens: list[list[str]] = Field(default_factory=list, description="consecutive jieba token sequences")
    near: NearSpec | None = None
    field: Literal["text", "digits"] = Field(
        "text", description="'digits' matches against the text with Chinese numerals as digits"
    )
    unless: list[str] = Field(
        default_factory=list, description="phrases that, present in the same segment, cancel the match"
    )
    negation: bool = Field(True, description="ignore a match right after 不会/没有/不是/别… in the same clause")
    pinyin: PinyinMode | None = Field(None, description="also match keywords that sound alike (ASR errors)")
    validate_as: Literal["id_card", "bank_card", "mobile"] | None = Field(
        None, alias="validate", description="a regex match must also pass this check-digit validator"
    )
    context: int = Field(1, ge=1, le=5, description="segments of the same speaker to match across")

    @field_validator("keywords", "unless")
    @classmethod
    def _no_blank_phrases(cls, phrases: list[str]) -> list[str]:
        # '' would match everywhere: a keyword firing on every segment, an `unless` disabling the rule.
        if any(not p.strip() for p in phrases):
            raise ValueError("phrases must not be empty or blank")
        return phrases

    @field_validator("tokens")
    @classmethod
    def _token_sequences(cls, sequences: list[list[str]]) -> list[list[str]]:
        if any(not seq or any(not t.strip() for t in seq) for seq in sequences):
            raise ValueError("token sequences must be non-empty lists of non-blank tokens")
        return sequences

    @field_validator("regex")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"bad regex {pattern!r}: {exc}") from exc
            if compiled.search(""):
                raise ValueError(f"regex {pattern!r} matches the empty string, so it would fire on every segment")
        return patterns

    @model_validator(mode="after")
    def _not_empty(self) -> MatchSpec:
        if not (self.keywords or self.regex or self.tokens or self.near):
            raise ValueError("a rule needs at least one of keywords, regex, tokens or near")
        if self.validate_as and not self.regex:
            raise ValueError("'validate' checks regex matches: add a regex")
        if self.pinyin and not self.keywords:
            raise ValueError("'pinyin' applies to keywords: add keywords")
        return self


class RequiredItem(_Strict):
    """Something the collector must say (omission rules): any keyword or regex satisfies it."""

    name: str
    keywords: list[str] = Field(default_factory=list)
    regex: list[str] = Field(default_factory=list)
    pinyin: PinyinMode | None = Field(None, description="keywords also count when they sound alike (ASR errors)")

    @model_validator(mode="after")
    def _not_empty(self) -> RequiredItem:
        if not (self.keywords or self.regex):
            raise ValueError(f"required item {self.name!r} needs keywords or regex")
        for pattern in self.regex:
            re.compile(pattern)
        return self


class CallingHours(_Strict):
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")


class Explanation(_Strict):
    collector: str
    supervisor: str


class Examples(_Strict):
    positive: list[str] = Field(default_factory=list)
    negative: list[str] = Field(default_factory=list)


class Rule(_Strict):
    """One rule. ``kind`` says when it is checked:

    - ``utterance`` (default): on every final transcript of the speaker in scope, by ``match``;
    - ``omission``: fires once if the ``required`` items were not all said within ``within_s`` of the call;
    - ``call_start``: when a call starts, against ``calling_hours`` (debtor's local time) and
      ``max_calls_per_day`` (calls to the same debtor since local midnight, this one included).
    """

    id: str = Field(pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")
    category: str = Field(pattern=r"^[a-z_]+$")
    severity: Severity
    kind: Literal["utterance", "omission", "call_start"] = "utterance"
    speaker: SpeakerScope = "agent"
    match: MatchSpec | None = None
    required: list[RequiredItem] = Field(default_factory=list)
    within_s: float | None = Field(None, gt=0)
    calling_hours: CallingHours | None = None
    max_calls_per_day: int | None = Field(None, ge=1)
    explanation: Explanation
    action: ActionKind | None = None
    suggestion: str = Field(
        "",
        description="what the collector could say instead: a compliant phrase shown with the warning (every rule a "
        "collector can break has one)",
    )
    enabled: bool = True
    examples: Examples = Field(default_factory=Examples)
    source: str = Field(
        "", description="the document and clause the rule enforces (标准/指引 名称 + 条款), shown to supervisors"
    )
    regimes: list[str] = Field(
        default_factory=list, description="the pack's regimes this rule belongs to; empty: every regime"
    )

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> Rule:
        if self.kind == "utterance" and self.match is None:
            raise ValueError("an utterance rule needs 'match'")
        if self.kind == "omission" and (not self.required or self.within_s is None):
            raise ValueError("an omission rule needs 'required' and 'within_s'")
        if self.kind == "call_start" and not (self.calling_hours or self.max_calls_per_day):
            raise ValueError("a call_start rule needs 'calling_hours' or 'max_calls_per_day'")
        if self.kind != "utterance" and self.match is not None:
            raise ValueError(f"'match' is for utterance rules, not {self.kind}")
        return self


class Regime(_Strict):
    """A body of rules a pack can be run under (e.g. internet consumer credit vs bank consumer loans)."""

    title: str
    source: str = Field(description="the governing document(s)")


class RulePack(_Strict):
    pack: str = Field(pattern=r"^[a-z0-9_]+$")
    version: int = Field(ge=1)
    language: str
    description: str = ""
    regimes: dict[str, Regime] = Field(
        default_factory=dict, description="regimes a deployment may select (``rules.regime`` in the config)"
    )
    regime: str | None = Field(None, description="the regime in force when the config selects none")
    rules: list[Rule]

    @model_validator(mode="after")
    def _unique_ids(self) -> RulePack:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"duplicate rule id {rule.id!r}")
            seen.add(rule.id)
        return self

    @model_validator(mode="after")
    def _known_regimes(self) -> RulePack:
        if self.regimes and self.regime is None:
            raise ValueError("a pack with 'regimes' names its default 'regime'")
        if self.regime is not None and self.regime not in self.regimes:
            raise ValueError(f"regime {self.regime!r} is not one of the pack's regimes {sorted(self.regimes)}")
        for rule in self.rules:
            unknown = sorted(set(rule.regimes) - set(self.regimes))
            if unknown:
                known = sorted(self.regimes)
                raise ValueError(f"rule {rule.id!r}: unknown regime(s) {unknown}; the pack defines {known}")
        return self

    def in_force(self, regime: str | None = None) -> list[Rule]:
        """The enabled rules under ``regime`` (the pack's default when None or not one of this pack's regimes)."""
        chosen = regime if regime in self.regimes else self.regime
        return [r for r in self.rules if r.enabled and (not r.regimes or chosen in r.regimes)]


class RulePackError(ValueError):
    """A pack that failed to load; ``errors`` are 'file:line: message' strings."""

    def __init__(self, path: Path, errors: list[str]) -> None:
        self.path = path
        self.errors = errors
        super().__init__(f"invalid rule pack {path}:\n  " + "\n  ".join(errors))


def load_pack(path: Path) -> RulePack:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulePackError(path, [f"{path}: cannot read: {exc}"]) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"{mark.line + 1}" if mark else "?"
        raise RulePackError(path, [f"{path}:{line}: YAML syntax error: {exc}"]) from exc
    except RecursionError:  # PyYAML recurses per nesting level: '[[[[…' is an error, not a crash (found by fuzzing)
        raise RulePackError(path, [f"{path}: YAML nested too deeply"]) from None
    if not isinstance(data, dict):
        raise RulePackError(path, [f"{path}:1: a rule pack must be a mapping with 'pack' and 'rules'"])
    try:
        return RulePack.model_validate(data)
    except ValidationError as exc:
        errors = [
            f"{path}:{_line_of(node, err['loc'])}: {'.'.join(map(str, err['loc'])) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise RulePackError(path, errors) from exc


def _line_of(node: Any, loc: tuple[Any, ...]) -> int:
    """Walk the YAML node tree along a pydantic error location to report the nearest line."""
    line = node.start_mark.line + 1 if node is not None else 1
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == key), None)
            if child is None:
                key_node = next((k for k, _ in node.value if k.value == key), None)
                return key_node.start_mark.line + 1 if key_node else line
            node = child
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line
