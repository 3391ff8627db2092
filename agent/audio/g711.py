"""G.711 μ-law and A-law with numpy lookup tables.

``audioop`` is gone in Python 3.13, so the codecs are table lookups: decoding
indexes a 256-entry table, encoding indexes a 65,536-entry table by the raw
16-bit sample. Both are exact ITU-T G.711 (the tables are built from the
reference segment algorithm once, at import, and checked in the tests
against CPython's ``audioop`` for all 65,536 samples).
"""

from __future__ import annotations

import numpy as np

_BIAS = 0x84
_ULAW_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def _ulaw_encode_all(samples: np.ndarray) -> np.ndarray:
    """The G.711 μ-law segment encoder on 14-bit magnitudes, for many samples."""
    value = samples.astype(np.int32) >> 2
    mask = np.where(value < 0, 0x7F, 0xFF)
    value = np.minimum(np.abs(value), 8159) + (_BIAS >> 2)
    segment = np.searchsorted(_ULAW_SEGMENT_ENDS, value)
    code = (segment << 4) | ((value >> (segment + 1)) & 0x0F)
    return (np.where(segment >= 8, 0x7F, code) ^ mask).astype(np.uint8)


def _alaw_encode_all(samples: np.ndarray) -> np.ndarray:
    """The G.711 A-law segment encoder on 13-bit magnitudes, for many samples."""
    value = samples.astype(np.int32) >> 3
    mask = np.where(value >= 0, 0xD5, 0x55)
    value = np.where(value >= 0, value, -value - 1)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, value)
    shift = np.where(segment < 2, 1, segment)
    code = (segment << 4) | ((value >> shift) & 0x0F)
    return (np.where(segment >= 8, 0x7F, code) ^ mask).astype(np.uint8)


def _ulaw_decode_scalar(code: int) -> int:
    code = ~code & 0xFF
    sign = code & 0x80
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return -magnitude if sign else magnitude


def _alaw_decode_scalar(code: int) -> int:
    code ^= 0x55
    sign = code & 0x80
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    if exponent == 0:
        magnitude = (mantissa << 4) + 8
    else:
        magnitude = ((mantissa << 4) + 0x108) << (exponent - 1)
    return magnitude if sign else -magnitude


def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    all_samples = np.arange(65536, dtype=np.uint16).view(np.int16)
    ulaw_enc = _ulaw_encode_all(all_samples)
    alaw_enc = _alaw_encode_all(all_samples)
    ulaw_dec = np.array([_ulaw_decode_scalar(c) for c in range(256)], dtype=np.int16)
    alaw_dec = np.array([_alaw_decode_scalar(c) for c in range(256)], dtype=np.int16)
    return ulaw_enc, ulaw_dec, alaw_enc, alaw_dec


_ULAW_ENCODE, _ULAW_DECODE, _ALAW_ENCODE, _ALAW_DECODE = _tables()


def _as_index(pcm: bytes | np.ndarray) -> np.ndarray:
    samples = np.frombuffer(pcm, dtype=np.int16) if isinstance(pcm, (bytes, bytearray, memoryview)) else pcm
    return samples.astype(np.int16, copy=False).view(np.uint16)


def ulaw_encode(pcm: bytes | np.ndarray) -> bytes:
    """int16 PCM → μ-law bytes."""
    return _ULAW_ENCODE[_as_index(pcm)].tobytes()


def ulaw_decode(data: bytes) -> bytes:
    """μ-law bytes → int16 PCM bytes."""
    return _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)].tobytes()


def alaw_encode(pcm: bytes | np.ndarray) -> bytes:
    """int16 PCM → A-law bytes."""
    return _ALAW_ENCODE[_as_index(pcm)].tobytes()


def alaw_decode(data: bytes) -> bytes:
    """A-law bytes → int16 PCM bytes."""
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)].tobytes()
