"""Chinese word segmentation with a private jieba instance.

``jieba.cut`` and ``jieba.add_word`` work on a module-level singleton, so words added by one
rule pack (or one test) would leak into every other user in the process. Each ``Tokenizer``
owns its own ``jieba.Tokenizer`` and its own dictionary.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import jieba

__all__ = ["Tokenizer", "parse_user_dict"]

UserDictEntry = tuple[str, int | None, str | None]


def parse_user_dict(path: Path) -> list[UserDictEntry]:
    """Entries of a jieba user dictionary: ``word [freq] [tag]`` per line.

    Blank lines and lines starting with ``#`` are skipped (jieba's own loader would take them
    as words). A malformed line raises ``ValueError`` naming the file and line, so a broken
    rules file fails at start-up rather than silently segmenting differently.
    """
    entries: list[UserDictEntry] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entries.append(_parse_line(line, f"{path}:{lineno}"))
    return entries


def _parse_line(line: str, where: str) -> UserDictEntry:
    word, *rest = line.split()
    freq: int | None = None
    tag: str | None = None
    if rest and rest[0].isdigit():
        freq = int(rest.pop(0))
    if rest and rest[0].isalpha() and rest[0].isascii():
        tag = rest.pop(0)
    if rest:
        raise ValueError(f"{where}: expected 'word [freq] [tag]', got {line!r}")
    return word, freq, tag


class Tokenizer:
    """jieba segmentation with the domain dictionary loaded.

    Construction loads jieba's main dictionary (about a second; jieba may write a cache file
    to the temp dir). After that, ``cut`` and ``cut_for_search`` only read the dictionary and
    are safe to call from several threads; ``add_word`` mutates it and belongs to set-up.
    """

    def __init__(self, user_dict: Path | None = None, extra_words: Iterable[str] = ()) -> None:
        # jieba logs "Building prefix dict..." at DEBUG to stderr through its own handler.
        jieba.setLogLevel(logging.WARNING)
        self._jieba = jieba.Tokenizer()
        self._jieba.initialize()  # now, not lazily inside the first cut() on the hot path
        if user_dict is not None:
            for word, freq, tag in parse_user_dict(Path(user_dict)):
                self._jieba.add_word(word, freq, tag)
        for word in extra_words:
            self.add_word(word)

    def add_word(self, word: str, freq: int | None = None, tag: str | None = None) -> None:
        """Add one word; without ``freq`` jieba picks one just high enough to keep it whole."""
        word = word.strip()
        if word:
            self._jieba.add_word(word, freq, tag)

    def __contains__(self, word: str) -> bool:
        """Whether ``word`` is a dictionary word (not a mere prefix of one)."""
        return bool(self._jieba.FREQ.get(word))

    def cut(self, text: str) -> list[str]:
        """Precise-mode segmentation with HMM for unknown words (names, new slang)."""
        return list(self._jieba.cut(text, cut_all=False, HMM=True))

    def cut_for_search(self, text: str) -> list[str]:
        """Segmentation for a search index: each word plus its dictionary sub-words.

        ``司法拘留`` yields ``司法``, ``拘留`` and ``司法拘留``, so a query for any of them finds it.
        """
        return list(self._jieba.cut_for_search(text, HMM=True))
