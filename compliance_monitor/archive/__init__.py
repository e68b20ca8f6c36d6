"""The archive behind one interface (``Archive``); ``archive_from_url`` picks the backend from a URL."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from compliance_monitor.archive.sqlite import Archive


def archive_from_url(url: str, search_tokenizer: Callable[[str], Iterable[str]], **options: Any) -> Archive:
    """``sqlite:///relative/path``, ``sqlite:////absolute/path`` or a plain file path.

    A PostgreSQL backend (``postgresql://``) would be a second class with the same methods: a writer
    connection plus a reader pool, as SQLite's writer thread and WAL readers are here."""
    if url.startswith("sqlite:///"):
        return Archive(Path(url.removeprefix("sqlite:///")), search_tokenizer, **options)
    if "://" in url:
        raise ValueError(f"unsupported archive URL {url!r}: only sqlite:/// for now")
    return Archive(Path(url), search_tokenizer, **options)
