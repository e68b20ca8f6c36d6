"""Format validators for personal data read out on a call: a number is only PII-shaped if it checks out.

- 居民身份证 (GB 11643-1999): 17 digits + check character from the weighted sum mod 11, birth date valid.
- Bank cards: 16–19 digits passing the Luhn check (UnionPay 62…, Visa 4…, Mastercard 51–55…).
- Mainland mobile numbers: 11 digits, 1[3-9]…

Each runs on every number-shaped match a segment has, so they avoid per-digit Python loops: the
arithmetic is done by ``map`` and ``sum`` over slices, and the cheap checks come first.
"""

from __future__ import annotations

import datetime as dt
import re
from operator import mul

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_ID_LAST = frozenset("0123456789X")
_EARLIEST_BIRTH = dt.date(1900, 1, 1)
_DIGIT_VALUE = bytes.maketrans(b"0123456789", bytes(range(10)))
_LUHN_DOUBLED = bytes.maketrans(bytes(range(10)), bytes((0, 2, 4, 6, 8, 1, 3, 5, 7, 9)))  # doubled, digits summed
_MOBILE = re.compile(r"1[3-9]\d{9}")


def _digit_values(number: str) -> bytes:
    """The value of each digit of a string of decimal digits, a byte each."""
    if not number.isascii():  # digits of another script (\\d matches them too)
        number = "".join(str(int(d)) for d in number)
    return number.encode("ascii").translate(_DIGIT_VALUE)


def id_check_char(first17: str) -> str:
    return _ID_CHECK[sum(map(mul, _digit_values(first17), _ID_WEIGHTS)) % 11]


def valid_id_card(number: str) -> bool:
    number = number.upper()
    if len(number) != 18 or not number[:17].isdecimal() or number[17] not in _ID_LAST:
        return False
    if id_check_char(number[:17]) != number[17]:  # rejects 10 in 11 numbers before any date is built
        return False
    try:
        born = dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    return _EARLIEST_BIRTH <= born <= dt.date.today()


def luhn_valid(number: str) -> bool:
    if not number.isdecimal():
        return False
    values = _digit_values(number)
    return (sum(values[-1::-2]) + sum(values[-2::-2].translate(_LUHN_DOUBLED))) % 10 == 0


def valid_bank_card(number: str) -> bool:
    return 16 <= len(number) <= 19 and luhn_valid(number) and not valid_id_card(number)


def valid_mobile(number: str) -> bool:
    return _MOBILE.fullmatch(number) is not None


VALIDATORS = {"id_card": valid_id_card, "bank_card": valid_bank_card, "mobile": valid_mobile}
