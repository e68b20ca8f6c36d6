"""The analysis chain after ASR: the stage contract, and each stage on its own through ``run_stage``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from compliance_monitor.analysis.call_start import CallStartStage
from compliance_monitor.analysis.chain import Chain, Stage
from compliance_monitor.analysis.frames import (
    Candidate,
    Confirmed,
    Frame,
    Heard,
    RulesChecked,
    Segment,
    Unsaid,
    Withdrawn,
)
from compliance_monitor.analysis.model import ModelStage
from compliance_monitor.analysis.normalise import NormaliseStage
from compliance_monitor.analysis.omissions import OmissionStage
from compliance_monitor.analysis.rules import RuleStage
from compliance_monitor.detect.calls import OmissionTracker
from compliance_monitor.detect.engine import RuleSet
from compliance_monitor.messages import Finding, NormalisedText, Severity, Speaker, Transcript
from compliance_monitor.policy.engine import PolicyEngine
from compliance_monitor.text.normalise import normalise
from compliance_monitor.text.tokenise import Tokenizer
from tests.conftest import make_settings
from tests.fakes import run_stage

pytestmark = pytest.mark.unit

THREAT = "你再不还我们就派人去你家"  # threat.visit_home_or_work, high


class Echo(Stage):
    """Yields each int frame twice, tagged with its name; holds one frame until flush."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        for i in range(2):
            yield f"{frame}>{self.name}{i}"  # type: ignore[misc]

    async def flush(self) -> AsyncIterator[Frame]:
        yield f"flush-{self.name}"  # type: ignore[misc]


async def test_the_chain_is_depth_first_and_flushes_through_the_later_stages_only() -> None:
    out: list[object] = []

    async def sink(frame: Frame) -> None:
        out.append(frame)

    chain = Chain([Echo("a"), Echo("b")], sink=sink)
    await chain.push("x")  # type: ignore[arg-type]
    assert out == ["x>a0>b0", "x>a0>b1", "x>a1>b0", "x>a1>b1"]  # all of a0's consequences before a1
    out.clear()
    await chain.end_input()
    assert out == ["flush-a>b0", "flush-a>b1", "flush-b"]


async def test_a_stage_passes_on_what_it_does_not_handle(tmp_path: Path) -> None:
    held = Candidate(_finding("x", 1), None)
    assert await run_stage(CallStartStage(), [held]) == [held]
    assert await run_stage(ModelStage(None, PolicyEngine(make_settings(tmp_path).policy), 2.0), [held]) == [held]


def said(no: int, text: str, final: bool) -> Transcript:
    return Transcript("c1", Speaker.AGENT, no, text, 2.0 * no, 2.0 * no + 1.5, final)


def segment(tr: Transcript, tokenizer: Tokenizer) -> Segment:
    return Segment(tr, normalise(tr.text, tokenizer), 1 if tr.final else None, ())


async def _ignore(event: object) -> None:
    pass


def _finding(rule: str, segment_no: int, category: str = "threat") -> Finding:
    return Finding("c1", Speaker.AGENT, segment_no, rule, category, Severity.HIGH, "x", (0, 1), 0.0, 1.0, "")


async def test_normalise_stage_turns_a_transcript_into_heard_text(tokenizer: Tokenizer) -> None:
    (heard,) = await run_stage(NormaliseStage(tokenizer), [said(1, "您好，我是催收專員", True)])
    assert isinstance(heard, Heard) and heard.text.text.startswith("您好") and "专员" in heard.text.text


async def test_call_start_findings_wait_for_the_first_final_that_says_something(tokenizer: Tokenizer) -> None:
    stage = CallStartStage()
    night = _finding("calling_hours", 0, "calling_hours")
    stage.hold([night])
    partial = Heard(said(1, "您好", False), normalise("您好", tokenizer))
    empty = Heard(said(1, "", True), normalise("", tokenizer))
    final = Heard(said(2, "您好", True), normalise("您好", tokenizer))
    out = await run_stage(stage, [partial, empty, final, final])
    assert out == [partial, empty, Candidate(night, None), final, final]  # released once, just before the speech


@pytest.fixture
def rule_stage(tmp_path: Path) -> RuleStage:
    settings = make_settings(tmp_path, rules={"packs": ["cn_collection"]})
    return RuleStage(RuleSet(settings.rules), PolicyEngine(settings.policy), Severity.HIGH.rank)


async def test_the_final_confirms_or_withdraws_what_a_partial_raised(
    rule_stage: RuleStage, tokenizer: Tokenizer
) -> None:
    heard_wrong = await run_stage(rule_stage, [segment(said(3, THREAT, False), tokenizer)])
    provisional = heard_wrong[0]
    assert isinstance(provisional, Candidate) and provisional.provisional
    revised = await run_stage(rule_stage, [segment(said(3, "您再不还我们就安排同事给您回电", True), tokenizer)])
    assert [type(f) for f in revised] == [Withdrawn, RulesChecked]
    assert isinstance(revised[0], Withdrawn) and revised[0].finding == provisional.finding

    await run_stage(rule_stage, [segment(said(4, THREAT, False), tokenizer)])
    confirmed = await run_stage(rule_stage, [segment(said(4, THREAT, True), tokenizer)])
    assert [type(f) for f in confirmed] == [Confirmed, RulesChecked]
    assert isinstance(confirmed[1], RulesChecked) and "threat" in confirmed[1].named

    await run_stage(rule_stage, [segment(said(5, THREAT, False), tokenizer)])
    unsaid = await run_stage(rule_stage, [Unsaid(said(5, "", True))])
    assert [type(f) for f in unsaid] == [Withdrawn]


async def test_a_final_raises_each_rule_finding_once(rule_stage: RuleStage, tokenizer: Tokenizer) -> None:
    first = await run_stage(rule_stage, [segment(said(6, THREAT, True), tokenizer)])
    assert any(isinstance(f, Candidate) and not f.provisional for f in first)
    again = await run_stage(rule_stage, [segment(said(6, THREAT, True), tokenizer)])
    assert [type(f) for f in again] == [RulesChecked]  # the policy has seen this (rule, speaker, segment)


class FixedModel:
    """A classifier that finds the same two categories in anything."""

    context = 1

    async def detect(self, tr: Transcript, text: NormalisedText, context: object = ()) -> list[Finding]:
        return [_finding("model.threat", tr.segment_no), _finding("model.abuse", tr.segment_no, "abuse")]


async def test_the_model_adds_only_categories_the_rules_did_not_name(tmp_path: Path, tokenizer: Tokenizer) -> None:
    policy = PolicyEngine(make_settings(tmp_path).policy)
    stage = ModelStage(FixedModel(), policy, 2.0)  # type: ignore[arg-type]
    seg = segment(said(7, "随便说说", True), tokenizer)
    out = await run_stage(stage, [RulesChecked(seg, frozenset({"threat"}))])
    assert [f.finding.category for f in out if isinstance(f, Candidate)] == ["abuse"]
    assert out[-1] == seg


async def test_omissions_are_due_at_the_end_only_of_a_call_that_carried_speech(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    settings = make_settings(tmp_path, rules={"packs": ["cn_collection"]})
    rules = RuleSet(settings.rules).engine.omission_rules
    assert rules, "the pack has mandatory disclosures"
    silent = await run_stage(OmissionStage("c1", "a1", OmissionTracker("c1", rules), _ignore), [], flush=True)
    assert silent == []
    hello = segment(said(1, "喂你好", True), tokenizer)
    spoke = await run_stage(OmissionStage("c1", "a1", OmissionTracker("c1", rules), _ignore), [hello], flush=True)
    assert spoke and all(isinstance(f, Candidate) for f in spoke)
    assert {f.finding.rule_id for f in spoke if isinstance(f, Candidate)} == {r.id for r in rules}
