"""Unit tests for text normalisation and jieba tokenisation (compliance_monitor.text)."""

from __future__ import annotations

import re
from pathlib import Path

import jieba
import pytest

from compliance_monitor.messages import NormalisedText
from compliance_monitor.text.normalise import (
    collapse_spaces,
    normalise,
    numerals_to_digits,
    to_half_width,
    to_simplified,
)
from compliance_monitor.text.tokenise import Tokenizer, parse_user_dict

pytestmark = pytest.mark.unit

USER_DICT = Path(__file__).parents[1] / "rules" / "user_dict.txt"


# --------------------------------------------------------------------------- simplified


@pytest.mark.parametrize(
    ("traditional", "simplified"),
    [
        ("一二線城市雖然也處於調整中", "一二线城市虽然也处于调整中"),
        ("你再不還款我們就上門", "你再不还款我们就上门"),
        ("這會影響你的徵信", "这会影响你的征信"),
        ("乾淨", "干净"),  # phrase-level conversion, not character by character
    ],
)
def test_to_simplified(traditional: str, simplified: str) -> None:
    assert to_simplified(traditional) == simplified


def test_to_simplified_leaves_simplified_and_empty_text_alone() -> None:
    assert to_simplified("已经逾期十八天") == "已经逾期十八天"
    assert to_simplified("") == ""


# --------------------------------------------------------------------------- half width


@pytest.mark.parametrize(
    ("full", "half"),
    [
        ("ＡＢＣ１２３", "ABC123"),
        ("你好，请问！", "你好,请问!"),  # full-width punctuation becomes ASCII too (by choice)
        ("（本金）：５０００元；", "(本金):5000元;"),
        ("ａ\u3000ｂ", "a b"),  # ideographic space
        ("￥５０", "¥50"),
        ("好的。「收到」、", "好的。「收到」、"),  # not ASCII variants: unchanged
    ],
)
def test_to_half_width(full: str, half: str) -> None:
    assert to_half_width(full) == half


# --------------------------------------------------------------------------- spaces


@pytest.mark.parametrize(
    ("raw", "collapsed"),
    [
        ("你好 我是 张三", "你好我是张三"),
        ("  你再不还款  \t我们就上门 ", "你再不还款我们就上门"),
        ("please   call me\tback", "please call me back"),
        ("我用 iPhone 打的", "我用iPhone打的"),
        ("幺三八 零零幺三 八零零零", "幺三八零零幺三八零零零"),
        ("ok 好的 thank you", "ok好的thank you"),
        ("", ""),
    ],
)
def test_collapse_spaces(raw: str, collapsed: str) -> None:
    assert collapse_spaces(raw) == collapsed


# --------------------------------------------------------------------------- numerals


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        # digit-by-digit readings (phone, ID card, bank card)
        ("幺三八零零幺三八零零零", "13800138000"),
        ("我的手机号是一三八〇〇一三八〇〇〇", "我的手机号是13800138000"),
        ("报警电话幺幺洞", "报警电话110"),
        ("打一一零", "打110"),  # a stop word only protects a run it covers completely
        ("尾号陆贰贰捌", "尾号6228"),
        ("身份证一一零一零五一九九零零一零一一二三X", "身份证11010519900101123X"),
        # Arabic and Chinese digits mixed in one run
        ("138零零138000", "13800138000"),
        ("卡号6228两八零零", "卡号62282800"),
        # positional numbers
        ("六千三百二十", "6320"),
        ("十八", "18"),
        ("已经逾期十八天", "已经逾期18天"),
        ("两万", "20000"),
        ("一百零五", "105"),
        ("一千零五十", "1050"),
        ("三万五", "35000"),  # colloquial: 三万五千
        ("两千五", "2500"),
        ("一亿二千万", "120000000"),
        ("欠款3万5千元", "欠款35000元"),
        ("一点五万", "15000"),
        ("1.5万", "15000"),
        ("贰仟伍佰元", "2500元"),
        # a lone numeral before a measure word
        ("三天之内还清", "3天之内还清"),
        ("两个月", "2个月"),
        ("六月十五号", "6月15号"),
        ("下午三点", "下午3点"),
        ("下午一点打给你", "下午1点打给你"),
        ("十分钟后", "10分钟后"),
        ("还一次", "还1次"),
        # Arabic already
        ("2024年", "2024年"),
        ("13800138000", "13800138000"),
    ],
)
def test_numerals_converted(text: str, digits: str) -> None:
    assert numerals_to_digits(text) == digits


@pytest.mark.parametrize(
    "text",
    [
        "一些", "一下", "一起", "一定", "一直", "一般", "一样", "统一", "万一", "一旦", "十分",
        "三思", "不三不四", "一点", "差一点", "快一点还钱", "你等一下", "我们一起想办法",
        "万一你不还", "十分抱歉", "请三思", "一五一十", "三三两两", "十万火急", "一块儿去",
        "千万别", "两三天", "七八十个", "十七八岁", "乱七八糟", "漏洞百出", "山洞", "十全十美",
        "今天没有数字",
    ],
)  # fmt: skip
def test_numerals_not_converted(text: str) -> None:
    assert numerals_to_digits(text) == text


def test_numerals_only_touch_numbers_in_a_sentence() -> None:
    text = "你一定要在三天之内还六千三百二十元,万一不还,一点办法都没有"
    assert numerals_to_digits(text) == "你一定要在3天之内还6320元,万一不还,一点办法都没有"


# --------------------------------------------------------------------------- tokeniser


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("你再不还款我们就上门", {"上门", "还款"}),
        ("已经逾期十八天", {"逾期"}),
        ("这会影响你的征信", {"征信"}),
        ("你就等着司法拘留吧", {"司法拘留"}),
        ("我要给你的紧急联系人打电话", {"紧急联系人"}),
        ("你就是失信被执行人", {"失信被执行人"}),
        ("你的利息和罚息还有滞纳金", {"利息", "罚息", "滞纳金"}),
        ("你这个老赖不要脸", {"老赖", "不要脸"}),
        ("我们会找人收拾你", {"找人收拾你"}),
        ("本次通话会录音", {"本次通话会录音"}),
    ],
)
def test_domain_words_stay_whole(tokenizer: Tokenizer, text: str, words: set[str]) -> None:
    tokens = tokenizer.cut(text)
    assert "".join(tokens) == text
    assert words <= set(tokens), tokens


def test_cut_for_search_yields_words_and_sub_words(tokenizer: Tokenizer) -> None:
    tokens = tokenizer.cut_for_search("你就等着司法拘留吧")
    assert {"司法拘留", "司法", "拘留"} <= set(tokens)


def test_real_user_dict_is_valid_for_jieba() -> None:
    entries = parse_user_dict(USER_DICT)
    assert len(entries) >= 80
    assert len({word for word, _, _ in entries}) == len(entries), "duplicate words"
    jieba_line = re.compile(r"^(.+?)( [0-9]+)?( [a-z]+)?$")  # jieba's own re_userdict
    for line in USER_DICT.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            match = jieba_line.match(line)
            assert match and " " not in match[1], line


def test_user_dict_comments_and_blank_lines_ignored(tmp_path: Path) -> None:
    path = tmp_path / "dict.txt"
    path.write_text(
        "\ufeff# a header comment\n\n咕噜咕噜乐 5000 n\n   # 呼啦呼啦乐 5000\n嘀嗒嘀嗒乐\n",
        encoding="utf-8",
    )
    assert parse_user_dict(path) == [("咕噜咕噜乐", 5000, "n"), ("嘀嗒嘀嗒乐", None, None)]
    tk = Tokenizer(path)
    assert "咕噜咕噜乐" in tk
    assert "嘀嗒嘀嗒乐" in tk
    assert "呼啦呼啦乐" not in tk
    assert "# a header comment" not in tk
    assert "咕噜咕噜乐" in tk.cut("他说咕噜咕噜乐")


def test_malformed_user_dict_line_raises(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("还款 100 vn extra\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.txt:1"):
        parse_user_dict(path)


def test_private_tokenizers_do_not_leak_words(tokenizer: Tokenizer) -> None:
    word = "嘁哩喀喳乐"
    with_word = Tokenizer(extra_words=[word])
    assert word in with_word.cut(f"他说{word}")
    assert word not in tokenizer
    assert word not in tokenizer.cut(f"他说{word}")
    assert word not in jieba.lcut(f"他说{word}")  # the global singleton
    assert word not in jieba.dt.FREQ


# --------------------------------------------------------------------------- pipeline


def test_normalise(tokenizer: Tokenizer) -> None:
    raw = "你再不還款 我們就上門，卡號 陆贰贰捌 ，ＯＫ？  逾期十八天"
    result = normalise(raw, tokenizer)
    assert isinstance(result, NormalisedText)
    assert result.raw == raw
    assert result.text == "你再不还款我们就上门,卡号陆贰贰捌,OK?逾期十八天"
    assert result.digits == "你再不还款我们就上门,卡号6228,OK?逾期18天"
    assert {"还款", "上门", "逾期", "OK"} <= set(result.tokens)
    assert "".join(result.tokens) == result.text


def test_normalise_drops_whitespace_tokens(tokenizer: Tokenizer) -> None:
    result = normalise("please call me back", tokenizer)
    assert result.text == "please call me back"
    assert result.tokens == ("please", "call", "me", "back")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("heard", "digits"),
    [
        ("你的手机号是要3812674590没错吧", "你的手机号是13812674590没错吧"),  # 幺 heard as 要
        ("身份证号420 111 1975 1109 2723", "身份证号420111197511092723"),  # groups joined
        ("我要3个", "我要3个"),
        ("要12345元", "要12345元"),
    ],
)
def test_digits_view_repairs_phone_readings(heard: str, digits: str) -> None:
    from compliance_monitor.text.normalise import join_digit_groups

    assert join_digit_groups(heard) == digits


@pytest.mark.unit
@pytest.mark.parametrize(
    ("heard", "digits"),
    [
        ("号码是要三九、九三五要八要九零对吧", "号码是139、93518190对吧"),  # 幺 heard as 要 inside numerals
        ("我要一个一个打过去", "我要1个1个打过去"),  # a 要 that is a verb stays
        ("我要三天之内还清", "我要3天之内还清"),
    ],
)
def test_digits_view_repairs_yao_in_spoken_numbers(tokenizer: Tokenizer, heard: str, digits: str) -> None:
    assert normalise(heard, tokenizer).digits == digits
