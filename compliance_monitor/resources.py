"""Where the data shipped with the project lives (rule packs, console pages, demo audio).

In a wheel they sit under ``compliance_monitor/_data`` (see pyproject's force-include); in an
editable checkout they are the top-level ``rules/`` and ``ui/`` folders. Never the working dir.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    installed = _PACKAGE_DIR / "_data" / name
    if installed.is_dir():
        return installed
    return _PACKAGE_DIR.parent / name


def default_rules_dir() -> Path:
    return _data_dir("rules")


def ui_dir() -> Path:
    return _data_dir("ui")


def assets_dir() -> Path:
    return _PACKAGE_DIR / "assets"


def default_classifier_dir() -> Path:
    return _PACKAGE_DIR.parent / "models" / "classifier"


def bundled_classifier_dir() -> Path:
    """The small character n-gram classifier shipped with the package (0.8 MB): in force when no full classifier
    has been built at the default path (``scripts/train_classifier.py --ngram-only``, see models/classifier.md)."""
    return assets_dir() / "classifier_ngram"
