"""Caller audio for the browser tests, and measurements on what the page recorded."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import soundfile as sf

from agent.audio import resample

FAKE_MIC_RATE = 48000


def speak(text: str, rate: int = FAKE_MIC_RATE) -> np.ndarray:
    """``text`` spoken by the local piper voice, float32 mono at ``rate``.

    (With espeak-ng's robotic voice, tiny.en heard "hours on Saturday" as "hour
    mon sah to me" in one run of four: a test of the ASR, not of the transport.)
    """
    from tts.piper import load_voice, synthesize_blocking, voice_sample_rate, resolve_voice

    pcm = synthesize_blocking(load_voice(None), text, volume=0.5)
    audio = pcm.astype(np.float32) / 32768.0
    return resample(audio, voice_sample_rate(resolve_voice(None)), rate).astype(np.float32)


def caller_wav(path: Path, script: list[tuple[str | None, float]], rate: int = FAKE_MIC_RATE) -> list[tuple[float, float]]:
    """Write a fake-microphone WAV: ``(text, seconds of silence before it)`` items.

    A ``None`` text adds trailing silence. Returns each utterance's (start, end)
    in seconds, so a test knows what the caller said when.
    """
    parts: list[np.ndarray] = []
    spans: list[tuple[float, float]] = []
    cursor = 0
    for text, pause_s in script:
        parts.append(np.zeros(int(pause_s * rate), dtype=np.float32))
        cursor += int(pause_s * rate)
        if text is not None:
            speech = speak(text, rate)
            spans.append((cursor / rate, (cursor + len(speech)) / rate))
            parts.append(speech)
            cursor += len(speech)
    sf.write(path, np.concatenate(parts), rate, subtype="PCM_16")
    return spans


def envelope_db(x: np.ndarray, rate: int, win_s: float = 0.01) -> np.ndarray:
    """Level per window in dBFS (float signal in [-1, 1])."""
    win = max(1, int(rate * win_s))
    frames = x[: len(x) // win * win].reshape(-1, win).astype(np.float64)
    return 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def segments(
    x: np.ndarray, rate: int, *, threshold_db: float = -45.0, bridge_s: float = 0.4, min_s: float = 0.15,
    win_s: float = 0.01,
) -> list[tuple[float, float]]:
    """Stretches of sound (start, end) in seconds; pauses shorter than ``bridge_s`` are bridged."""
    active = envelope_db(x, rate, win_s) > threshold_db
    found: list[list[float]] = []
    for i in np.flatnonzero(active):
        t = i * win_s
        if found and t - found[-1][1] <= bridge_s:
            found[-1][1] = t + win_s
        else:
            found.append([t, t + win_s])
    return [(a, b) for a, b in found if b - a >= min_s]


def quiet_from(
    x: np.ndarray, rate: int, start_s: float, *, threshold_db: float = -45.0, hold_s: float = 1.0, win_s: float = 0.01,
) -> float | None:
    """The first time at or after ``start_s`` from which ``x`` stays quiet for ``hold_s``."""
    quiet = envelope_db(x, rate, win_s) <= threshold_db
    need = int(round(hold_s / win_s))
    run = 0
    for i in range(int(start_s / win_s), len(quiet)):
        run = run + 1 if quiet[i] else 0
        if run >= need:
            return (i - need + 1) * win_s
    return None


def active_fraction(x: np.ndarray, rate: int, start_s: float, end_s: float, *, threshold_db: float = -45.0) -> float:
    env = envelope_db(x[int(start_s * rate) : int(end_s * rate)], rate)
    return float(np.mean(env > threshold_db)) if len(env) else 0.0


def delay_s(reference: np.ndarray, delayed: np.ndarray, rate: int, *, max_lag_s: float = 1.0) -> tuple[float, float]:
    """How late ``delayed`` is relative to ``reference`` (cross-correlation), and the peak's
    normalised correlation. Both signals are band-limited to 16 kHz sampling first."""
    a = resample(reference.astype(np.float32), rate, 16000)
    b = resample(delayed.astype(np.float32), rate, 16000)
    n = min(len(a), len(b))
    a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    size = 1 << int(np.ceil(np.log2(2 * n)))
    corr = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)
    max_lag = int(max_lag_s * 16000)
    lags = np.concatenate([corr[: max_lag + 1]])  # delayed lags only: the echo cannot come early
    best = int(np.argmax(lags))
    norm = float(np.sqrt(np.sum(a[: n - best] ** 2) * np.sum(b[best:] ** 2))) or 1.0
    return best / 16000.0, float(lags[best] / norm)


def words(text: str) -> str:
    """Lower-case words only, for comparing transcripts."""
    return " ".join(re.findall(r"[a-z']+", text.lower()))
