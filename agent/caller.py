"""A scripted phone caller that listens: the input side of ``voxwire demo``.

Each step is an utterance played into the graph as 20 ms frames in real time.
A step starts either a moment after the bot stops talking (a polite caller),
or a set time after the bot starts (a backchannel or a barge-in), which the
caller knows because the output's ``BotStarted/StoppedSpeaking`` frames travel
upstream to it. It writes down exactly when each utterance began and ended,
so latency is measured from the true end of speech, not from a VAD's guess.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from agent.frames import BotStartedSpeakingFrame, BotStoppedSpeakingFrame, EndFrame, Frame, StartFrame
from agent.node import UPSTREAM
from transports.base import InputTransport


@dataclass(slots=True)
class Step:
    """An utterance; ``during_bot_s`` set means: speak that long after the bot starts."""

    text: str
    pcm: np.ndarray
    after_bot_s: float = 0.6
    during_bot_s: float | None = None
    kind: str = "turn"  # "turn" | "backchannel" | "barge_in"


@dataclass(slots=True)
class Spoken:
    step: Step
    start_t: float
    end_t: float


class ScriptedCaller(InputTransport):
    """Plays its steps against the bot's speaking state; silence in between."""

    def __init__(self, steps: list[Step], *, sample_rate: int = 8000, first_wait_s: float = 12.0,
                 name: str | None = None) -> None:
        super().__init__(sample_rate=sample_rate, name=name or "caller")
        self.steps = steps
        self.frame_samples = sample_rate // 50
        self.spoken: list[Spoken] = []
        self.sent: list[tuple[float, bytes]] = []
        self.bot_speaking = False
        self._bot_started = asyncio.Event()
        self._bot_stopped = asyncio.Event()
        self._bot_stopped.set()
        self._first_wait_s = first_wait_s
        self._pending: deque[tuple[bytes, asyncio.Future[float] | None]] = deque()

    async def process(self, frame: Frame, direction: int) -> None:
        if direction == UPSTREAM:
            if isinstance(frame, BotStartedSpeakingFrame):
                self.bot_speaking = True
                self._bot_stopped.clear()
                self._bot_started.set()
            elif isinstance(frame, BotStoppedSpeakingFrame):
                self.bot_speaking = False
                self._bot_started.clear()
                self._bot_stopped.set()
            return  # nothing goes upstream of the caller
        await super().process(frame, direction)
        if isinstance(frame, StartFrame):
            self.spawn(self._call(), interruptible=False)

    async def _call(self) -> None:
        self._next_tick = time.monotonic()
        clock = self.spawn(self._silence_while_idle(), interruptible=False)
        # The bot greets first: wait for its greeting to finish.
        await self._wait_for(self._bot_started, self._first_wait_s)
        for step in self.steps:
            if step.during_bot_s is not None:
                await self._wait_for(self._bot_started, 15.0)
                await asyncio.sleep(step.during_bot_s)
            else:
                await self._wait_quiet(step.after_bot_s)
            await self._speak(step)
        # Hear the last answer out before hanging up.
        if not self.bot_speaking:
            await self._wait_for(self._bot_started, 8.0)
        await self._wait_quiet(1.0)
        clock.cancel()
        await self.emit(EndFrame(reason="caller_finished"))

    async def _wait_for(self, event: asyncio.Event, timeout: float) -> None:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def _wait_quiet(self, quiet_s: float, timeout: float = 30.0) -> None:
        """Wait until the bot has been silent for ``quiet_s``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await self._wait_for(self._bot_stopped, deadline - time.monotonic())
            await asyncio.sleep(quiet_s)
            if not self.bot_speaking:
                return

    async def _silence_while_idle(self) -> None:
        """The one clock: each tick sends the next utterance frame, or silence.

        A phone line never stops, so the graph sees continuous audio.
        """
        silence = np.zeros(self.frame_samples, dtype=np.int16).tobytes()
        while True:
            if self._pending:
                pcm, last = self._pending.popleft()
                await self._send(pcm)
                if last is not None:
                    last.set_result(time.monotonic())
            else:
                await self._send(silence)
            await self._tick()

    async def _speak(self, step: Step) -> None:
        pcm = step.pcm
        pcm = np.concatenate([pcm, np.zeros((-len(pcm)) % self.frame_samples, dtype=np.int16)])
        loop = asyncio.get_running_loop()
        first, last = loop.create_future(), loop.create_future()
        frames = [pcm[i : i + self.frame_samples].tobytes() for i in range(0, len(pcm), self.frame_samples)]
        for i, frame in enumerate(frames):
            marker = first if i == 0 else last if i == len(frames) - 1 else None
            self._pending.append((frame, marker))
        start = await first
        end = await last
        # The first frame's send time is its start; the last frame ends one frame later.
        self.spoken.append(Spoken(step, start, end + self.frame_samples / self.sample_rate))

    async def _send(self, pcm: bytes) -> None:
        self.sent.append((time.monotonic(), pcm))
        await self.push_audio(pcm)

    async def _tick(self) -> None:
        self._next_tick += self.frame_samples / self.sample_rate  # type: ignore[operator]
        delay = self._next_tick - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            await asyncio.sleep(0)
