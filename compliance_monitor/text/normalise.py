"""Text normalisation between ASR and the rule engine.

Whisper output for Mandarin is inconsistent: it mixes traditional and simplified characters,
full-width and half-width forms, sometimes puts spaces between Chinese characters, and writes
numbers either as Chinese numerals or as digits. Rules and search want one canonical form
(``NormalisedText.text``); PII checks (phone, ID card, bank card numbers) and amounts want the
numbers as Arabic digits (``NormalisedText.digits``).
"""

from __future__ import annotations

import re
import threading
from decimal import Decimal
from typing import TYPE_CHECKING

import opencc

from compliance_monitor.messages import NormalisedText

if TYPE_CHECKING:
    from compliance_monitor.text.tokenise import Tokenizer

__all__ = [
    "collapse_spaces",
    "normalise",
    "numerals_to_digits",
    "to_half_width",
    "to_simplified",
]

# --------------------------------------------------------------------------- simplified

_converter: opencc.OpenCC | None = None
_converter_lock = threading.Lock()


def _get_converter() -> opencc.OpenCC:
    # Created lazily: loading the OpenCC dictionaries costs tens of ms and not every importer
    # of this module converts text.
    global _converter
    if _converter is None:
        with _converter_lock:
            if _converter is None:
                _converter = opencc.OpenCC("t2s")
    return _converter


def to_simplified(text: str) -> str:
    """Traditional → simplified Chinese (OpenCC ``t2s``, phrase-aware: 乾淨 → 干净).

    The converter is shared; calls are serialised with a lock because the C++ binding does not
    document thread safety and one conversion takes microseconds.
    """
    if not text:
        return text
    converter = _get_converter()
    with _converter_lock:
        return str(converter.convert(text))


# --------------------------------------------------------------------------- half width

_HALF_WIDTH_TABLE: dict[int, str] = {cp: chr(cp - 0xFEE0) for cp in range(0xFF01, 0xFF5F)}
_HALF_WIDTH_TABLE[0x3000] = " "  # ideographic space
_HALF_WIDTH_TABLE[0xFFE5] = "¥"  # full-width yen/yuan sign, common before amounts


def to_half_width(text: str) -> str:
    """Full-width ASCII variants (U+FF01–U+FF5E) → ASCII; U+3000 → space; ￥ → ¥.

    Deliberate choice: *every* character in U+FF01–U+FF5E is converted, including the
    full-width punctuation Chinese text normally uses (，？！：；（） become ,?!:;()). One
    canonical form is more robust than a split rule, and rules/search match on words, not
    punctuation. Marks outside that block (。、“”《》「」) are not ASCII variants and are kept.
    """
    return text.translate(_HALF_WIDTH_TABLE)


# --------------------------------------------------------------------------- spaces

# Han ideographs (ext. A, URO, compatibility) plus CJK symbols/punctuation and any remaining
# full-width forms: none of these is ever separated by a meaningful space.
_CJK = r"\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_SPACE_NEXT_TO_CJK = re.compile(rf"(?<=[{_CJK}])\s+|\s+(?=[{_CJK}])")
_SPACE_RUN = re.compile(r"\s+")


def collapse_spaces(text: str) -> str:
    """Drop whitespace next to a CJK character; collapse other runs to one space; strip.

    Whisper inserts spaces inside Chinese sentences (``你好 我是 张三``); those carry no
    meaning and would split phone numbers read out in groups (``幺三八 零零幺三``). Spaces
    between two non-CJK tokens (English words, separate numbers) are kept as one space.
    """
    text = _SPACE_NEXT_TO_CJK.sub("", text)
    return _SPACE_RUN.sub(" ", text).strip()


# --------------------------------------------------------------------------- numerals

_DIGIT_VALUE: dict[str, int] = {
    ch: value
    for chars, value in (
        ("零〇洞", 0),
        ("幺一壹", 1),
        ("二两贰兩", 2),
        ("三叁", 3),
        ("四肆", 4),
        ("五伍", 5),
        ("六陆陸", 6),
        ("七柒", 7),
        ("八捌", 8),
        ("九玖", 9),
    )
    for ch in chars
}
_UNIT_VALUE: dict[str, int] = {
    "十": 10, "拾": 10, "百": 100, "佰": 100, "千": 1000, "仟": 1000,
    "万": 10**4, "萬": 10**4, "亿": 10**8, "億": 10**8,
}  # fmt: skip
# 洞 (0) and 幺 (1) are only digits in radio/phone-style digit-by-digit readings; they are
# ordinary characters elsewhere (漏洞, 洞百 in 漏洞百出), so positional numbers reject them.
_READING_ONLY = frozenset("洞幺")
# Two adjacent digits give an approximate range (两三天 = 2–3 days, 七八个, 三四百), not a number.
_APPROX_PAIRS = frozenset({"一二", "一两", "二三", "两三", "三四", "四五", "五六", "六七", "七八", "八九", "三五"})
# A lone Chinese digit is only a number when a measure word follows (三天, 两个, 五号); longest
# first, so 点钟 wins over 点 and 分钟 is listed but 分 is not (十分 = "very").
_MEASURE_WORDS: tuple[str, ...] = (
    "元", "块", "毛", "角", "天", "号", "月", "日", "年", "个", "岁", "点钟", "点", "次",
    "期", "周", "星期", "礼拜", "小时", "分钟", "秒", "笔", "张", "位", "名", "人", "倍", "遍",
)  # fmt: skip
_MEASURE_WORDS = tuple(sorted(_MEASURE_WORDS, key=len, reverse=True))
# 一点 is "a little" unless it is a clock time after one of these.
_TIME_OF_DAY = ("凌晨", "早上", "上午", "中午", "下午", "晚上", "半夜", "夜里")
# Idioms and words that contain a numeral run without being a number. They only protect a run
# they cover completely, so 一一零 (110, the police) is still converted.
_STOP_WORDS = (
    "万一", "一一", "一五一十", "三三两两", "七七八八", "千千万万", "十万火急", "一块儿",
    "三番五次", "三天两头", "一成不变", "九九归一", "一年半载", "三长两短", "十全十美",
)  # fmt: skip

_ALL_DIGIT_CHARS = "".join(_DIGIT_VALUE)
_NUMERAL_CLASS = _ALL_DIGIT_CHARS + "".join(_UNIT_VALUE) + "0-9"
_STOP_RE = re.compile("(?=({}))".format("|".join(sorted(_STOP_WORDS, key=len, reverse=True))))
_NUMBER_TOKEN = re.compile(
    # Decimals only before a magnitude (一点五万, 1.5万): 三点四十 is a clock time, 一点点 "a bit".
    rf"(?P<decimal>(?P<int>[{_NUMERAL_CLASS}]+)[点.](?P<frac>[{_ALL_DIGIT_CHARS}0-9]+)(?P<mag>[千万亿]+))"
    rf"|(?P<run>[{_NUMERAL_CLASS}]+)"
)


def _digit(ch: str) -> int | None:
    if ch.isascii():
        return int(ch) if ch.isdigit() else None
    return _DIGIT_VALUE.get(ch)


def _read_digits(run: str) -> str:
    """Digit-by-digit reading: 幺三八零零 → 13800 (Arabic digits pass through)."""
    return "".join(str(_digit(ch)) for ch in run)


def _parse_positional(run: str) -> int | None:
    """Value of a positional number (六千三百二十, 一百零五, 3万5千, 三万五); None if malformed.

    ``section`` collects the part below 万, ``wan`` the 万 part, ``yi`` the 亿 part. A single
    digit right after a unit is the colloquial abbreviation (三万五 = 35000, 两千五 = 2500,
    一百五 = 150); after 零 it is plain units (一百零五 = 105).
    """
    yi = wan = section = number = 0
    n_digits = 0  # digits making up ``number``
    trailing_scale = 1  # what a lone trailing digit is worth
    for ch in run:
        d = _digit(ch)
        if d is not None:
            if d == 0 and not ch.isascii():  # 零 marks a skipped position
                if n_digits:
                    return None  # 三零万: a digit reading, not a positional number
                trailing_scale = 1
                continue
            number, n_digits = number * 10 + d, n_digits + 1
            continue
        unit = _UNIT_VALUE[ch]
        if unit < 10**4:
            if not n_digits:
                if unit != 10:
                    return None  # 百/千 with no digit before it
                number = 1  # 十八 = 1×10 + 8
            section += number * unit
        elif unit == 10**4:
            if not (section or n_digits):
                return None
            wan, section = wan + (section + number) * unit, 0
        else:
            if not (wan or section or n_digits):
                return None
            yi, wan, section = yi + (wan + section + number) * unit, 0, 0
        number, n_digits = 0, 0
        trailing_scale = max(unit // 10, 1)
    if n_digits == 1:
        number *= trailing_scale
    return yi + wan + section + number


def _has_adjacent_chinese_digits(run: str) -> bool:
    """两三千, 七八十, 十七八: two non-zero Chinese digits side by side make a range."""
    return any(_DIGIT_VALUE.get(a) and _DIGIT_VALUE.get(b) for a, b in zip(run, run[1:], strict=False))


def _is_counted(numeral: str, text: str, start: int, end: int) -> bool:
    """Whether a lone Chinese numeral is a number: only with a measure word after it."""
    if numeral in _READING_ONLY or (numeral not in _DIGIT_VALUE and numeral != "十"):
        return False  # lone 百/千/万/亿 (百年, 万元户) and 洞/幺 are words, not numbers
    measure = next((m for m in _MEASURE_WORDS if text.startswith(m, end)), None)
    if measure is None:
        return False
    if numeral == "一" and measure == "点":
        return text[:start].endswith(_TIME_OF_DAY)  # 下午一点 vs 差一点, 快一点
    return True


def _convert_run(text: str, start: int, end: int) -> str:
    """Arabic form of ``text[start:end]`` (a run of numeral characters), or the run unchanged."""
    run = text[start:end]
    if run.isascii():
        return run  # Arabic already
    if len(run) == 1:
        if not _is_counted(run, text, start, end):
            return run
        return str(_UNIT_VALUE.get(run) or _DIGIT_VALUE[run])
    has_arabic = any(ch.isascii() for ch in run)
    if not any(ch in _UNIT_VALUE for ch in run):
        if not has_arabic and run in _APPROX_PAIRS:
            return run  # 两三天, 乱七八糟
        return _read_digits(run)
    if not has_arabic:
        if _READING_ONLY.intersection(run) or _has_adjacent_chinese_digits(run):
            return run  # 漏洞百出; ranges such as 两三千, 七八十
        if all(ch in _UNIT_VALUE for ch in run) and _UNIT_VALUE[run[0]] != 10:
            return run  # 千万 ("by all means"), 万万, 百万 as hyperbole
    value = _parse_positional(run)
    return run if value is None else str(value)


def _convert_decimal(m: re.Match[str]) -> str:
    """一点五万 → 15000, 1.5万 → 15000, 2.35亿 → 235000000."""
    whole = m["int"]
    if any(ch in _UNIT_VALUE for ch in whole):
        value = _parse_positional(whole)
        if value is None:
            return m[0]
        whole = str(value)
    number = Decimal(f"{_read_digits(whole)}.{_read_digits(m['frac'])}")
    for ch in m["mag"]:
        number *= _UNIT_VALUE[ch]
    return f"{number.normalize():f}"


def numerals_to_digits(text: str) -> str:
    """Replace Chinese numerals with Arabic digits; everything else is left as it is.

    Converted: digit-by-digit readings with 零〇洞/幺一/二两/… (幺三八零零幺三八零零零 →
    13800138000), runs mixing digits and numerals (138零零 → 13800, 3万 → 30000), positional
    numbers (六千三百二十 → 6320, 一百零五 → 105, 三万五 → 35000), decimals before a magnitude
    (一点五万 → 15000) and a lone numeral before a measure word (三天 → 3天, 下午一点 → 下午1点).

    Kept: words that merely contain a numeral (一些 一下 一定 统一 三思 不三不四 一点 十分),
    an idiom stop-list (万一 一五一十 三三两两 …), approximate ranges (两三天 七八十 乱七八糟)
    and bare magnitudes used as adverbs (千万别).

    The result can differ in length from the input, so offsets into it do not map to ``text``.
    """
    stop_spans = [(m.start(), m.start() + len(m[1])) for m in _STOP_RE.finditer(text)]

    def replace(m: re.Match[str]) -> str:
        if m["decimal"]:
            return _convert_decimal(m)
        start, end = m.span()
        if any(a <= start and end <= b for a, b in stop_spans):
            return m[0]
        return _convert_run(text, start, end)

    return _NUMBER_TOKEN.sub(replace, text)


# --------------------------------------------------------------------------- pipeline


_DIGIT_GROUP_BREAK = re.compile(r"(?<=\d)[\s\-–—]+(?=\d)")


# 幺 (yāo, "one" when reading digits) comes back from ASR as a same-sounding character: 要3812674590.
# Only next to a long digit run (a phone, ID or card being read out) is it taken for 1; "要3个" stays.
_MISHEARD_YAO = re.compile(r"[要腰妖邀](?=\d{9,})|(?<=\d{2})[要腰妖邀](?=\d)")


# The same inside a number still in Chinese numerals: 要三九、九三五要八要九零 is 幺三九、九三五幺八幺九零.
_READING_RUN = re.compile(
    r"[零〇一二三四五六七八九幺两洞要腰妖邀](?:[、,\s]?[零〇一二三四五六七八九幺两洞要腰妖邀]){8,}"
)
_YAO_SOUNDALIKES = re.compile(r"[要腰妖邀]")


def repair_spoken_yao(text: str) -> str:
    """In a long run of spoken digits (≥ 7 real ones), a 幺 heard as 要/腰/妖/邀 is put back."""

    def repair(m: re.Match[str]) -> str:
        run = m[0]
        real = sum(ch in "零〇一二三四五六七八九幺两洞" for ch in run)
        return _YAO_SOUNDALIKES.sub("幺", run) if real >= 7 else run

    return _READING_RUN.sub(repair, text)


def repair_misheard_yao(text: str) -> str:
    """要/腰/妖/邀 next to a long digit run taken for 1 (same length, so offsets into ``text`` still hold)."""
    return _MISHEARD_YAO.sub("1", text)


def join_digit_groups(text: str) -> str:
    """'420 111 1975 1109 2723' → one number: IDs, cards and phones are read and written in groups."""
    return repair_misheard_yao(_DIGIT_GROUP_BREAK.sub("", text))


def normalise(raw: str, tokenizer: Tokenizer) -> NormalisedText:
    """One ASR transcript → the canonical text, its digit form and its jieba tokens."""
    text = collapse_spaces(to_half_width(to_simplified(raw)))
    return NormalisedText(
        raw=raw,
        text=text,
        digits=join_digit_groups(numerals_to_digits(repair_spoken_yao(text))),
        tokens=tuple(tok for tok in tokenizer.cut(text) if tok.strip()),
    )
