"""Shared fixtures of the example tests: one tiny.en Whisper to hear what callers heard."""

from __future__ import annotations

import re

import numpy as np
import pytest

from agent.audio import resample


@pytest.fixture(scope="session")
def whisper():  # type: ignore[no-untyped-def]
    from stt.models import load_model

    return load_model(None)


def heard(model, samples: np.ndarray, rate: int) -> str:  # type: ignore[no-untyped-def]
    """Lower-case words tiny.en hears in int16 ``samples`` (what a caller would have heard).

    Each stretch of sound is transcribed on its own: Whisper makes up words in
    long silences (a phone line between prompts), which a caller would not hear.
    """
    from stt.whisper import transcribe

    audio = samples.astype(np.float32) / 32768.0
    if rate != 16000:
        audio = resample(audio, rate, 16000).astype(np.float32)
    words = []
    for start, end in sound_spans(audio, 16000):
        clip = np.concatenate([np.zeros(4000, np.float32), audio[start:end], np.zeros(8000, np.float32)])
        text, _ = transcribe(model, clip, language="en")
        words += re.findall(r"[a-z0-9']+", text.lower())
    return " ".join(words)


def sound_spans(audio: np.ndarray, rate: int, *, gap_s: float = 0.8, level: float = 0.01) -> list[tuple[int, int]]:
    """Sample ranges of sound, split at silences longer than ``gap_s``."""
    win = rate // 100
    loud = np.flatnonzero(np.abs(audio[: len(audio) // win * win]).reshape(-1, win).max(axis=1) > level)
    spans: list[list[int]] = []
    for i in loud:
        if spans and i - spans[-1][1] <= gap_s * 100:
            spans[-1][1] = i + 1
        else:
            spans.append([i, i + 1])
    return [(max(0, a * win - win * 10), min(len(audio), b * win + win * 10)) for a, b in spans]
