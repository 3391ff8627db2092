"""Caller audio and call plumbing for the speech tests (real piper speech)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence

import numpy as np
import soxr

from agent import Session
from agent.frames import Frame, InputAudioFrame
from agent.pipeline import NodeSpec

_speech_cache: dict[tuple[str, int], np.ndarray] = {}


def speech(text: str, rate: int = 16000) -> np.ndarray:
    """``text`` spoken by piper (peak about -6 dBFS) as int16 at ``rate``; cached per process."""
    key = (text, rate)
    if key not in _speech_cache:
        from tts.piper import load_voice, synthesize_blocking

        voice = load_voice()
        native = synthesize_blocking(voice, text, volume=0.5)
        resampled = soxr.resample(native, voice.config.sample_rate, rate)
        _speech_cache[key] = np.asarray(resampled, dtype=np.int16)
    return _speech_cache[key]


def true_bounds(audio: np.ndarray, rate: int, offset_s: float = 0.0) -> tuple[float, float]:
    """Onset and offset (seconds) of speech in ``audio``: its -40 dBFS points."""
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > 32768 * 10 ** (-40 / 20))
    return offset_s + loud[0] / rate, offset_s + (loud[-1] + 1) / rate


def silence(seconds: float, rate: int) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.int16)


def add_noise(audio: np.ndarray, dbfs: float, seed: int = 7) -> np.ndarray:
    """White noise of RMS ``dbfs`` added to int16 audio."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(len(audio)) * 32768 * 10 ** (dbfs / 20)
    return np.clip(audio + noise, -32768, 32767).astype(np.int16)


def hum(seconds: float, rate: int, dbfs: float) -> np.ndarray:
    """60 Hz mains hum with two harmonics, RMS ``dbfs``."""
    t = np.arange(int(seconds * rate)) / rate
    wave = np.sin(2 * np.pi * 60 * t) + 0.5 * np.sin(2 * np.pi * 120 * t) + 0.3 * np.sin(2 * np.pi * 180 * t)
    wave *= 32768 * 10 ** (dbfs / 20) / np.sqrt(np.mean(wave**2))
    return wave.astype(np.int16)


def input_frames(audio: np.ndarray, rate: int, ms: int = 20, start_pts: float = 0.0) -> list[InputAudioFrame]:
    step = rate * ms // 1000
    return [
        InputAudioFrame(pcm=audio[i : i + step].tobytes(), sample_rate=rate, pts=start_pts + i / rate)
        for i in range(0, len(audio) - step + 1, step)
    ]


def words(text: str) -> list[str]:
    """Lower-case words without punctuation, for comparing transcripts."""
    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    import jiwer

    return jiwer.wer(" ".join(words(reference)), " ".join(words(hypothesis)) or "<empty>")


async def call(
    graph: NodeSpec,
    audio: np.ndarray,
    rate: int,
    *,
    until: Callable[[list[Frame]], bool],
    timeout: float = 20.0,
    pushes: Sequence[Frame] = (),
    start_pts: float = 0.0,
    realtime: bool = False,
) -> list[Frame]:
    """Play ``audio`` into a session; return every frame that left the graph.

    Audio goes in as fast as the graph takes it, or paced like a live caller
    with ``realtime`` (needed where timing matters, e.g. partial transcripts).

    The session ends once ``until(frames_seen)`` holds (or the timeout passes,
    which fails the test with what was seen so far).
    """
    seen: list[Frame] = []
    arrived = asyncio.Event()
    session = Session(graph, input_sample_rate=rate)

    def observe(frame: Frame, direction: int) -> None:
        seen.append(frame)
        arrived.set()

    session.subscribe(observe)
    running = asyncio.create_task(session.run())
    await asyncio.wait_for(session.started.wait(), 30)
    for frame in pushes:
        await session.push(frame)
    loop = asyncio.get_running_loop()
    began = loop.time()
    for frame in input_frames(audio, rate, start_pts=start_pts):
        if realtime:
            await asyncio.sleep(max(0.0, began + frame.pts - start_pts - loop.time()))
        await session.push(frame)
    try:
        async with asyncio.timeout(timeout):
            while not until(seen):
                arrived.clear()
                await arrived.wait()
    except TimeoutError:
        raise AssertionError(f"condition not met within {timeout} s; saw {[type(f).__name__ for f in seen][-20:]}") from None
    finally:
        await session.end()
        await asyncio.wait_for(running, 10)
    return seen
