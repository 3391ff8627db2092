"""Sample format conversions, vectorised (never a per-sample Python loop)."""

from __future__ import annotations

import numpy as np

_INT16_SCALE = 32767.0


def float_to_int16(samples: np.ndarray) -> np.ndarray:
    """float in [-1, 1] → int16, clipped (TTS models overshoot)."""
    scaled = np.clip(samples, -1.0, 1.0) * _INT16_SCALE
    return np.rint(scaled).astype(np.int16)


def int16_to_float(samples: np.ndarray | bytes) -> np.ndarray:
    """int16 (array or PCM bytes) → float32 in [-1, 1)."""
    if isinstance(samples, (bytes, bytearray, memoryview)):
        samples = np.frombuffer(samples, dtype=np.int16)
    return samples.astype(np.float32) / 32768.0


def to_mono(samples: np.ndarray, channels: int) -> np.ndarray:
    """Average interleaved channels down to one."""
    if channels == 1:
        return samples
    mixed = samples.reshape(-1, channels).astype(np.int32).mean(axis=1)
    return mixed.astype(np.int16)


def rms_dbfs(samples: np.ndarray) -> float:
    """Level of int16 audio in dBFS (-inf for digital silence)."""
    if samples.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64)))))
    return 20.0 * np.log10(rms / 32768.0) if rms > 0 else float("-inf")
