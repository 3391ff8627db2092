"""The clinic desk on a call: turns and keypad in, prompts and line actions out.

``IVRNode`` sits where an LLM node would (after turn-taking, before TTS). It
speaks the desk's replies as ``SpeakFrame``s and performs each reply's action
only once the caller has heard the reply: the output transport's
``BotStoppedSpeakingFrame`` comes back upstream, and then the transfer
(``TransferFrame``), the hang-up (``EndFrame``) or the voicemail tone and
recording start. Everything is interruptible except the legal notice, and a
keypad press cuts a prompt short just like speech does.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

import numpy as np

from agent import metrics
from agent.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    DTMFFrame,
    EndFrame,
    Frame,
    InterruptFrame,
    OutputAudioFrame,
    SpeakFrame,
    TransferFrame,
    UserTurnFrame,
)
from agent.node import DOWNSTREAM, UPSTREAM, Node
from examples.ivr.desk import MESSAGE_SAVED, Action, ClinicDesk, HangUp, Reply, TakeMessage, Transfer
from examples.ivr.voicemail import VoicemailRecorder

logger = logging.getLogger(__name__)

_prompt_ids = itertools.count(3_000_000)  # clear of VAD turn ids and the LLM node's prompt ids
TONE_HZ, TONE_S = 1000.0, 0.4


class IVRNode(Node):
    """Runs one call's ``ClinicDesk``; ``voicemail`` records messages after hours."""

    def __init__(self, desk: ClinicDesk, voicemail: VoicemailRecorder, *, name: str | None = None) -> None:
        super().__init__(name=name or "ivr")
        self.desk = desk
        self.voicemail = voicemail
        self.said: list[str] = []  # every prompt and reply, in order
        self.actions: list[tuple[str, str]] = []  # (kind, detail) performed, in order
        self._pending: tuple[int, Action] | None = None  # (turn, action once that turn is heard)
        self._before: dict[int, str] = {}  # turn -> desk state before it (to reopen a turn)
        self._replies: dict[int, Reply] = {}
        self._heard: set[int] = set()

    async def on_start(self) -> None:
        for prompt in self.desk.opening():
            turn = next(_prompt_ids)
            await self._say(prompt.text, turn, uninterruptible=prompt.uninterruptible, then=prompt.then)

    async def process(self, frame: Frame, direction: int) -> None:
        if direction == DOWNSTREAM and isinstance(frame, UserTurnFrame):
            if frame.replaces:
                await self._reopen(frame.replaces)
            self._before[frame.turn_id] = self.desk.snapshot()
            self.spawn(self._answer(frame.turn_id, frame.text, None))
            return
        if direction == DOWNSTREAM and isinstance(frame, DTMFFrame):
            await self.broadcast(InterruptFrame())  # a key press cuts the prompt short (not the notice)
            turn = next(_prompt_ids)
            self._before[turn] = self.desk.snapshot()
            self.spawn(self._answer(turn, "", frame.digit))
        elif direction == UPSTREAM and isinstance(frame, BotStartedSpeakingFrame):
            self._heard.add(frame.turn_id)
        elif direction == UPSTREAM and isinstance(frame, BotStoppedSpeakingFrame):
            self._heard.add(frame.turn_id)
            pending = self._pending
            if pending is not None and (frame.interrupted or frame.turn_id == pending[0]):
                self._pending = None
                self.spawn(self._perform(pending[1]), interruptible=False)
        await self.emit(frame, direction)

    async def _answer(self, turn: int, text: str, digit: str | None) -> None:
        # Shielded: a booking finishes and is remembered (so a reopened turn can undo it)
        # even when an interrupt cancels this task while the database is written.
        answering = asyncio.ensure_future(self.desk.answer(text, digit))
        answering.add_done_callback(lambda done: self._remember(turn, done))
        reply = await asyncio.shield(answering)
        await self.mark(metrics.LLM_FIRST_TOKEN, turn)
        if reply.text:
            await self._say(reply.text, turn, then=reply.then)

    def _remember(self, turn: int, done: asyncio.Future[Reply]) -> None:
        if not done.cancelled() and done.exception() is None:
            self._replies[turn] = done.result()

    async def _reopen(self, replaced: int) -> None:
        """The caller went on before hearing our reply: forget it as if never given."""
        reply = self._replies.pop(replaced, None)
        if replaced in self._heard or reply is None:
            return
        if reply.undo is not None:
            await reply.undo()
        if self._pending is not None and self._pending[0] == replaced:
            self._pending = None
        if replaced in self._before:
            self.desk.restore(self._before[replaced])

    async def _say(self, text: str, turn: int, *, uninterruptible: bool = False, then: Action | None = None) -> None:
        if then is not None:
            self._pending = (turn, then)
        self.said.append(text)
        await self.emit(SpeakFrame(text=text, turn_id=turn, uninterruptible=uninterruptible))

    async def _perform(self, action: Action) -> None:
        if isinstance(action, Transfer):
            self.actions.append(("transfer", action.target))
            logger.info("call %s: transferring to %s", self.desk.call_id, action.target)
            await self.emit(TransferFrame(target=action.target, reason="caller asked for the front desk"))
        elif isinstance(action, HangUp):
            self.actions.append(("hangup", action.reason))
            await self.emit(EndFrame(reason=action.reason))
        elif isinstance(action, TakeMessage):
            self.actions.append(("voicemail", ""))
            await self._tone()
            self.voicemail.start(on_done=self._message_taken)

    async def _message_taken(self, saved: bool) -> None:
        text = MESSAGE_SAVED if saved else "I didn't hear a message. Goodbye!"
        await self._say(text, next(_prompt_ids), then=HangUp())

    async def _tone(self, rate: int = 16000) -> None:
        """The "leave a message after the tone" beep, as bot audio."""
        t = np.arange(int(rate * TONE_S)) / rate
        wave = 0.3 * np.sin(2 * np.pi * TONE_HZ * t) * np.minimum(1.0, np.minimum(t, TONE_S - t) / 0.01)
        pcm = (wave * 32767).astype(np.int16).tobytes()
        turn = next(_prompt_ids)
        step = rate // 50 * 2  # 20 ms of int16
        for i in range(0, len(pcm), step):
            await self.emit(OutputAudioFrame(pcm=pcm[i : i + step], sample_rate=rate, turn_id=turn,
                                             uninterruptible=True))
