"""What the fault tests check a call with: real caller speech, what was heard, what was left behind."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import soxr

from agent.session import Session
from agent.workers import run_blocking
from transports.local import RecordingOutput

_speech: dict[tuple[str, int], np.ndarray] = {}


def speech(text: str, rate: int = 16000) -> np.ndarray:
    """``text`` spoken by piper as int16 at ``rate`` (cached per process)."""
    if (text, rate) not in _speech:
        from tts.piper import load_voice, synthesize_blocking

        voice = load_voice()
        native = synthesize_blocking(voice, text, volume=0.5)
        _speech[(text, rate)] = np.asarray(soxr.resample(native, voice.config.sample_rate, rate), dtype=np.int16)
    return _speech[(text, rate)]


async def heard(model: Any, output: RecordingOutput, since: float = 0.0, until: float = float("inf")) -> str:
    """Lower-case words Whisper hears in what ``output`` played between two instants."""
    from stt.whisper import transcribe

    chunks = [c.pcm for c in output.played if since <= c.t <= until]
    if not chunks:
        return ""
    rate = output.sample_rate or 16000
    audio = np.frombuffer(b"".join(chunks), dtype=np.int16).astype(np.float32) / 32768.0
    pad = np.zeros(rate // 2, dtype=np.float32)
    audio = np.concatenate([pad, audio, pad])
    if rate != 16000:
        audio = soxr.resample(audio, rate, 16000).astype(np.float32)
    text, _ = await run_blocking(transcribe, model, audio, pool="stt")
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def first_audio_after(output: RecordingOutput, t: float) -> float | None:
    return next((c.t for c in output.played if c.t >= t), None)


def longest_gap(output: RecordingOutput, since: float = 0.0) -> float:
    """Longest silence the caller heard between two played chunks after ``since``."""
    times = [c.t for c in output.played if c.t >= since]
    return max((b - a for a, b in zip(times, times[1:])), default=0.0)


def leftover_tasks(session: Session) -> list[asyncio.Task[Any]]:
    """Live tasks still running code of this session's nodes (should be none after it ends)."""
    ours = {id(node) for node in session._root.nodes()}
    found = []
    for task in asyncio.all_tasks():
        if task.done() or task is asyncio.current_task():
            continue
        if any(id(f.f_locals.get("self")) in ours for f in _frames(task)):
            found.append(task)
    owned = [t for node in session._root.nodes() for t in (*node._tasks, node._worker) if t and not t.done()]
    return found + [t for t in owned if t not in found]


@contextmanager
def loop_errors() -> Iterator[list[dict[str, Any]]]:
    """Collect what reaches the event loop's exception handler (exceptions that escaped)."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
    finally:
        loop.set_exception_handler(previous)


def _frames(task: asyncio.Task[Any]) -> list[Any]:
    """Every frame of a suspended task, innermost last (``get_stack`` gives only the outer one)."""
    frames, awaiting = [], task.get_coro()
    while awaiting is not None:
        frame = getattr(awaiting, "cr_frame", None) or getattr(awaiting, "gi_frame", None)
        if frame is not None:
            frames.append(frame)
        awaiting = getattr(awaiting, "cr_await", None) or getattr(awaiting, "gi_yieldfrom", None)
    return frames
