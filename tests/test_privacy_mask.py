"""privacy.mask: personal numbers found in raw text (digits or spoken numerals) and masked in place."""

from __future__ import annotations

import pytest

from compliance_monitor.detect.pii import id_check_char, luhn_valid
from compliance_monitor.messages import FindingEvent, Severity, Speaker
from compliance_monitor.privacy.mask import can_see_pii, find_pii, mask_dict, mask_event, mask_text

pytestmark = pytest.mark.unit

ID = "11010519491231002X"
ID2 = "440304199208153319"


def _luhn_complete(prefix: str) -> str:
    return next(prefix + d for d in "0123456789" if luhn_valid(prefix + d))


CARD = _luhn_complete("622202020011223344")
SPOKEN = str.maketrans("0123456789", "零幺二三四五六七八九")


def kinds(text: str) -> list[str]:
    return [s.kind for s in find_pii(text)]


def test_fixtures_are_valid() -> None:
    assert id_check_char(ID[:17]) == ID[17] and id_check_char(ID2[:17]) == ID2[17]
    assert luhn_valid(CARD) and len(CARD) == 19


@pytest.mark.parametrize(
    ("text", "masked", "kind"),
    [
        (f"身份证号码{ID}我再跟你确认一下", "身份证号码110***********002X我再跟你确认一下", "id_card"),
        (f"卡号{CARD}", f"卡号622************{CARD[-4:]}", "bank_card"),
        ("手机13800138000", "手机138****8000", "mobile"),
        ("手机幺三八零零幺三八零零零", "手机幺三八****八零零零", "mobile"),  # spoken numerals
        ("电话 138-0013-8000 谢谢", "电话 138-****-8000 谢谢", "mobile"),  # dashed groups
        ("一三八 零零 一三八 零零零", "一三八 ** **八 零零零", "mobile"),  # spaced groups
        ("号码138零零幺38000", "号码138****8000", "mobile"),  # digits and numerals mixed
        ("固话010-12345678", "固话010-****5678", "landline"),
    ],
)
def test_masked_in_place_same_length(text: str, masked: str, kind: str) -> None:
    assert mask_text(text) == masked
    assert len(mask_text(text)) == len(text)
    assert kinds(text) == [kind]


def test_spoken_id_with_separators_and_spoken_x() -> None:
    spoken = ID2.translate(SPOKEN)
    text = f"你的证件号是{spoken[:6]}，{spoken[6:14]}，{spoken[14:]}对吧"
    assert kinds(text) == ["id_card"]
    out = mask_text(text)
    assert out.startswith("你的证件号是四四零***") and out.endswith("三三幺九对吧") and len(out) == len(text)
    x_read = ID[:17].translate(SPOKEN) + "艾克斯"
    assert kinds(f"身份证{x_read}") == ["id_card"]
    assert mask_text(f"身份证{x_read}").endswith("零零二艾克斯")


def test_invalid_id_and_non_luhn_card_still_masked_as_long_numbers_but_typed_only_when_valid() -> None:
    bad_id = ID[:17] + "5"
    bad_card = CARD[:-1] + str((int(CARD[-1]) + 1) % 10)
    assert kinds(bad_id) == ["long_number"] and kinds(bad_card) == ["long_number"]  # conservative
    assert "*" in mask_text(bad_id)
    assert kinds("12345678901") == []  # 11 digits, not a mobile: left alone


@pytest.mark.parametrize(
    "text",
    [
        "本金5000元，三天内还清",
        "欠款一百二十万三千五百元",
        "2024年3月5日10:30前还款",
        "下午三点前，2024-03-05",
        "请报一下您身份证后四位1234",
        "一些一下一定统一",
        "",
    ],
)
def test_amounts_dates_times_are_not_masked(text: str) -> None:
    assert mask_text(text) == text and kinds(text) == []


def test_two_numbers_in_one_sentence() -> None:
    text = f"身份证{ID}，手机幺三八零零幺三八零零零，卡号{CARD}。"
    assert kinds(text) == ["id_card", "mobile", "bank_card"]
    out = mask_text(text)
    assert ID not in out and CARD not in out and "幺三八零零幺三八零零零" not in out and len(out) == len(text)


def test_mask_dict_and_event_keep_ids_and_mask_content() -> None:
    row = {"call_id": "13800138000", "text": f"号{ID}", "nested": [{"matched_text": ID}], "n": 1}
    out = mask_dict(row)
    assert out["call_id"] == "13800138000" and out["n"] == 1
    assert out["text"] == "号110***********002X" and out["nested"][0]["matched_text"] == "110***********002X"
    event = FindingEvent(
        call_id="c1", finding_id=1, speaker=Speaker.AGENT, segment_no=1, rule_id="privacy.id_number",
        category="privacy_leak", severity=Severity.HIGH, matched_text=ID, span=(0, 18), t0=0, t1=1,
        explanation="x", collector_explanation="y", source="rule", score=1.0,
    )  # fmt: skip
    assert mask_event(event).matched_text == "110***********002X"
    clean = event.model_copy(update={"matched_text": "你好"})
    assert mask_event(clean) is clean


def test_only_admin_sees_pii() -> None:
    class P:
        def __init__(self, role: str) -> None:
            self.role = role

    assert can_see_pii(P("admin"))
    assert not any(can_see_pii(P(r)) for r in ("auditor", "supervisor", "collector", "bridge"))
    assert not can_see_pii(None)


def test_yao_misheard_as_yao_soundalike_inside_a_number() -> None:
    assert mask_text("手机要三八零零要三八零零零") == "手机要三八****八零零零"
    assert mask_text("号码要3800138000") == "号码要38****8000"
    assert mask_text("我要三个") == "我要三个"


def test_traditional_and_financial_numerals() -> None:
    assert kinds("手機壹叁捌零零壹叁捌零零零") == ["mobile"]
