"""Shared fixtures: one emulator per dialect and one Whisper model for the whole run."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio
import soxr

from agent.frames import Frame
from agent.workers import run_blocking
from transports.base import OutputTransport
from tts.voxtral.emulator import VoxtralEmulator

API_KEY = "sk-emulated"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def vllm_emulator() -> AsyncIterator[VoxtralEmulator]:
    emulator = VoxtralEmulator("vllm-omni", rtf=0.05)
    await emulator.start()
    yield emulator
    await emulator.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def mistral_emulator() -> AsyncIterator[VoxtralEmulator]:
    emulator = VoxtralEmulator("mistral", rtf=0.05, api_key=API_KEY)
    await emulator.start()
    yield emulator
    await emulator.close()


@pytest.fixture
def emulators(vllm_emulator: VoxtralEmulator, mistral_emulator: VoxtralEmulator) -> dict[str, VoxtralEmulator]:
    """Both emulators, with faults and request logs reset around each test."""
    found = {"vllm-omni": vllm_emulator, "mistral": mistral_emulator}
    for emulator in found.values():
        emulator.faults.__init__()  # type: ignore[misc]
        emulator.requests.clear()
        emulator.rtf = 0.05
    yield found
    for emulator in found.values():
        emulator.faults.__init__()  # type: ignore[misc]


@pytest.fixture(scope="session")
def whisper():  # type: ignore[no-untyped-def]
    from stt.models import load_model

    return load_model()


async def transcribe(model, samples: np.ndarray, rate: int) -> str:  # type: ignore[no-untyped-def]
    """Lower-case words Whisper hears in int16 ``samples``."""
    from stt.whisper import transcribe as whisper_transcribe

    audio = samples.astype(np.float32) / 32768.0
    audio = np.concatenate([np.zeros(rate // 4, np.float32), audio, np.zeros(rate // 2, np.float32)])
    if rate != 16000:
        audio = soxr.resample(audio, rate, 16000).astype(np.float32)
    text, _ = await run_blocking(whisper_transcribe, model, audio, pool="stt")
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


class RecordingOutput(OutputTransport):
    """A real-time output transport that keeps what it played, tick by tick."""

    def __init__(self, sample_rate: int = 16000) -> None:
        super().__init__(sample_rate=sample_rate)
        self.ticks: list[tuple[float, bytes | None]] = []

    async def write_audio(self, pcm: bytes) -> None:
        self.ticks.append((time.monotonic(), pcm))

    async def write_silence(self) -> None:
        self.ticks.append((time.monotonic(), None))

    @property
    def audio(self) -> np.ndarray:
        parts = [np.frombuffer(pcm, dtype=np.int16) for _, pcm in self.ticks if pcm]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def first_audio_at(self) -> float | None:
        return next((t for t, pcm in self.ticks if pcm), None)

    def last_audio_at(self) -> float | None:
        return next((t for t, pcm in reversed(self.ticks) if pcm), None)

    def longest_silence_s(self) -> float:
        """Longest run of silent ticks between the first and the last audio."""
        played = [i for i, (_, pcm) in enumerate(self.ticks) if pcm]
        if not played:
            return 0.0
        longest = run = 0
        for _, pcm in self.ticks[played[0] : played[-1] + 1]:
            run = 0 if pcm else run + 1
            longest = max(longest, run)
        return longest * self.chunk_ms / 1000.0


def frames_of(events: list[tuple[float, Frame, int]], cls: type) -> list:
    return [frame for _, frame, _ in events if isinstance(frame, cls)]
