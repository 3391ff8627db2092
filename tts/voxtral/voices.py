"""Voices: preset names per dialect, and reference clips for zero-shot cloning.

The open-weights presets (``casual_female``…) and the hosted ids (``en_paul_neutral``,
``voice_592``, custom UUIDs) never overlap, and a server given the other family's
name answers with a terse 400. We name the mix-up before any request is sent.
"""

from __future__ import annotations

import base64
import io
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from tts.voxtral.errors import ReferenceClipError, VoiceError
from tts.voxtral.protocol import SAMPLE_RATE, Dialect

log = logging.getLogger(__name__)

OPEN_WEIGHTS_PRESETS: tuple[str, ...] = (
    "ar_male", "casual_female", "casual_male", "cheerful_female", "de_female", "de_male",
    "es_female", "es_male", "fr_female", "fr_male", "hi_female", "hi_male", "it_female",
    "it_male", "neutral_female", "neutral_male", "nl_female", "nl_male", "pt_female", "pt_male",
)  # fmt: skip
"""The 20 presets of Voxtral-4B-TTS-2603 (``voice_embedding/{name}.pt``)."""

HOSTED_PRESETS: tuple[str, ...] = tuple(
    [f"gb_jane_{m}" for m in ("confident", "confused", "curious", "frustrated", "jealousy",
                              "neutral", "sad", "sarcasm", "shameful")]
    + [f"fr_marie_{m}" for m in ("angry", "curious", "excited", "happy", "neutral", "sad")]
    + [f"gb_oliver_{m}" for m in ("angry", "cheerful", "confident", "curious", "excited",
                                  "neutral", "sad")]
    + [f"en_paul_{m}" for m in ("angry", "cheerful", "confident", "excited", "frustrated",
                                "happy", "neutral", "sad")]
)  # fmt: skip
"""Voxtral 2 preset ids of the Mistral API (Voxtral 3 ids look like ``voice_592``)."""

DEFAULT_VOICE = {Dialect.VLLM_OMNI: "neutral_female", Dialect.MISTRAL: "en_paul_neutral"}

_HOSTED_V3 = re.compile(r"^voice_\d+$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


def voice_family(name: str) -> str | None:
    """``"open-weights"``, ``"hosted"`` or ``None`` when the name says neither."""
    if name.lower() in OPEN_WEIGHTS_PRESETS:
        return "open-weights"
    if name in HOSTED_PRESETS or _HOSTED_V3.match(name) or _UUID.match(name):
        return "hosted"
    return None


def check_voice(dialect: Dialect, voice: str, offered: Iterable[str] | None) -> str:
    """The name to send for ``voice``, or a ``VoiceError`` that says what is wrong.

    ``offered`` is the server's own list (``None`` when it could not be fetched; then
    only the family mix-up is caught and the server gets the last word).
    """
    name = voice.strip().lower() if dialect is Dialect.VLLM_OMNI else voice.strip()
    offered_set = set(offered) if offered is not None else None
    if offered_set is not None and name in offered_set:
        return name
    family = voice_family(name)
    if dialect is Dialect.VLLM_OMNI and family == "hosted":
        raise VoiceError(
            f"{voice!r} is a Mistral API voice id, but this is a vLLM-Omni server running the "
            f"open-weights model; use one of its presets, e.g. {_sample(offered_set, OPEN_WEIGHTS_PRESETS)}"
        )
    if dialect is Dialect.MISTRAL and family == "open-weights":
        raise VoiceError(
            f"{voice!r} is an open-weights preset served by vLLM-Omni; the Mistral API uses ids "
            f"such as en_paul_neutral, gb_jane_neutral or voice_592 (server offers: "
            f"{_sample(offered_set, HOSTED_PRESETS)})"
        )
    if offered_set is None:
        return name
    raise VoiceError(
        f"voice {voice!r} is not offered by this {dialect.value} server; it offers: "
        f"{_sample(offered_set, ())}"
    )


def _sample(offered: set[str] | None, fallback: Iterable[str], limit: int = 8) -> str:
    names = sorted(offered) if offered else list(fallback)
    shown = ", ".join(names[:limit])
    return shown + (f" … ({len(names)} in all)" if len(names) > limit else "")


# ------------------------------------------------------------ reference clips

MIN_REFERENCE_S = 3.0
MAX_REFERENCE_S = 25.0
_TRIM_FRAME_S = 0.01
_TRIM_BELOW_PEAK_DB = 40.0
_TRIM_FLOOR = 10 ** (-60 / 20)
_TRIM_PAD_S = 0.15

AudioSource = str | Path | bytes | np.ndarray | tuple[np.ndarray, int]


@dataclass(frozen=True, slots=True)
class ReferenceClip:
    """A cloning reference: mono float32 at 24 kHz, silence trimmed, 3–25 s long."""

    samples: np.ndarray
    trimmed_seconds: float = 0.0

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    def wav_bytes(self) -> bytes:
        """A 16-bit mono 24 kHz WAV file, the format both servers decode."""
        out = io.BytesIO()
        soundfile.write(out, self.samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
        return out.getvalue()

    def base64_wav(self) -> str:
        return base64.b64encode(self.wav_bytes()).decode("ascii")

    def encode(self, dialect: Dialect) -> str:
        """``ref_audio`` as the dialect expects it.

        vLLM-Omni validates ``ref_audio`` as a URL (``http(s)://``, ``file://`` or
        ``data:``) and strips the ``data:`` prefix itself; the Mistral API takes the
        bare base64 of the file.
        """
        if dialect is Dialect.VLLM_OMNI:
            return "data:audio/wav;base64," + self.base64_wav()
        return self.base64_wav()


def load_reference(source: AudioSource, *, sample_rate: int | None = None) -> ReferenceClip:
    """Read, downmix, resample (soxr) and trim a reference clip, then check its length.

    ``source`` is a file path, the bytes of an audio file, or samples (int16 or
    float) with ``sample_rate`` given, or an ``(array, rate)`` tuple.
    """
    samples, rate = _read(source, sample_rate)
    if samples.size == 0:
        raise ReferenceClipError("reference clip is empty")
    if rate != SAMPLE_RATE:
        samples = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    before = len(samples) / SAMPLE_RATE
    samples = trim_silence(samples, SAMPLE_RATE)
    duration = len(samples) / SAMPLE_RATE
    if duration < MIN_REFERENCE_S:
        raise ReferenceClipError(
            f"reference clip has {duration:.1f} s of sound after trimming silence "
            f"(from {before:.1f} s); Voxtral needs {MIN_REFERENCE_S:.0f}–{MAX_REFERENCE_S:.0f} s "
            "of one clear speaker"
        )
    if duration > MAX_REFERENCE_S:
        raise ReferenceClipError(
            f"reference clip is {duration:.1f} s long after trimming silence; Voxtral accepts at most "
            f"{MAX_REFERENCE_S:.0f} s, cut it to one speaker's clean 3–25 s"
        )
    return ReferenceClip(samples=np.ascontiguousarray(samples, dtype=np.float32), trimmed_seconds=before - duration)


def trim_silence(samples: np.ndarray, rate: int) -> np.ndarray:
    """Cut leading and trailing stretches quieter than 40 dB below the loudest 10 ms.

    A little padding is kept so the first consonant is not clipped.
    """
    frame = max(1, int(rate * _TRIM_FRAME_S))
    usable = len(samples) - len(samples) % frame
    if usable == 0:
        return samples
    rms = np.sqrt(np.mean(np.square(samples[:usable].reshape(-1, frame), dtype=np.float64), axis=1))
    threshold = max(float(rms.max()) * 10 ** (-_TRIM_BELOW_PEAK_DB / 20), _TRIM_FLOOR)
    loud = np.flatnonzero(rms > threshold)
    if loud.size == 0:
        raise ReferenceClipError("reference clip is silent")
    pad = int(_TRIM_PAD_S * rate)
    start = max(0, int(loud[0]) * frame - pad)
    end = min(len(samples), (int(loud[-1]) + 1) * frame + pad)
    return samples[start:end]


def _read(source: AudioSource, sample_rate: int | None) -> tuple[np.ndarray, int]:
    if isinstance(source, tuple):
        array, rate = source
        return _as_mono_float(np.asarray(array)), int(rate)
    if isinstance(source, np.ndarray):
        if not sample_rate:
            raise ReferenceClipError("give sample_rate with a numpy reference clip")
        return _as_mono_float(source), sample_rate
    try:
        handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source)
        data, rate = soundfile.read(handle, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        what = "bytes" if isinstance(source, (bytes, bytearray)) else f"file {source}"
        raise ReferenceClipError(f"cannot decode reference audio {what}: {exc}") from exc
    except FileNotFoundError as exc:
        raise ReferenceClipError(f"reference audio file not found: {source}") from exc
    return data.mean(axis=1).astype(np.float32), int(rate)


def _as_mono_float(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind in "iu":
        array = array.astype(np.float32) / (float(np.iinfo(array.dtype).max) + 1.0)
    array = array.astype(np.float32, copy=False)
    if array.ndim == 2:
        # (frames, channels) as soundfile returns; a (channels, frames) array is transposed.
        if array.shape[0] < array.shape[1] and array.shape[0] <= 8:
            array = array.T
        array = array.mean(axis=1, dtype=np.float32)
    elif array.ndim != 1:
        raise ReferenceClipError(f"reference samples must be 1-D or 2-D, got shape {array.shape}")
    return array
