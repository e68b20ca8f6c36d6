"""Engine features beyond keywords: pinyin tolerance, negation, proximity, token sequences, cross-segment
context, English word boundaries, and the call-level rules (omission, calling hours, frequency)."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from compliance_monitor.detect.calls import OmissionTracker, check_call_start, debtor_info, local_midnight
from compliance_monitor.detect.pii import id_check_char, luhn_valid, valid_bank_card, valid_id_card, valid_mobile
from compliance_monitor.detect.rulepack import RulePack, load_pack
from compliance_monitor.detect.rules import RuleEngine, _any_of, _near, negated
from compliance_monitor.messages import CallStarted, Speaker
from compliance_monitor.text.normalise import normalise
from compliance_monitor.text.tokenise import Tokenizer

pytestmark = pytest.mark.unit
RULES = Path(__file__).parents[1] / "rules"


@pytest.fixture(scope="module")
def cn() -> RulePack:
    return load_pack(RULES / "cn_collection.yaml")


def pack_from(tmp_path: Path, rules_yaml: str) -> RulePack:
    path = tmp_path / "p.yaml"
    path.write_text(f"pack: t\nversion: 1\nlanguage: zh\nrules:\n{rules_yaml}", encoding="utf-8")
    return load_pack(path)


def rule(rule_id: str, match: str, extra: str = "") -> str:
    return (
        f"  - id: {rule_id}\n    category: threat\n    severity: high\n{extra}    match:\n{match}"
        "    explanation: {collector: c, supervisor: s}\n"
    )


def fired(engine: RuleEngine, tok: Tokenizer, text: str, speaker: Speaker = Speaker.AGENT, ctx: tuple = ()) -> set:
    context = tuple(normalise(c, tok) for c in ctx)
    return {m.rule.id for m in engine.match(normalise(text, tok), speaker, context)}


@pytest.mark.parametrize(
    ("mode", "heard", "hit"),
    [
        ("fuzzy", "我弄屎你", True),  # sh/s merged
        ("toneless", "我弄屎你", False),
        ("toneless", "我沙了你", True),  # 杀 shā / 沙 shā
        ("tones", "我沙了你", True),
        ("tones", "我傻了你", False),  # shǎ: another tone
        ("fuzzy", "我们的农场里", False),
    ],
)
def test_pinyin_tolerance(tmp_path: Path, tokenizer: Tokenizer, mode: str, heard: str, hit: bool) -> None:
    engine = RuleEngine(
        [pack_from(tmp_path, rule("t.kill", f"      keywords: [弄死你, 杀了你]\n      pinyin: {mode}\n"))]
    )
    assert ("t.kill" in fired(engine, tokenizer, heard)) is hit


@pytest.mark.parametrize("heard", ["信不信我弄屎你", "ok😀我弄屎你"])  # spans stay right around other characters
def test_pinyin_match_reports_the_heard_words(tmp_path: Path, tokenizer: Tokenizer, heard: str) -> None:
    engine = RuleEngine([pack_from(tmp_path, rule("t.kill", "      keywords: [弄死你]\n      pinyin: fuzzy\n"))])
    (m,) = engine.match(normalise(heard, tokenizer), Speaker.AGENT)
    assert m.matched_text == "弄屎你" and m.span == (4, 7)


@pytest.mark.parametrize(
    ("text", "is_negated"),
    [
        ("我们不会上门", True),
        ("我们绝对没有要上门", True),
        ("别担心，我们上门只是核实", False),
        ("你再不还钱我们就上门", False),
        ("不上门", True),
    ],
)
def test_negation_window_stays_in_the_clause(text: str, is_negated: bool) -> None:
    assert negated(text, text.index("上门")) is is_negated


def test_negation_can_be_switched_off(tmp_path: Path, tokenizer: Tokenizer) -> None:
    on = RuleEngine([pack_from(tmp_path, rule("t.a", "      keywords: [废物]\n"))])
    off = RuleEngine([pack_from(tmp_path, rule("t.a", "      keywords: [废物]\n      negation: false\n"))])
    assert fired(on, tokenizer, "你不是废物是什么") == set()
    assert fired(off, tokenizer, "你不是废物是什么") == {"t.a"}


def test_near_and_token_sequences(tmp_path: Path, tokenizer: Tokenizer) -> None:
    pack = pack_from(
        tmp_path,
        rule("t.near", "      near: {a: [同事], b: [欠钱], within: 4}\n")
        + rule("t.seq", "      tokens: [[找, 你, 算账]]\n"),
    )
    engine = RuleEngine([pack])
    assert fired(engine, tokenizer, "你同事都知道你欠钱了") == {"t.near"}
    assert fired(engine, tokenizer, "同事说这个项目很难做，后来大家聊了很多别的，最后才说到欠钱") == set()
    assert fired(engine, tokenizer, "我们会找你算账") == {"t.seq"}
    assert fired(engine, tokenizer, "找个时间跟你算账") == set()  # same words, not in sequence


def _near_by_token(tokens: list[str], a: list[str], b: list[str], within: int) -> tuple[int, int] | None:
    """The proximity check spelled out: token by token, each word looked for inside one token."""
    a_at = [i for i, t in enumerate(tokens) if any(w.lower() in t.lower() for w in a)]
    b_at = [j for j, t in enumerate(tokens) if any(w.lower() in t.lower() for w in b)]
    pairs = [(i, j) for i in a_at for j in b_at if i != j and abs(i - j) <= within]
    return (min(pairs[0]), max(pairs[0])) if pairs else None


def test_near_finds_words_inside_single_tokens_only() -> None:
    family, debt = _any_of(["家人", "同事"]), _any_of(["欠钱", "逾期"])
    assert _near(("你", "家人", "知道", "你", "欠钱"), family, debt, 4) == (1, 4)
    assert _near(("你", "家", "人说", "你", "欠钱"), family, debt, 4) is None  # 家人 split across tokens
    assert _near(("家人", "欠钱"), family, debt, 0) is None
    assert _near((), family, debt, 4) is None


def test_near_agrees_with_the_token_by_token_check() -> None:
    a, b = ["家人", "AB", "同事"], ["欠钱", "BC", "逾期", "b"]
    vocabulary = ["家", "人", "家人", "同事们", "欠", "钱", "欠钱了", "逾期", "A", "B", "C", "ab", "x", "你", "的"]
    rng = random.Random(5)
    for _ in range(3000):
        tokens = ["".join(rng.choices(vocabulary, k=rng.randint(1, 3))) for _ in range(rng.randint(0, 12))]
        within = rng.randint(1, 6)
        assert _near(tokens, _any_of(a), _any_of(b), within) == _near_by_token(tokens, a, b, within), tokens


def test_context_matches_across_segments_of_the_same_speaker(tmp_path: Path, tokenizer: Tokenizer) -> None:
    near = "      near: {a: [家人], b: [欠款], within: 12}\n"
    one = RuleEngine([pack_from(tmp_path, rule("t.ctx", near))])
    two = RuleEngine([pack_from(tmp_path, rule("t.ctx", near + "      context: 2\n"))])
    ctx = ("我已经联系了你的家人",)
    assert fired(one, tokenizer, "把你欠款的事都说了", ctx=ctx) == set()
    assert fired(two, tokenizer, "把你欠款的事都说了", ctx=ctx) == {"t.ctx"}
    # a match wholly inside the earlier segment was that segment's finding, not this one's
    assert fired(two, tokenizer, "好的再见", ctx=("你家人知道你欠款",)) == set()


def test_latin_keywords_respect_word_boundaries(tmp_path: Path, tokenizer: Tokenizer) -> None:
    engine = RuleEngine([pack_from(tmp_path, rule("t.en", "      keywords: [ass, jail]\n      negation: false\n"))])
    assert fired(engine, tokenizer, "you will go to JAIL") == {"t.en"}
    assert fired(engine, tokenizer, "this class is about passing") == set()


def test_pii_validators() -> None:
    first17 = "11010519491231002"
    assert valid_id_card(first17 + id_check_char(first17))
    assert not valid_id_card(first17 + ("0" if id_check_char(first17) != "0" else "1"))
    assert not valid_id_card("110105194913310021")  # month 13
    assert luhn_valid("6222021234567894") and not luhn_valid("6222021234567890")
    assert valid_bank_card("6222021234567894") and not valid_bank_card(first17 + id_check_char(first17))
    assert valid_mobile("13912345678") and not valid_mobile("12912345678")


def _luhn_by_the_book(number: str) -> bool:
    digits = [int(d) for d in reversed(number)]
    return sum(d if i % 2 == 0 else (d * 2 if d < 5 else d * 2 - 9) for i, d in enumerate(digits)) % 10 == 0


def test_check_digits_agree_with_their_definitions() -> None:
    rng = random.Random(11)
    for _ in range(2000):
        number = "".join(rng.choices("0123456789", k=rng.randint(12, 19)))
        assert luhn_valid(number) == _luhn_by_the_book(number), number
        first17 = number.ljust(17, "7")[:17]
        weighted = sum(int(d) * (2 ** (17 - i) % 11) for i, d in enumerate(first17))  # GB 11643: W_i = 2^(i-1) mod 11
        assert id_check_char(first17) == "10X98765432"[weighted % 11], first17
    assert luhn_valid("٦٢٢٢٠٢١٢٣٤٥٦٧٨٩٤")  # Arabic-Indic digits: \d matches them, so they are read as digits
    assert not luhn_valid("62220212345678x4") and not valid_id_card("11010519491231002")  # not digits; too short


# ---------------------------------------------------------------- call-level rules


def test_omission_fires_once_with_what_was_never_said(cn: RulePack, tokenizer: Tokenizer) -> None:
    rules = [r for r in cn.rules if r.kind == "omission"]
    tracker = OmissionTracker("c1", rules)
    tracker.observe(Speaker.AGENT, 1.0, normalise("喂，王先生吗，你那笔贷款什么时候还", tokenizer))
    assert tracker.due(20.0) == []  # deadline not reached yet
    (finding,) = tracker.due(31.0)
    assert finding.category == "missing_disclosure" and finding.rule_id == "disclosure.opening_statement"
    assert "催收员身份" in finding.explanation and "所属机构" in finding.explanation
    assert "来电目的" not in finding.explanation.split("未说明：")[1]
    assert tracker.due(60.0, call_over=True) == []


def test_opening_disclosure_satisfies_the_omission_rule(cn: RulePack, tokenizer: Tokenizer) -> None:
    tracker = OmissionTracker("c2", [r for r in cn.rules if r.kind == "omission"])
    tracker.observe(Speaker.AGENT, 0.5, normalise("您好，我是安信消费金融的客服小李，来电提醒您账单还款", tokenizer))
    assert tracker.due(31.0) == []


def test_disclosure_said_too_late_or_by_the_customer_does_not_count(cn: RulePack, tokenizer: Tokenizer) -> None:
    tracker = OmissionTracker("c3", [r for r in cn.rules if r.kind == "omission"])
    tracker.observe(Speaker.CUSTOMER, 1.0, normalise("我是王五，你们是哪个公司，是逾期的事吗", tokenizer))
    tracker.observe(Speaker.AGENT, 45.0, normalise("我是安信金融的，来催收您的欠款", tokenizer))
    assert len(tracker.due(50.0)) == 1


def test_a_short_call_is_judged_at_its_end(cn: RulePack) -> None:
    tracker = OmissionTracker("c4", [r for r in cn.rules if r.kind == "omission"])
    assert tracker.due(12.0) == []
    assert len(tracker.due(12.0, call_over=True)) == 1


def _call(hour: int, metadata: dict) -> CallStarted:
    at = dt.datetime(2026, 11, 23, hour, 30, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
    return CallStarted("c", "A1", "twilio", (Speaker.AGENT,), metadata, wall_time=at)


@pytest.mark.parametrize(
    ("hour", "tz", "fires"),
    [
        (9, None, False),
        (21, None, False),  # GB/T 45251—2025: 21:30 is within hours (the window closes at 22:00)
        (22, None, True),
        (7, None, True),
        (20, "Asia/Tokyo", False),
        (21, "Asia/Tokyo", True),
        (9, "Europe/London", True),
    ],
)
def test_calling_hours_in_the_debtors_time_zone(cn: RulePack, hour: int, tz: str | None, fires: bool) -> None:
    # hour is Beijing time; the window (08:00–22:00) is checked in the debtor's zone: 21:30 Beijing is 22:30 Tokyo
    rules = [r for r in cn.rules if r.id == "hours.outside_window"]
    started = _call(hour, {"custom_parameters": {"debtor_tz": tz}} if tz else {})
    _, zone = debtor_info(started, "Asia/Shanghai")
    local_hour = dt.datetime.fromtimestamp(started.wall_time, zone).hour
    findings = check_call_start(rules, started, zone, None)
    assert bool(findings) is not (8 <= local_hour < 22)
    if tz is None:
        assert bool(findings) is fires


def test_call_frequency_limit(cn: RulePack) -> None:
    rules = [r for r in cn.rules if r.id == "frequency.daily_limit"]
    started = _call(10, {"custom_parameters": {"debtor_id": "D42"}})
    debtor, zone = debtor_info(started, "Asia/Shanghai")
    assert debtor == "D42"
    assert check_call_start(rules, started, zone, 3) == []
    (finding,) = check_call_start(rules, started, zone, 4)
    assert finding.category == "call_frequency" and "第 4 次" in finding.explanation
    midnight = local_midnight(started.wall_time, zone)
    assert dt.datetime.fromtimestamp(midnight, zone).hour == 0 and started.wall_time - midnight == 10.5 * 3600


def test_invalid_call_level_rules_are_rejected(tmp_path: Path) -> None:
    from compliance_monitor.detect.rulepack import RulePackError

    bad = (
        "  - id: t.o\n    category: missing_disclosure\n    severity: warn\n    kind: omission\n"
        "    explanation: {collector: c, supervisor: s}\n"
    )
    with pytest.raises(RulePackError, match="needs 'required' and 'within_s'"):
        pack_from(tmp_path, bad)


def test_id_number_ending_in_x_passes_its_check_digit(tmp_path: Path, tokenizer: Tokenizer) -> None:
    first17 = next(f"1101051949123100{d}" for d in "0123456789" if id_check_char(f"1101051949123100{d}") == "X")
    pack = pack_from(
        tmp_path, rule("t.id", "      field: digits\n      regex: ['\\d{17}[\\dXx]']\n      validate: id_card\n")
    )
    assert fired(RuleEngine([pack]), tokenizer, f"身份证号{first17}X") == {"t.id"}


def test_prefilter_derives_selective_covers() -> None:
    from compliance_monitor.detect.prefilter import branch_covers, min_digits, required_covers, required_literals

    # A run of parts with few spellings is spelled out: far rarer than 骗子 or 垃圾 alone.
    spelled = {a + b + c for a in ("你", "你个") for b in ("", "就是") for c in ("骗子", "垃圾")}
    assert required_literals("(你|你个)(就是)?(骗子|垃圾)") == spelled
    # A part repeated without bound borders on its neighbours with its first and last copy.
    assert required_literals("(操|草)+你(妈|吗)") == {"操你妈", "操你吗", "草你妈", "草你吗"}
    assert required_literals(r"(?<!\d)\d{11}(?!\d)") is None  # no literal needed: always runs
    # Parts apart: gated on the rare words, never on 你 alone; every required part is a cover.
    covers = required_covers("(去|到)[^,]{0,3}(你|你们)[^,]{0,3}(单位|公司)")
    assert set(covers) == {frozenset({"去", "到"}), frozenset({"你"}), frozenset({"单位", "公司"})}
    assert covers[0] == {"单位", "公司"}  # the rarest first
    assert required_literals(r"\b(?:sue|suing)\s+you\b") == {"sue", "suing"}  # not 'you', in every segment
    # Each top-level alternative is gated on its own; one that needs no literal means "always run".
    assert branch_covers("拘留|坐牢") == [[frozenset({"拘留"})], [frozenset({"坐牢"})]]
    assert branch_covers(r"拘留|\d{11}") is None
    # Long-number regexes need as many digits in the segment as their matches have.
    assert min_digits(r"(?<!\d)1(?:[,、]?\d){10}(?!\d)") == 11
    assert min_digits(r"卡号[^\d]{0,4}\d{16}|身份证\d{17}[\dXx]") == 16
    assert min_digits(r"[0-9]{2}|元") == 0


def test_scanner_opens_a_check_when_each_cover_of_a_gate_occurs() -> None:
    from compliance_monitor.detect.scan import Scanner

    near = [[frozenset({"家人", "同事"}), frozenset({"欠钱"})]]  # both sides must occur
    scanner = Scanner(["老赖"], [near, None, [], [[frozenset({"坐牢"})], [frozenset({"拘留"})]]])
    assert scanner.scan("你家人知道你欠钱") == ([], {0, 1})  # 1: always open; 2: never
    assert scanner.scan("你家人知道吗") == ([], {1})
    assert scanner.scan("老赖就得拘留") == (["老赖"], {1, 3})


@pytest.mark.parametrize(
    ("pack_file", "data_files"),
    [
        ("cn_collection.yaml", ("utterances_dev.jsonl", "utterances_test.jsonl")),
        ("us_fdcpa.yaml", ("fdcpa_utterances.jsonl",)),
    ],
)
def test_gating_never_changes_what_fires(tokenizer: Tokenizer, pack_file: str, data_files: tuple[str, ...]) -> None:
    """The scan only spares checks that cannot succeed: without it (every regex, token sequence and
    proximity check on every segment) the same matches come out, in the same order."""
    import json

    pack = load_pack(RULES / pack_file)
    fast, slow = RuleEngine([pack]), RuleEngine([pack], prefilter=False)
    data = Path(__file__).parent / "data"
    texts = [
        json.loads(line)["text"] for f in data_files for line in (data / f).read_text(encoding="utf-8").splitlines()
    ]
    texts += [x for r in pack.rules for x in (*r.examples.positive, *r.examples.negative)]
    for text in texts:
        n = normalise(text, tokenizer)
        for speaker in Speaker:
            assert fast.match(n, speaker) == slow.match(n, speaker), text


@pytest.mark.parametrize(("consent", "fires"), [(None, True), ("true", False), ("1", False), ("no", True)])
def test_the_debtors_consent_lifts_the_calling_hours(cn: RulePack, consent: str | None, fires: bool) -> None:
    # GB/T 45251—2025 and the banking guideline: no calls 22:00–08:00 unless the debtor agreed
    rules = [r for r in cn.rules if r.id == "hours.outside_window"]
    params = {"debtor_consent": consent} if consent is not None else {}
    started = _call(23, {"custom_parameters": params})
    assert bool(check_call_start(rules, started, ZoneInfo("Asia/Shanghai"), None)) is fires
    # consent is about the hour only: the day's limit still holds
    freq = [r for r in cn.rules if r.id == "frequency.daily_limit"]
    assert check_call_start(freq, _call(10, {"custom_parameters": params}), ZoneInfo("Asia/Shanghai"), 4)
