"""Scripted bot nodes for telephony tests (stand-ins until the demo bot exists)."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from agent.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    DTMFFrame,
    EndFrame,
    EventFrame,
    Frame,
    InputAudioFrame,
    InterruptFrame,
    OutputAudioFrame,
    PlayoutProgressFrame,
    StartFrame,
    TTSStoppedFrame,
)
from agent.node import UPSTREAM, Node


class TalkerBot(Node):
    """Speaks ``parts`` (audio, text) at start; barges out when the caller gets loud.

    The barge-in detector is a plain energy gate (two loud 20 ms frames in a
    row): the tests exercise the transport's reaction, not VAD quality.
    """

    def __init__(self, parts: list[tuple[np.ndarray, str]], *, rate: int = 8000, start_after_s: float = 0.2,
                 hang_up_after_s: float | None = None, loudness: float = 1500.0) -> None:
        super().__init__(name="talker")
        self.parts, self.rate, self.start_after_s = parts, rate, start_after_s
        self.hang_up_after_s, self.loudness = hang_up_after_s, loudness
        self.upstream: list[tuple[float, Frame]] = []
        self.digits: list[str] = []
        self.events: list[str] = []
        self.heard: list[np.ndarray] = []
        self.interrupted_at: float | None = None
        self.speaking = False
        self._loud_run = 0
        self._script_task: asyncio.Task[None] | None = None

    async def process(self, frame: Frame, direction: int) -> None:
        if direction == UPSTREAM:
            self.upstream.append((time.monotonic(), frame))
            if isinstance(frame, BotStartedSpeakingFrame):
                self.speaking = True
            elif isinstance(frame, BotStoppedSpeakingFrame):
                self.speaking = False
            await self.emit(frame, direction)
            return
        if isinstance(frame, StartFrame):
            await self.emit(frame, direction)
            self._script_task = self.spawn(self._script(), interruptible=False)
            return
        if isinstance(frame, InputAudioFrame):
            self.heard.append(frame.samples.copy())
            level = float(np.sqrt(np.mean(frame.samples.astype(np.float64) ** 2)))
            self._loud_run = self._loud_run + 1 if level > self.loudness else 0
            if self._loud_run == 2 and self.speaking and self.interrupted_at is None:
                self.interrupted_at = time.monotonic()
                if self._script_task is not None:
                    self._script_task.cancel()  # stop "synthesizing", as a TTS node would
                await self.emit(InterruptFrame(turn_id=1))
            return
        if isinstance(frame, DTMFFrame):
            self.digits.append(frame.digit)
            return
        if isinstance(frame, EventFrame):
            self.events.append(frame.kind)
        await self.emit(frame, direction)

    async def _script(self) -> None:
        await asyncio.sleep(self.start_after_s)
        for audio, text in self.parts:
            await self.emit(OutputAudioFrame(pcm=audio.tobytes(), sample_rate=self.rate, text=text, turn_id=1))
        await self.emit(TTSStoppedFrame(turn_id=1))
        if self.hang_up_after_s is not None:
            await asyncio.sleep(self.hang_up_after_s)
            await self.emit(EndFrame(reason="bot_hangup"))

    def of_type(self, kind: type) -> list[tuple[float, Frame]]:
        return [(t, f) for t, f in self.upstream if isinstance(f, kind)]

    def progress(self) -> list[PlayoutProgressFrame]:
        return [f for _, f in self.of_type(PlayoutProgressFrame)]  # type: ignore[misc]


class ScriptedTTS(Node):
    """Stands in for a TTS node: ``SpeakFrame(text)`` → that text's pre-made audio."""

    def __init__(self, voices: dict[str, np.ndarray], rate: int = 8000) -> None:
        super().__init__(name="scripted-tts")
        self.voices, self.rate = voices, rate
        self.spoken: list[str] = []
        self.ended: str | None = None

    async def process(self, frame: Frame, direction: int) -> None:
        from agent.frames import SpeakFrame

        if isinstance(frame, SpeakFrame) and direction != UPSTREAM:
            self.spoken.append(frame.text)
            audio = self.voices[frame.text]
            await self.emit(OutputAudioFrame(pcm=audio.tobytes(), sample_rate=self.rate, text=frame.text,
                                             uninterruptible=frame.uninterruptible))
            await self.emit(TTSStoppedFrame())
            return
        if isinstance(frame, EndFrame):
            self.ended = frame.reason
        await self.emit(frame, direction)
