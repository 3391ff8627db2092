"""In-process transports: a scripted caller and a recording speaker.

They let tests, benchmarks and ``voxwire demo`` run a whole call without a
network: the input plays prepared audio in real time (or faster), the output
keeps exactly what was played and when, on the same clock the caller used.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agent.frames import EndFrame, StartFrame
from transports.base import InputTransport, OutputTransport


@dataclass(slots=True)
class Segment:
    """Caller audio to play, or a keypad digit, after ``gap_s`` of silence."""

    pcm: np.ndarray | None = None
    gap_s: float = 0.0
    dtmf: str | None = None


class ScriptedInput(InputTransport):
    """Plays segments as 20 ms frames, silence between them, on a real-time clock.

    ``speed`` > 1 plays faster than real time (for throughput tests only: turn
    latency is meaningless then). ``end_after_s`` sends an EndFrame that long
    after the script finishes.
    """

    def __init__(
        self,
        segments: Sequence[Segment],
        *,
        sample_rate: int = 16000,
        frame_ms: int = 20,
        speed: float = 1.0,
        end_after_s: float | None = 0.0,
        name: str | None = None,
    ) -> None:
        super().__init__(sample_rate=sample_rate, name=name)
        self.segments = list(segments)
        self.frame_samples = sample_rate * frame_ms // 1000
        self.speed = speed
        self.end_after_s = end_after_s
        self.clock_start = 0.0
        self.onsets: list[float] = []

    async def process(self, frame, direction):  # type: ignore[no-untyped-def]
        await super().process(frame, direction)
        if isinstance(frame, StartFrame):
            self.spawn(self._play(), interruptible=False)

    def _frames(self):  # type: ignore[no-untyped-def]
        silence = np.zeros(self.frame_samples, dtype=np.int16)
        for segment in self.segments:
            for _ in range(int(round(segment.gap_s * self.sample_rate / self.frame_samples))):
                yield silence, None
            if segment.dtmf:
                yield None, segment.dtmf
            if segment.pcm is not None:
                pcm = segment.pcm
                pad = (-len(pcm)) % self.frame_samples
                pcm = np.concatenate([pcm, np.zeros(pad, dtype=np.int16)])
                for i in range(0, len(pcm), self.frame_samples):
                    yield pcm[i : i + self.frame_samples], ("onset" if i == 0 else None)

    async def _play(self) -> None:
        period = self.frame_samples / self.sample_rate / self.speed
        self.clock_start = next_tick = time.monotonic()
        for samples, event in self._frames():
            if event == "onset":
                self.onsets.append(time.monotonic())
            elif event is not None:
                await self.push_dtmf(event)
                continue
            await self.push_audio(samples.tobytes())
            next_tick += period
            delay = next_tick - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        if self.end_after_s is not None:
            await asyncio.sleep(self.end_after_s)
            await self.emit(EndFrame(reason="script_finished"))


@dataclass(slots=True)
class PlayedChunk:
    t: float
    pcm: bytes


class RecordingOutput(OutputTransport):
    """A real-time speaker that remembers every chunk it played, and when."""

    def __init__(self, *, sample_rate: int | None = None, max_buffer_s: float = 1.0, name: str | None = None) -> None:
        super().__init__(sample_rate=sample_rate, max_buffer_s=max_buffer_s, name=name)
        self.played: list[PlayedChunk] = []

    async def write_audio(self, pcm: bytes) -> None:
        self.played.append(PlayedChunk(time.monotonic(), pcm))

    def audio(self) -> np.ndarray:
        """Everything played, concatenated (silence between turns not included)."""
        if not self.played:
            return np.zeros(0, dtype=np.int16)
        return np.frombuffer(b"".join(c.pcm for c in self.played), dtype=np.int16)
