"""Substring search over Chinese text: character unigrams and bigrams in FTS5.

SQLite has no Chinese word breaker, and indexing jieba words loses every query that cuts
differently from the text (起诉 inside 起诉书). Indexing characters instead makes any substring
findable: a query of two or more characters is the phrase of its overlapping bigrams, one character
is a unigram. Grams are built only from the characters FTS5's ``unicode61`` tokenizer keeps as
token characters (categories L*, N*, Co), so its positions line up with ours; punctuation in a
query is checked on the row (``instr``), never in the index.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from compliance_monitor.text.normalise import collapse_spaces, to_half_width, to_simplified


def is_token_char(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat[0] in "LN" or cat == "Co"


def runs(text: str) -> list[str]:
    """Maximal runs of token characters: what unicode61 would see as words, before we cut them up."""
    out, start = [], None
    for i, ch in enumerate(text):
        if is_token_char(ch):
            if start is None:
                start = i
        elif start is not None:
            out.append(text[start:i])
            start = None
    if start is not None:
        out.append(text[start:])
    return out


def grams(text: str) -> tuple[str, str]:
    """(unigrams, bigrams) of ``text``, space-separated, in order: the two indexed columns."""
    parts = runs(text)
    uni = " ".join(ch for run in parts for ch in run)
    bi = " ".join(run[i : i + 2] for run in parts for i in range(len(run) - 1))
    return uni, bi


def _run_expr(run: str) -> str:
    if len(run) == 1:
        return f'uni : "{run}"'
    return 'bi : "' + " ".join(run[i : i + 2] for i in range(len(run) - 1)) + '"'


def match_expr(needles: Iterable[str]) -> str | None:
    """An FTS5 expression every segment containing all ``needles`` satisfies; None when they hold no
    token character (punctuation alone is not searchable). Candidates are confirmed on the row."""
    parts = list(dict.fromkeys(_run_expr(r) for needle in needles for r in runs(needle)))
    return " AND ".join(parts) if parts else None


def normalise_query(query: str) -> str:
    """The query in the archive's canonical text form (as ``normalise`` gives segment text)."""
    return collapse_spaces(to_half_width(to_simplified(query))).strip()
