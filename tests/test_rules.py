"""Unit tests for rule packs and the rule engine (compliance_monitor.detect.rulepack / .rules).

Sentences go through the real normaliser (OpenCC, numerals → digits) and the real jieba tokenizer
with the domain dictionary, exactly as ASR output does in production.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from compliance_monitor.detect.rulepack import RulePack, RulePackError, load_pack
from compliance_monitor.detect.rules import RuleEngine
from compliance_monitor.messages import (
    CALL_CATEGORIES,
    UTTERANCE_CATEGORIES,
    NormalisedText,
    Severity,
    Speaker,
    Transcript,
)
from compliance_monitor.text.normalise import normalise
from compliance_monitor.text.tokenise import Tokenizer
from tests.conftest import fired

pytestmark = pytest.mark.unit

RULES = Path(__file__).parents[1] / "rules"
PACK_FILE = RULES / "cn_collection.yaml"

CATEGORIES = UTTERANCE_CATEGORIES
CN_DIGITS = "零幺二三四五六七八九"  # 幺 for 1, as digits are read out on the phone


@pytest.fixture(scope="module")
def pack() -> RulePack:
    return load_pack(PACK_FILE)


@pytest.fixture(scope="module")
def engine(pack: RulePack) -> RuleEngine:
    return RuleEngine([pack])


def spoken(digits: str) -> str:
    """'110105' → '幺幺零幺零五': a number read digit by digit."""
    return "".join(CN_DIGITS[int(d)] if d.isdigit() else d for d in digits)


def with_id_check_digit(first17: str) -> str:
    """GB 11643-1999: weighted sum mod 11 → check character."""
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    total = sum(int(d) * w for d, w in zip(first17, weights, strict=True))
    return first17 + "10X98765432"[total % 11]


# --------------------------------------------------------------------------- the real pack


# Sentences written for these tests (not copied from the pack), rule id → positives.
POSITIVES: dict[str, list[str]] = {
    "threat.visit_home_or_work": ["你再不还钱我们就派人上门找你", "明天我就去你单位找你领导谈谈"],
    "threat.consequences": ["今天不还款后果自负", "你不接电话是吧，咱们走着瞧"],
    "threat.violence": ["信不信我找人收拾你", "再拖下去我弄死你"],
    "threat.family": ["小心你的家人出门被车撞", "你全家都别想过好日子"],
    "threat.veiled": ["这钱不还，以后找你的就是别人了，他们可没我这么客气", "你晚上一个人回家小心点"],
    "threat.public_shaming": ["过两天去你们公司门口拉横幅", "你的欠条我挂到你们村群里去"],
    "abuse.insult": ["你就是个老赖", "你这个废物，真不要脸"],
    "abuse.discrimination": ["你们这些乡下人就是不讲信用", "穷鬼还借什么钱"],
    "impersonation.authority": ["我是法院的工作人员，现在通知你", "我们是公安局经侦大队的"],
    "impersonation.false_legal_claim": ["法院已经立案了，马上拘留你", "我们已经起诉你了，等着收传票吧"],
    "disclosure.tell_family_or_work": ["我会告诉你家人你欠钱的事", "我们会打你通讯录里的每一个人"],
    "disclosure.third_party_call": ["你儿子欠了我们三万块，你知道吗", "你老婆欠的钱你得帮她还钱"],
    "disclosure.public_exposure": ["你不还我就把欠条晒到朋友圈", "到时候整个小区的街坊邻居都知道你欠钱"],
    "privacy.id_number": [],  # built from a computed ID number below
    "privacy.id_number_x": ["你身份证号三二零幺零六 幺九八七零九二零 零零三叉，没错吧"],
    "privacy.bank_card": ["您尾号的卡号是六二二二零二幺二三四五六七八九零幺二"],  # 18 digits, Luhn-valid
    "privacy.mobile_number": ["他的手机是幺三八零零幺三八零零零", "你打这个号码13912345678"],
    # ASR dropped a digit: no check passes, the label says what the number is
    "privacy.labelled_number": [
        "您身份证号码是四四零三零四一九九二零八一五三三",
        "他银行卡号六二一七零零零零三四五六七八九七幺",
    ],
    "privacy.labelled_mobile": ["您留的手机号是幺八六幺二三四五六七八九"],  # 12 digits heard
    "customer.abuse": ["你们这帮吸血鬼", "滚蛋，别再打来了"],
    # GB/T 45251—2025 / 银行业协会 2026: false blacklists, debts called crimes, sanctions and amounts "by law"
    "misrepresentation.false_consequence": [
        "你已经被列入行业黑名单了",
        "拖欠贷款本来就算诈骗",
        "你不还的话你儿子政审肯定过不了",
        "依照法律规定你现在欠的是两万四",
        "你再不还就等着坐牢吧",
    ],
    "induced_borrowing.borrow_to_repay": [
        "你到别的平台借一点，把我们这边还了",
        "微粒贷里借出来先还上",
        "信用卡套现一下就够了",
        "借新还旧嘛，先把这关过了",
    ],
    "improper_payment.fee_or_personal_account": [
        "你把钱转到我私人账户",
        "扫我这个收款码付",
        "交五百块钱我就帮你撤诉",
        "还要加收一笔上门费",
        "钱打给我就行",
    ],
}
CUSTOMER_RULES = {"customer.abuse"}

# Lawful, firm collection language: nothing may fire on it.
HARD_NEGATIVES = [
    "逾期会影响征信",
    "我们可能会依法通过诉讼途径解决",
    "我们不会上门",
    "我们不会向您的家人透露",
    "请您核对身份证后四位",
    "您的还款日是每月十五号，最低还款是三百二十元",
    "如果协商不成，我们有权依法起诉",
    "我们不会拘留您，这是民事纠纷",
    "我们不是法院，是受银行委托的催收机构",
    "您这个月逾期了十八天，请尽快还款",
    "我们不会去你家，也不会派人",
    "身份证后四位是零六二九",
    # the standard's categories: lawful mentions of credit reporting, courts, official channels, restructuring
    "逾期记录会报送征信，结清后保留五年",
    "如果法院判决后仍不履行，依法可能被列入失信被执行人名单",
    "欠款是民事纠纷，不会坐牢",
    "请通过APP或对公账户还款，不要向任何个人转账",
    "我们不收取任何手续费，分期申请是免费的",
    "您可以在APP里申请分期或者延期",
    "不建议您借网贷来还，有困难我们一起想办法",
    "您信用卡的最低还款额是三百元",
    "罚息按合同约定计算，不会超过法定上限",
]

# Reassurances a collector is trained to give; each contains a listed keyword inside a negation.
NEGATED_REASSURANCES = [
    # 到你单位 fires; `unless` only lists 不会到您单位 (您, not 你).
    pytest.param("您放心，我们不会到你单位去", id="wont-come-to-your-work"),
    # 去你单位 fires; `unless` has no 不会去你单位.
    pytest.param("我们不会去你单位闹的", id="wont-go-to-your-work"),
    # regex (拘留|逮捕|坐牢) fires; `unless` has 不会拘留 but not 不会坐牢.
    pytest.param("逾期是民事纠纷，不会坐牢的", id="wont-go-to-jail"),
]


def test_pack_loads(pack: RulePack, engine: RuleEngine) -> None:
    assert pack.pack == "cn_collection"
    assert pack.version >= 1
    assert {r.category for r in pack.rules} == {*CATEGORIES, *CALL_CATEGORIES}
    assert engine.rule_count == len(pack.in_force())


def test_every_rule_has_explicit_positives(pack: RulePack) -> None:
    # A rule added to the pack must get sentences here too.
    assert {r.id for r in pack.rules if r.kind == "utterance"} == set(POSITIVES)


@pytest.mark.parametrize(("rule_id", "sentence"), [(rid, s) for rid, sentences in POSITIVES.items() for s in sentences])
def test_positive_sentence_fires(engine: RuleEngine, tokenizer: Tokenizer, rule_id: str, sentence: str) -> None:
    speaker = Speaker.CUSTOMER if rule_id in CUSTOMER_RULES else Speaker.AGENT
    assert rule_id in fired(engine, tokenizer, sentence, speaker)


@pytest.mark.parametrize("category", CATEGORIES)
def test_each_category_has_two_positives(pack: RulePack, category: str) -> None:
    ids = {r.id for r in pack.rules if r.category == category}
    assert len([s for rid in ids for s in POSITIVES[rid]]) >= 2


@pytest.mark.parametrize("sentence", HARD_NEGATIVES)
@pytest.mark.parametrize("speaker", list(Speaker))
def test_lawful_language_does_not_fire(
    engine: RuleEngine, tokenizer: Tokenizer, sentence: str, speaker: Speaker
) -> None:
    assert fired(engine, tokenizer, sentence, speaker) == set()


@pytest.mark.parametrize("sentence", NEGATED_REASSURANCES)
def test_negated_reassurance_does_not_fire(engine: RuleEngine, tokenizer: Tokenizer, sentence: str) -> None:
    assert fired(engine, tokenizer, sentence) == set()


@pytest.mark.parametrize(
    ("sentence", "rule_id"),
    [
        ("你已經上了黑名單", "misrepresentation.false_consequence"),  # traditional characters
        ("你这个已经进黑明单了", "misrepresentation.false_consequence"),  # 黑名单 heard as 黑明单
        ("去别家网待借一下先还上", "induced_borrowing.borrow_to_repay"),  # 网贷 heard as 网待
        ("先交个手须费", "improper_payment.fee_or_personal_account"),  # 手续费 heard as 手须费
    ],
)
def test_standard_categories_survive_asr_spellings(
    engine: RuleEngine, tokenizer: Tokenizer, sentence: str, rule_id: str
) -> None:
    assert rule_id in fired(engine, tokenizer, sentence)


def test_the_standards_categories_are_agent_only(engine: RuleEngine, tokenizer: Tokenizer) -> None:
    # a debtor repeating what they were told is no violation of theirs
    for sentence in ("你们的人说我要坐牢", "我都借网贷来还你们了", "你们同事让我转到他私人账户"):
        assert fired(engine, tokenizer, sentence, Speaker.CUSTOMER) == set()


def test_every_rule_cites_its_source(pack: RulePack) -> None:
    for rule in pack.rules:
        assert rule.source.strip(), f"{rule.id} has no source"
    privacy = [r for r in pack.rules if r.category == "privacy_leak"]
    assert privacy and all("个人信息保护法" in r.source for r in privacy)
    standard = [r for r in pack.rules if r.category in ("misrepresentation", "induced_borrowing", "improper_payment")]
    assert {r.category for r in standard} == {"misrepresentation", "induced_borrowing", "improper_payment"}
    assert all("GB/T 45251" in r.source and "银行业协会" in r.source for r in standard)


def test_findings_carry_the_rules_source(engine: RuleEngine, tokenizer: Tokenizer) -> None:
    t = Transcript("c1", Speaker.AGENT, 3, "你把钱转到我私人账户", 1.0, 2.0, True)
    (finding,) = engine.detect(t, normalise(t.text, tokenizer))
    assert finding.rule_id == "improper_payment.fee_or_personal_account"
    assert finding.rule_source == engine.rule(finding.rule_id).source and "GB/T 45251" in finding.rule_source


def test_regimes_select_the_calling_hours_rule_and_cite_their_document(pack: RulePack) -> None:
    assert pack.regime == "internet_consumer_credit"
    assert set(pack.regimes) == {"internet_consumer_credit", "bank_consumer_loan"}
    for regime, document in (("internet_consumer_credit", "GB/T 45251"), ("bank_consumer_loan", "银行业协会")):
        engine = RuleEngine([pack], regime=regime)
        (hours,) = [r for r in engine.call_start_rules if r.calling_hours]
        assert (hours.calling_hours.start, hours.calling_hours.end) == ("08:00", "22:00")
        assert document in hours.source and document in pack.regimes[regime].source
        (freq,) = [r for r in engine.call_start_rules if r.max_calls_per_day]
        assert freq.max_calls_per_day == 3
        assert {r.category for r in engine.utterance_rules} == set(CATEGORIES)  # conduct rules hold under both
    # an unknown regime (another pack's) leaves this pack on its default
    assert RuleEngine([pack], regime="fdcpa").rule("hours.outside_window").regimes == ["internet_consumer_credit"]


def test_traditional_and_spaced_asr_output_still_fires(engine: RuleEngine, tokenizer: Tokenizer) -> None:
    assert "threat.consequences" in fired(engine, tokenizer, "你 不 還錢 後果 自負")
    assert "abuse.insult" in fired(engine, tokenizer, "你這個老賴")


# --------------------------------------------------------------------------- unless and speaker scope


def test_unless_guard_cancels_the_match(engine: RuleEngine, tokenizer: Tokenizer) -> None:
    assert "threat.visit_home_or_work" in fired(engine, tokenizer, "明天派人上门")
    assert fired(engine, tokenizer, "我们不会派人上门") == set()
    assert "impersonation.false_legal_claim" in fired(engine, tokenizer, "马上拘留你")
    assert fired(engine, tokenizer, "我们不会拘留你") == set()


def test_agent_rule_ignores_customer_speech(engine: RuleEngine, tokenizer: Tokenizer) -> None:
    sentence = "信不信我找人收拾你"
    assert "threat.violence" in fired(engine, tokenizer, sentence, Speaker.AGENT)
    assert fired(engine, tokenizer, sentence, Speaker.CUSTOMER) == set()


def test_customer_abuse_only_on_customer(engine: RuleEngine, tokenizer: Tokenizer) -> None:
    assert fired(engine, tokenizer, "你们这帮吸血鬼", Speaker.CUSTOMER) == {"customer.abuse"}
    assert fired(engine, tokenizer, "你们这帮吸血鬼", Speaker.AGENT) == set()
    # The same word is agent abuse when the collector says it, customer abuse when the debtor does.
    assert fired(engine, tokenizer, "你是骗子吧", Speaker.AGENT) == {"abuse.insult"}
    assert fired(engine, tokenizer, "你是骗子吧", Speaker.CUSTOMER) == {"customer.abuse"}


# --------------------------------------------------------------------------- PII via the digits field


@pytest.mark.parametrize("first17", ["11010519850307123", "31011519900101002", "22010219781231456"])
def test_spoken_id_number_fires(engine: RuleEngine, tokenizer: Tokenizer, first17: str) -> None:
    id_number = with_id_check_digit(first17)
    assert len(id_number) == 18
    text = normalise(f"您的身份证号码是{spoken(id_number)}对吧", tokenizer)
    assert id_number in text.digits  # the digits field carries the number
    assert id_number not in text.text
    hits = {m.rule.id: m.matched_text for m in engine.match(text, Speaker.AGENT)}
    assert hits.get("privacy.id_number") == id_number
    assert "privacy.mobile_number" not in hits  # 11 digits inside an ID must not count as a phone


def test_id_check_digit_helper() -> None:
    assert with_id_check_digit("11010519491231002") == "11010519491231002X"  # the GB 11643 worked example


def test_spoken_bank_card_fires(engine: RuleEngine, tokenizer: Tokenizer) -> None:
    card = "6222021234567894"  # Luhn check digit 4
    text = normalise(f"卡号{spoken(card)}", tokenizer)
    hits = {m.rule.id: m.matched_text for m in engine.match(text, Speaker.AGENT)}
    assert hits.get("privacy.bank_card") == card


def test_number_failing_luhn_is_not_a_bank_card(engine: RuleEngine, tokenizer: Tokenizer) -> None:
    text = normalise(f"订单号{spoken('6222021234567890')}", tokenizer)  # same digits, wrong check digit
    assert "privacy.bank_card" not in {m.rule.id for m in engine.match(text, Speaker.AGENT)}


def test_labelled_number_fires_when_asr_drops_a_digit(engine: RuleEngine, tokenizer: Tokenizer) -> None:
    id_number = with_id_check_digit("32010619870923213")
    garbled = id_number[:12] + id_number[13:]  # one digit lost in recognition: no valid check digit
    hits = fired(engine, tokenizer, f"你的身份证号是{spoken(garbled)}吧")
    assert "privacy.labelled_number" in hits
    assert "privacy.id_number" not in hits
    # Without its label the same digits are just a number; partial readings stay quiet.
    assert "privacy.labelled_number" not in fired(engine, tokenizer, f"订单号{spoken(garbled)}")
    assert "privacy.labelled_number" not in fired(engine, tokenizer, "您身份证号后四位是二幺三八吗")


def test_spoken_mobile_number_fires(engine: RuleEngine, tokenizer: Tokenizer) -> None:
    text = normalise("你记一下幺八六 幺二三四 五六七八", tokenizer)  # read in groups, spaces from ASR
    hits = {m.rule.id: m.matched_text for m in engine.match(text, Speaker.AGENT)}
    assert hits.get("privacy.mobile_number") == "18612345678"
    assert engine.rule("privacy.mobile_number").severity is Severity.WARN


@pytest.mark.parametrize(
    "sentence",
    [
        "身份证后四位是零六二九",
        "手机尾号幺三八零",
        "您欠款一万二千三百元",
        "请拨打幺零零八六",
        "座机号码是零二幺六二三四五六七八",  # 11 digits but starts with 0, not a mobile
        "幺二三四五六七八九零幺二",  # 12 digits: not a mobile either
    ],
)
def test_partial_numbers_do_not_fire(engine: RuleEngine, tokenizer: Tokenizer, sentence: str) -> None:
    assert fired(engine, tokenizer, sentence) == set()


# --------------------------------------------------------------------------- the pack's own examples


def example_failures(engine: RuleEngine, pack: RulePack, tokenizer: Tokenizer) -> list[str]:
    failures = []
    for rule in pack.rules:
        speakers = [Speaker.CUSTOMER] if rule.speaker == "customer" else [Speaker.AGENT]
        for sentence in rule.examples.positive:
            if not any(rule.id in fired(engine, tokenizer, sentence, sp) for sp in speakers):
                failures.append(f"{rule.id}: positive example did not fire: {sentence}")
        for sentence in rule.examples.negative:
            if any(rule.id in fired(engine, tokenizer, sentence, sp) for sp in Speaker):
                failures.append(f"{rule.id}: negative example fired: {sentence}")
    return failures


def test_pack_examples_hold(engine: RuleEngine, pack: RulePack, tokenizer: Tokenizer) -> None:
    assert example_failures(engine, pack, tokenizer) == []


def test_example_checker_catches_a_wrong_example(tmp_path: Path, tokenizer: Tokenizer) -> None:
    # The real pack has no examples yet; prove the checker above would catch a broken one.
    path = tmp_path / "ex.yaml"
    path.write_text(
        PACK_HEAD
        + rule_yaml(
            "t.visit",
            "keywords: [上门找你]\n      unless: [不会上门]",
            examples="examples:\n      positive: [明天上门找你, 我们不会上门找你]\n      negative: [我们不会上门]",
        ),
        encoding="utf-8",
    )
    pack = load_pack(path)
    failures = example_failures(RuleEngine([pack]), pack, tokenizer)
    assert failures == ["t.visit: positive example did not fire: 我们不会上门找你"]


# --------------------------------------------------------------------------- RuleEngine.detect


def test_detect_builds_findings_with_spans(engine: RuleEngine, tokenizer: Tokenizer) -> None:
    raw = "喂，你好，我跟你说，你不还钱后果自负，你就是个老赖"
    text = normalise(raw, tokenizer)
    tr = Transcript("call-1", Speaker.AGENT, 4, raw, 12.0, 15.5, True)
    findings = {f.rule_id: f for f in engine.detect(tr, text)}
    assert set(findings) == {"threat.consequences", "abuse.insult"}
    for f in findings.values():
        start, end = f.span
        assert text.text[start:end] == f.matched_text
        assert (f.call_id, f.speaker, f.segment_no, f.t0, f.t1) == ("call-1", Speaker.AGENT, 4, 12.0, 15.5)
        assert f.source == "rule"
        rule = engine.rule(f.rule_id)
        assert f.category == rule.category
        assert f.severity is rule.severity
        assert f.explanation == rule.explanation.supervisor
        assert f.collector_explanation == rule.explanation.collector
    assert findings["abuse.insult"].matched_text == "老赖"


def test_detect_regex_span(engine: RuleEngine, tokenizer: Tokenizer) -> None:
    text = normalise("再拖下去我整死他", tokenizer)
    (finding,) = engine.detect(Transcript("c", Speaker.AGENT, 0, "", 0.0, 1.0, True), text)
    assert finding.rule_id == "threat.violence"
    assert text.text[slice(*finding.span)] == finding.matched_text == "整死他"


def test_a_rule_fires_once_per_segment(engine: RuleEngine, tokenizer: Tokenizer) -> None:
    text = normalise("老赖，你就是个老赖，王八蛋", tokenizer)
    findings = engine.detect(Transcript("c", Speaker.AGENT, 0, "", 0.0, 1.0, True), text)
    assert [f.rule_id for f in findings] == ["abuse.insult"]
    assert findings[0].span == (0, 2)  # the first occurrence


def test_nothing_on_empty_text(engine: RuleEngine) -> None:
    assert engine.match(NormalisedText("", "", "", ()), Speaker.AGENT) == []


# --------------------------------------------------------------------------- pack validation


PACK_HEAD = "pack: test_pack\nversion: 1\nlanguage: zh\nrules:\n"


def rule_yaml(rule_id: str, match: str, extra: str = "", examples: str = "") -> str:
    lines = [
        f"  - id: {rule_id}",
        "    category: threat",
        "    severity: high",
        "    match:",
        f"      {match}",
        "    explanation:",
        "      collector: 请注意",
        "      supervisor: 测试",
    ]
    if extra:
        lines.append(f"    {extra}")
    if examples:
        lines.append(f"    {examples}")
    return "\n".join(lines) + "\n"


def write(tmp_path: Path, text: str, name: str = "pack.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_errors(path: Path) -> list[str]:
    with pytest.raises(RulePackError) as info:
        load_pack(path)
    assert info.value.path == path
    assert info.value.errors
    assert str(path) in str(info.value)
    return info.value.errors


def line_of(error: str, path: Path) -> int:
    m = re.match(re.escape(str(path)) + r":(\d+): ", error)
    assert m, f"no file:line prefix in {error!r}"
    return int(m[1])


REGIMES_HEAD = (
    "pack: test_pack\nversion: 1\nlanguage: zh\n"
    "regimes:\n  a: {title: A, source: doc A}\n  b: {title: B, source: doc B}\n"
)


def test_regime_rules_follow_the_selected_regime(tmp_path: Path, tokenizer: Tokenizer) -> None:
    text = (
        REGIMES_HEAD
        + "regime: a\nrules:\n"
        + rule_yaml("t.all", "keywords: [废物]", "source: doc A 第一条; doc B 第二条")
        + rule_yaml("t.only_b", "keywords: [上门]", "regimes: [b]")
    )
    pack = load_pack(write(tmp_path, text))
    assert pack.rules[0].source == "doc A 第一条; doc B 第二条"
    assert fired(RuleEngine([pack]), tokenizer, "废物上门") == {"t.all"}
    assert fired(RuleEngine([pack], regime="b"), tokenizer, "废物上门") == {"t.all", "t.only_b"}


@pytest.mark.parametrize(
    ("head", "extra", "needle"),
    [
        (REGIMES_HEAD + "rules:\n", "", "default 'regime'"),
        (REGIMES_HEAD + "regime: c\nrules:\n", "", "not one of the pack's regimes"),
        (REGIMES_HEAD + "regime: a\nrules:\n", "regimes: [c]", "unknown regime"),
        (PACK_HEAD, "regimes: [a]", "unknown regime"),
    ],
)
def test_bad_regimes_are_errors(tmp_path: Path, head: str, extra: str, needle: str) -> None:
    errors = load_errors(write(tmp_path, head + rule_yaml("t.one", "keywords: [上门]", extra)))
    assert any(needle in e for e in errors), errors


def test_minimal_pack_loads(tmp_path: Path) -> None:
    pack = load_pack(write(tmp_path, PACK_HEAD + rule_yaml("t.one", "keywords: [上门]")))
    (rule,) = pack.rules
    assert (rule.id, rule.speaker, rule.enabled, rule.match.field) == ("t.one", "agent", True, "text")


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    text = PACK_HEAD + rule_yaml("t.one", "keywords: [上门, 去你家")  # unclosed flow sequence on line 9
    path = write(tmp_path, text)
    (error,) = load_errors(path)
    assert "YAML syntax error" in error
    assert line_of(error, path) in (9, 10)  # PyYAML notices it at the next token


def test_unknown_field_is_an_error_with_its_line(tmp_path: Path) -> None:
    text = PACK_HEAD + rule_yaml("t.one", "keywords: [上门]").replace("    severity: high", "    severty: high")
    path = write(tmp_path, text)
    errors = load_errors(path)
    typo = [e for e in errors if "severty" in e]
    assert len(typo) == 1
    assert line_of(typo[0], path) == 7
    assert "Extra inputs are not permitted" in typo[0]
    assert any("severity" in e and "required" in e.lower() for e in errors)


def test_unknown_field_in_match_is_an_error(tmp_path: Path) -> None:
    text = PACK_HEAD + rule_yaml("t.one", "keywords: [上门]\n      keyword: [去你家]")
    path = write(tmp_path, text)
    (error,) = load_errors(path)
    assert "rules.0.match.keyword" in error
    assert line_of(error, path) == 10


def test_second_rule_error_points_at_second_rule(tmp_path: Path) -> None:
    second = rule_yaml("t.two", "keywords: [上门]").replace("severity: high", "severity: extreme")
    text = PACK_HEAD + rule_yaml("t.one", "keywords: [上门]") + second  # the second rule starts on line 13
    path = write(tmp_path, text)
    (error,) = load_errors(path)
    assert "rules.1.severity" in error
    assert line_of(error, path) == 15


def test_bad_regex_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, PACK_HEAD + rule_yaml("t.one", "regex: ['(上门']"))
    (error,) = load_errors(path)
    assert "bad regex" in error
    assert "rules.0.match.regex" in error
    assert line_of(error, path) == 9


def test_duplicate_rule_ids_are_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, PACK_HEAD + rule_yaml("t.one", "keywords: [上门]") + rule_yaml("t.one", "keywords: [去]"))
    (error,) = load_errors(path)
    assert "duplicate rule id 't.one'" in error


@pytest.mark.parametrize("match", ["field: text", "keywords: []", "regex: []\n      keywords: []"])
def test_empty_match_is_an_error(tmp_path: Path, match: str) -> None:
    path = write(tmp_path, PACK_HEAD + rule_yaml("t.one", match))
    (error,) = load_errors(path)
    assert "at least one of keywords, regex, tokens or near" in error


@pytest.mark.parametrize(
    "match",
    [
        pytest.param("keywords: ['']", id="empty-keyword"),  # loads, then RuleEngine.match raises AttributeError
        pytest.param("keywords: [上门]\n      unless: ['']", id="empty-unless"),  # '' is in every text: rule is dead
        pytest.param("regex: ['']", id="empty-regex"),  # matches every segment, even an empty one
        pytest.param("regex: ['(上门)?']", id="regex-matching-empty"),
    ],
)
def test_empty_strings_in_match_are_errors(tmp_path: Path, match: str) -> None:
    # "a typo in a rule must not silently turn it off" (rulepack.py) — nor turn it on for everything.
    load_errors(write(tmp_path, PACK_HEAD + rule_yaml("t.one", match)))


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (PACK_HEAD + rule_yaml("T.Upper", "keywords: [上门]"), "rules.0.id"),
        (PACK_HEAD + rule_yaml("t.one", "keywords: [上门]", extra="speaker: debtor"), "rules.0.speaker"),
        (PACK_HEAD + rule_yaml("t.one", "keywords: [上门]", extra="action: hang_up"), "rules.0.action"),
        (PACK_HEAD + rule_yaml("t.one", "keywords: [上门]\n      field: pinyin"), "rules.0.match.field"),
        (PACK_HEAD.replace("version: 1", "version: 0") + rule_yaml("t.one", "keywords: [上门]"), "version"),
        ("pack: x\nversion: 1\nlanguage: zh\n", "rules"),
        ("- just\n- a list\n", "mapping"),
    ],
)
def test_other_schema_errors(tmp_path: Path, body: str, needle: str) -> None:
    errors = load_errors(write(tmp_path, body))
    assert any(needle in e for e in errors), errors


def test_missing_file_is_a_rule_pack_error(tmp_path: Path) -> None:
    load_errors(tmp_path / "nope.yaml")


def test_engine_rejects_the_same_id_in_two_packs(tmp_path: Path) -> None:
    a = write(tmp_path, PACK_HEAD + rule_yaml("t.same", "keywords: [上门]"), "a.yaml")
    b = write(tmp_path, PACK_HEAD.replace("test_pack", "other") + rule_yaml("t.same", "keywords: [去你家]"), "b.yaml")
    with pytest.raises(ValueError, match="t.same"):
        RuleEngine.from_files([a, b])


def test_engine_combines_packs_and_skips_disabled_rules(tmp_path: Path, tokenizer: Tokenizer) -> None:
    extra = write(
        tmp_path,
        PACK_HEAD
        + rule_yaml("t.on", "keywords: [交易]", extra="speaker: both")
        + rule_yaml("t.off", "keywords: [交易]", extra="enabled: false"),
    )
    engine = RuleEngine.from_files([PACK_FILE, extra])
    assert engine.rule_count == len(load_pack(PACK_FILE).in_force()) + 1
    assert fired(engine, tokenizer, "交易几乎停滞", Speaker.CUSTOMER) == {"t.on"}
    assert fired(engine, tokenizer, "你就是个老赖，交易停了") == {"t.on", "abuse.insult"}


# --------------------------------------------------------------------------- what the API shows of sources and regimes


def test_archived_findings_get_their_rules_source(engine: RuleEngine) -> None:
    from compliance_monitor.api.rest import _with_rule_sources

    call = {"findings": [{"rule_id": "improper_payment.fee_or_personal_account"}, {"rule_id": "model.threat"}]}
    out = _with_rule_sources(call, engine.rules)
    assert "GB/T 45251" in out["findings"][0]["rule_source"]
    assert out["findings"][1]["rule_source"] == ""  # a model finding has no rule, so no document


async def test_rules_listing_names_the_regime_and_what_is_in_force(pack: RulePack) -> None:
    from types import SimpleNamespace

    from compliance_monitor.api.rest import list_rules

    for regime, hours_id in (("bank_consumer_loan", "hours.outside_window_bank"), (None, "hours.outside_window")):
        rules = SimpleNamespace(engine=RuleEngine([pack], regime=regime), generation=1)
        listing = await list_rules(SimpleNamespace(services=SimpleNamespace(rules=rules)), None)  # type: ignore[arg-type]
        (cn,) = listing["packs"]
        assert cn["regime"] == (regime or "internet_consumer_credit")
        in_force = {r["id"] for r in cn["rules"] if r["in_force"]}
        assert hours_id in in_force and {"hours.outside_window", "hours.outside_window_bank"} - in_force
        assert all(r["source"] for r in cn["rules"])
