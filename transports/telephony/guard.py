"""Call limits with manners: idle hang-up and a maximum duration, said out loud.

``CallGuard`` sits right after the input transport. A call is *active* while
the caller makes sound or presses keys, or while the bot is speaking (as the
output reports it, which for carriers means as their acks report it, so a
long answer still playing at the far end is not "idle"). After ``idle_s`` of
neither it asks ``idle_prompt`` once; after another ``idle_s`` it says
``goodbye`` and ends the call. At ``max_call_s`` it says ``goodbye`` and ends
the call whatever is happening. The goodbye is a ``SpeakFrame`` followed by
an ``EndFrame``, so the output plays it before the line drops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import numpy as np

from agent.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    DTMFFrame,
    EndFrame,
    EventFrame,
    Frame,
    InputAudioFrame,
    SpeakFrame,
    StartFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
)
from agent.node import DOWNSTREAM, Node

logger = logging.getLogger(__name__)


class CallGuard(Node):
    def __init__(
        self,
        *,
        idle_s: float | None = 30.0,
        max_call_s: float | None = None,
        idle_prompt: str | None = "Are you still there?",
        goodbye: str = "Thank you for calling. Goodbye.",
        speech_level: float = 500.0,
    ) -> None:
        super().__init__(name="call-guard")
        self.idle_s, self.max_call_s = idle_s, max_call_s
        self.idle_prompt, self.goodbye = idle_prompt, goodbye
        self.speech_level = speech_level
        self.ended_reason: str | None = None
        self._last_activity = time.monotonic()
        self._bot_speaking = False
        self._prompted = False
        self._started_at = 0.0

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, StartFrame):
            self._started_at = self._last_activity = time.monotonic()
            self.spawn(self._watch(), interruptible=False)
        elif isinstance(frame, InputAudioFrame):
            if self._loud(frame):
                self._active()
        elif isinstance(frame, (DTMFFrame, UserStartedSpeakingFrame, TranscriptionFrame)):
            self._active()
        elif isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True  # not caller activity: an unanswered prompt stays unanswered
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
            self._last_activity = time.monotonic()
        await self.emit(frame, direction)

    def _loud(self, frame: InputAudioFrame) -> bool:
        samples = frame.samples
        return bool(samples.size) and float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) > self.speech_level

    def _active(self) -> None:
        self._last_activity = time.monotonic()
        self._prompted = False

    async def _watch(self) -> None:
        while self.ended_reason is None:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            if self.max_call_s is not None and now - self._started_at >= self.max_call_s:
                await self._end("max_duration")
            elif self.idle_s is not None and not self._bot_speaking and now - self._last_activity >= self.idle_s:
                if self.idle_prompt and not self._prompted:
                    self._prompted = True
                    self._last_activity = now
                    await self.emit(SpeakFrame(text=self.idle_prompt), DOWNSTREAM)
                else:
                    await self._end("idle")

    async def _end(self, reason: str) -> None:
        self.ended_reason = reason
        logger.info("session %s: ending the call (%s)", self.ctx.session_id if self.ctx else "?", reason)
        await self.emit(EventFrame(kind="call_limit", data={"reason": reason}), DOWNSTREAM)
        await self.emit(SpeakFrame(text=self.goodbye, uninterruptible=True), DOWNSTREAM)
        await self.emit(EndFrame(reason=reason), DOWNSTREAM)


@dataclass(slots=True)
class CallLimits:
    """Per-call limits a server applies to every call (None disables one)."""

    idle_s: float | None = None
    max_call_s: float | None = None
    idle_prompt: str | None = "Are you still there?"
    goodbye: str = "Thank you for calling. Goodbye."

    def guard(self) -> list[CallGuard]:
        """The guard node to insert after the input transport (none if unlimited)."""
        if self.idle_s is None and self.max_call_s is None:
            return []
        return [CallGuard(idle_s=self.idle_s, max_call_s=self.max_call_s, idle_prompt=self.idle_prompt,
                          goodbye=self.goodbye)]

    @property
    def hard_limit_s(self) -> float | None:
        """The session's own cut-off: later than the guard, in case the goodbye never drains."""
        return None if self.max_call_s is None else self.max_call_s + 30.0
