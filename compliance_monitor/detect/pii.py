"""Format validators for personal data read out on a call: a number is only PII-shaped if it checks out.

- 居民身份证 (GB 11643-1999): 17 digits + check character from the weighted sum mod 11, birth date valid.
- Bank cards: 16–19 digits passing the Luhn check (UnionPay 62…, Visa 4…, Mastercard 51–55…).
- Mainland mobile numbers: 11 digits, 1[3-9]…
"""

from __future__ import annotations

import datetime as dt
import re

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_MOBILE = re.compile(r"1[3-9]\d{9}")


def id_check_char(first17: str) -> str:
    return _ID_CHECK[sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True)) % 11]


def valid_id_card(number: str) -> bool:
    number = number.upper()
    if len(number) != 18 or not number[:17].isdigit() or number[17] not in "0123456789X":
        return False
    try:
        born = dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    if not dt.date(1900, 1, 1) <= born <= dt.date.today():
        return False
    return id_check_char(number[:17]) == number[17]


def luhn_valid(number: str) -> bool:
    if not number.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def valid_bank_card(number: str) -> bool:
    return 16 <= len(number) <= 19 and luhn_valid(number) and not valid_id_card(number)


def valid_mobile(number: str) -> bool:
    return _MOBILE.fullmatch(number) is not None


VALIDATORS = {"id_card": valid_id_card, "bank_card": valid_bank_card, "mobile": valid_mobile}
