"""File dubbing: keep each dubbed sentence where its source sentence was.

``DubCollector`` ends the file graph instead of a speaker: it takes the
dubbed audio of each turn and the source turn's start and end (the VAD's
``pts``, media time of the file). :func:`place` then lays every dubbed sentence
at its source sentence's start, time-stretched (sox ``tempo``, pitch kept) only
when it would run into the next one, by at most ``max_speedup``; past that the
next sentence waits instead.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass, field

import numpy as np

from agent.frames import Frame, OutputAudioFrame, UserStartedSpeakingFrame, UserStoppedSpeakingFrame
from agent.node import Node

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class DubbedSentence:
    turn_id: int
    source_start: float
    source_end: float
    audio: list[np.ndarray] = field(default_factory=list)

    @property
    def samples(self) -> np.ndarray:
        return np.concatenate(self.audio) if self.audio else np.zeros(0, dtype=np.int16)


class DubCollector(Node):
    """The end of the file graph: gathers dubbed audio per source turn, unpaced."""

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name=name or "dub_collector")
        self.turns: dict[int, DubbedSentence] = {}
        self.rate = 0

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, UserStartedSpeakingFrame):
            self.turns[frame.turn_id] = DubbedSentence(frame.turn_id, frame.pts, frame.pts)
        elif isinstance(frame, UserStoppedSpeakingFrame) and frame.turn_id in self.turns:
            self.turns[frame.turn_id].source_end = frame.pts
        elif isinstance(frame, OutputAudioFrame):
            self.rate = frame.sample_rate
            turn = self.turns.get(frame.turn_id)
            if turn is not None:
                turn.audio.append(frame.samples.copy())
            return  # consumed: this is where the audio goes
        await self.emit(frame, direction)

    def sentences(self) -> list[DubbedSentence]:
        return sorted((t for t in self.turns.values() if t.audio), key=lambda t: t.source_start)


@dataclass(slots=True)
class Placement:
    turn_id: int
    source_start: float
    start: float
    duration: float
    speedup: float


def stretch(samples: np.ndarray, rate: int, speedup: float) -> np.ndarray:
    """Play ``speedup`` times faster without changing pitch (sox's WSOLA ``tempo``)."""
    if abs(speedup - 1.0) < 0.01:
        return samples
    sox = shutil.which("sox")
    if sox is None:
        logger.warning("sox is not installed (apt-get install sox): dubbed sentences are not time-stretched")
        return samples
    raw = ["-t", "raw", "-r", str(rate), "-e", "signed", "-b", "16", "-c", "1"]
    done = subprocess.run([sox, *raw, "-", *raw, "-", "tempo", "-s", f"{speedup:.4f}"],
                          input=samples.astype("<i2").tobytes(), capture_output=True, check=True)
    return np.frombuffer(done.stdout, dtype="<i2").astype(np.int16)


def place(sentences: list[DubbedSentence], rate: int, *, source_s: float = 0.0, max_speedup: float = 1.35,
          gap_s: float = 0.1) -> tuple[np.ndarray, list[Placement]]:
    """The dubbed track and where each sentence went. Blocking (sox)."""
    placed: list[tuple[int, np.ndarray]] = []
    report: list[Placement] = []
    cursor = 0.0
    for i, sentence in enumerate(sentences):
        audio = sentence.samples
        start = max(sentence.source_start, cursor)
        room = (sentences[i + 1].source_start - gap_s - start) if i + 1 < len(sentences) else float("inf")
        speedup = 1.0
        if len(audio) / rate > room > 0:
            speedup = min(max_speedup, len(audio) / rate / room)
            audio = stretch(audio, rate, speedup)
            if speedup < max_speedup:
                audio = audio[: int(room * rate)]  # sox rounds up by a few samples
        placed.append((int(round(start * rate)), audio))
        report.append(Placement(sentence.turn_id, sentence.source_start, start, len(audio) / rate, speedup))
        cursor = start + len(audio) / rate + gap_s
    length = max([int(source_s * rate)] + [offset + len(audio) for offset, audio in placed])
    track = np.zeros(length, dtype=np.int32)
    for offset, audio in placed:
        track[offset : offset + len(audio)] += audio
    return np.clip(track, -32768, 32767).astype(np.int16), report
