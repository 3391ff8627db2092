"""Silero VAD on plain onnxruntime: one model per process, state per stream.

The ``silero-vad`` wheel ships ``silero_vad.onnx`` but its Python package
imports torch, so the file is located with ``importlib.util.find_spec`` (which
does not execute the package) and run directly. Every stream keeps only its own
recurrent state and audio context; the ``InferenceSession`` is shared, because
onnxruntime allows concurrent ``run`` calls on one session.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: Samples per model window, and samples of the previous window the model
#: expects in front of it (Silero v5/v6 ONNX are trained with this context;
#: without it speech probabilities collapse).
WINDOW_SAMPLES = {16000: 512, 8000: 256}
CONTEXT_SAMPLES = {16000: 64, 8000: 32}
_STATE_SHAPE = (2, 1, 128)


class SileroModelNotFound(RuntimeError):
    """The ONNX file is missing; the message says what to install."""


def find_silero_model() -> Path:
    """Path of ``silero_vad.onnx`` inside the installed ``silero-vad`` wheel."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise SileroModelNotFound(
            "Silero VAD model not found: install it with "
            "`pip install --no-deps silero-vad==6.2.3` (only its bundled ONNX file is used; "
            "torch is not needed)"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "silero_vad.onnx"
        if candidate.is_file():
            return candidate
    raise SileroModelNotFound(
        f"silero_vad is installed at {list(spec.submodule_search_locations)} but has no "
        "data/silero_vad.onnx; reinstall with `pip install --no-deps --force-reinstall silero-vad`"
    )


_session_lock = threading.Lock()
_session = None
load_count = 0  # how many times the model was loaded in this process (tests assert 1)


def shared_session():  # -> onnxruntime.InferenceSession
    """The process-wide Silero session, loaded on first use (single-threaded ops).

    One thread per run keeps the per-window cost flat and predictable: the model
    is tiny, so thread hand-off would cost more than it saves, and many
    concurrent calls parallelise across sessions instead.
    """
    global _session, load_count
    if _session is None:
        with _session_lock:
            if _session is None:
                import onnxruntime

                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = 1
                options.inter_op_num_threads = 1
                options.log_severity_level = 3
                path = find_silero_model()
                _session = onnxruntime.InferenceSession(
                    str(path), sess_options=options, providers=["CPUExecutionProvider"]
                )
                load_count += 1
                logger.info("loaded Silero VAD from %s", path)
    return _session


class SileroStream:
    """Speech probability for consecutive windows of one audio stream."""

    __slots__ = (
        "sample_rate", "window", "_context_len", "_session", "_input", "_state", "_sr", "_saved"
    )

    def __init__(self, sample_rate: int = 16000) -> None:
        if sample_rate not in WINDOW_SAMPLES:
            raise ValueError(f"Silero runs at 8000 or 16000 Hz, not {sample_rate}")
        self.sample_rate = sample_rate
        self.window = WINDOW_SAMPLES[sample_rate]
        self._context_len = CONTEXT_SAMPLES[sample_rate]
        self._session = shared_session()
        self._sr = np.array(sample_rate, dtype=np.int64)
        # One reusable input buffer: [context | window]; the context is the tail
        # of the previous window, shifted in place after every call.
        self._input = np.zeros((1, self._context_len + self.window), dtype=np.float32)
        self._state = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._saved = np.zeros(self._context_len, dtype=np.float32)

    def reset(self) -> None:
        """Forget the past: the next window is treated as the start of a stream."""
        self._input[:] = 0.0
        self._state = np.zeros(_STATE_SHAPE, dtype=np.float32)

    def skip(self, window: np.ndarray) -> None:
        """Advance the context over a window without running the model."""
        self._saved[:] = self._input[0, : self._context_len]
        self._input[0, : self._context_len] = _as_float(window[-self._context_len :])

    def rewind(self) -> None:
        """Undo the last ``skip`` so that window can still be scored."""
        self._input[0, : self._context_len] = self._saved

    def __call__(self, window: np.ndarray) -> float:
        """Probability (0..1) that this window (int16 or float32) holds speech."""
        if len(window) != self.window:
            raise ValueError(f"expected {self.window} samples, got {len(window)}")
        self._input[0, self._context_len :] = _as_float(window)
        out, self._state = self._session.run(
            None, {"input": self._input, "state": self._state, "sr": self._sr}
        )
        self._input[0, : self._context_len] = self._input[0, -self._context_len :]
        return float(out[0, 0])


def _as_float(samples: np.ndarray) -> np.ndarray:
    if samples.dtype == np.int16:
        return samples.astype(np.float32) * (1.0 / 32768.0)
    return samples
