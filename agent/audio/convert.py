"""Sample format conversions, vectorised (never a per-sample Python loop)."""

from __future__ import annotations

from numbers import Integral

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


def pcm_problem(num_bytes: int, sample_rate: object, channels: object) -> str | None:
    """What makes interleaved int16 PCM of this shape unusable, or None if it is fine.

    Checked where audio enters the graph, so a bad format is named there instead
    of surfacing as a numpy error (reshape, division by zero) in a node downstream.
    """
    if not isinstance(sample_rate, Integral) or isinstance(sample_rate, bool) or sample_rate <= 0:
        return f"sample rate {sample_rate!r} Hz is not usable (a positive whole number is needed)"
    if not isinstance(channels, Integral) or isinstance(channels, bool) or channels < 1:
        return f"channel count {channels!r} is not usable (at least 1 is needed)"
    if num_bytes % (2 * channels):
        return f"{num_bytes} bytes is not whole {channels}-channel int16 samples (8-bit or truncated audio?)"
    return None


def rms_dbfs(samples: np.ndarray) -> float:
    """Level of int16 audio in dBFS (-inf for digital silence)."""
    if samples.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64)))))
    return 20.0 * np.log10(rms / 32768.0) if rms > 0 else float("-inf")
