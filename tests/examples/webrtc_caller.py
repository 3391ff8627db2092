"""A Python WebRTC caller that speaks a prepared clip and keeps every sample it hears.

Built on the aiortc caller of the WebRTC tests (``tests/webrtc/webrtc_client.py``):
same offer/answer and data channel, but the microphone plays speech and the
bot's audio is kept as PCM with arrival times, so a test can transcribe it.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from dataclasses import dataclass, field

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from agent.audio import resample
from tests.webrtc.webrtc_client import PyCaller

MIC_RATE = 48000


class ClipTrack(MediaStreamTrack):
    """A microphone that plays ``clip`` (int16 at 48 kHz) after ``delay_s`` of silence, then silence."""

    kind = "audio"

    def __init__(self, clip: np.ndarray, delay_s: float = 0.5) -> None:
        super().__init__()
        self.lead_s = delay_s
        lead = np.zeros(int(delay_s * MIC_RATE), dtype=np.int16)
        self.samples = np.concatenate([lead, clip.astype(np.int16)])
        self.started_at: float | None = None  # monotonic time of the first sample
        self._n = 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        size = 960
        if self.started_at is None:
            self.started_at = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self.started_at + self._n / MIC_RATE - time.monotonic()))
        chunk = self.samples[self._n : self._n + size]
        chunk = np.concatenate([chunk, np.zeros(size - len(chunk), dtype=np.int16)])
        frame = AudioFrame(format="s16", layout="mono", samples=size)
        frame.planes[0].update(chunk.tobytes())
        frame.pts, frame.sample_rate, frame.time_base = self._n, MIC_RATE, fractions.Fraction(1, MIC_RATE)
        self._n += size
        return frame

    def at(self, clip_s: float) -> float:
        """Monotonic time at which second ``clip_s`` of the clip was sent."""
        assert self.started_at is not None
        return self.started_at + self.lead_s + clip_s


@dataclass
class ListeningCaller(PyCaller):
    """``PyCaller`` that keeps the bot's audio (mono int16 at the received rate) with arrival times."""

    heard: list[tuple[float, np.ndarray]] = field(default_factory=list)
    heard_rate: int = MIC_RATE

    async def _read(self, track: MediaStreamTrack) -> None:  # type: ignore[override]
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0].astype(np.int16)
            self.heard_rate = frame.sample_rate
            self.heard.append((time.monotonic(), pcm))

    def pcm(self, since: float = 0.0) -> np.ndarray:
        parts = [pcm for t, pcm in self.heard if t >= since]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def loud_onsets(self, threshold: float = 600.0, quiet_s: float = 0.5) -> list[float]:
        """Arrival times where bot audio starts after at least ``quiet_s`` of near-silence."""
        onsets, last_loud = [], -1e9
        for t, pcm in self.heard:
            if np.abs(pcm).max(initial=0) > threshold:
                if t - last_loud > quiet_s:
                    onsets.append(t)
                last_loud = t
        return onsets


def mic_clip(samples: np.ndarray, rate: int) -> np.ndarray:
    return resample(samples.astype(np.float32), rate, MIC_RATE).astype(np.int16)
