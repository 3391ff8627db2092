"""Graph nodes at the ends of a carrier media stream (Twilio, Telnyx, ...).

``CarrierInput`` turns the carrier's audio into 20 ms ``InputAudioFrame``s at
the graph's rate, and its digits into ``DTMFFrame``s.

``CarrierOutput`` sends bot audio to the carrier a little ahead of real time
(``lead_s``, enough to ride out network hiccups, small enough that little is
wasted on barge-in), with a mark after every chunk. Playback state follows
the carrier's acknowledgements, not our clock:

* ``PlayoutProgressFrame`` (seconds and words heard) is emitted per ack;
* ``BotStoppedSpeakingFrame`` only once the *last* mark is acknowledged;
* an ``EndFrame`` or a transfer waits for that too, so the goodbye is heard;
* an ``InterruptFrame`` sends the carrier's clear at once and forgets the
  pending marks (their late acks are not counted as heard).

A carrier that never acknowledges (or drops acks) is caught by a watchdog
that falls back to the clock, with a log line, so a call cannot hang.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from agent import metrics
from agent.audio import Rechunker, Resampler
from agent.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    DTMFFrame,
    EndFrame,
    Frame,
    InterruptFrame,
    LLMTurnEndFrame,
    MetricsFrame,
    OutputAudioFrame,
    OutputPauseFrame,
    PlayoutProgressFrame,
    StartFrame,
    TTSStoppedFrame,
    TransferFrame,
)
from agent.node import UPSTREAM, Node
from transports.base import InputTransport
from transports.playout import AudioIntake, PlayoutBuffer, Progress
from transports.telephony.marks import Mark, MarkTracker

if TYPE_CHECKING:
    from transports.telephony.server import CarrierCall

logger = logging.getLogger(__name__)


class CarrierInput(InputTransport):
    def __init__(self, call: CarrierCall) -> None:
        super().__init__(name=f"{call.serializer.name}-in")
        self.call = call
        self._resampler: Resampler | None = None
        self._rechunker: Rechunker | None = None
        self._early: list[bytes] = []  # audio that arrived before the graph started

    async def process(self, frame: Frame, direction: int) -> None:
        await super().process(frame, direction)
        if isinstance(frame, StartFrame):
            rate = self.sample_rate or 16000
            # "QQ" keeps 20 ms in → 20 ms out; soxr's HQ streams in ~100 ms blocks.
            self._resampler = Resampler(self.call.serializer.sample_rate, rate, quality="QQ")
            self._rechunker = Rechunker(rate, 20)
            early, self._early = self._early, []
            for pcm in early:
                await self.audio(pcm)

    async def audio(self, pcm: bytes) -> None:
        """Carrier audio (int16 at the carrier's rate), in whatever chunk size it uses."""
        if self._resampler is None or self._rechunker is None:
            if len(self._early) < 500:
                self._early.append(pcm)
            return
        for chunk in self._rechunker.push(self._resampler.process_bytes(pcm)):
            await self.push_audio(chunk, self.sample_rate)

    async def digit(self, digit: str) -> None:
        frame = DTMFFrame(digit=digit)
        self.call.caller_digit_ids.add(frame.id)
        await self.emit(frame)


class CarrierOutput(Node):
    def __init__(self, call: CarrierCall, *, lead_s: float = 0.3, max_buffer_s: float = 1.0,
                 ack_grace_s: float = 3.0) -> None:
        super().__init__(name=f"{call.serializer.name}-out")
        self.call = call
        self.serializer = call.serializer
        self.lead_s, self.max_buffer_s, self.ack_grace_s = lead_s, max_buffer_s, ack_grace_s
        self.playout: PlayoutBuffer | None = None
        self.marks = MarkTracker()
        self.speaking = False
        self.heard = Progress()
        self._intake = AudioIntake()
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._sender: asyncio.Task[None] | None = None
        self._spurt_start = 0.0
        self._spurt_sent = 0.0
        self._warned_no_acks = False

    # ----------------------------------------------------------------- frames

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, OutputAudioFrame):
            await self._enqueue(frame)
            return
        if isinstance(frame, StartFrame):
            self.playout = PlayoutBuffer(self.serializer.sample_rate, self.serializer.chunk_ms, self.max_buffer_s)
            self.spawn(self._watch_acks(), interruptible=False)
        elif isinstance(frame, InterruptFrame):
            await self._interrupt(frame)
        elif isinstance(frame, OutputPauseFrame) and self.playout is not None:
            self.playout.paused = frame.paused
        elif isinstance(frame, (TTSStoppedFrame, LLMTurnEndFrame)) and self.playout is not None:
            self._intake.flush(self.playout)  # end of an utterance: its last few ms go out too
            self.playout.flush_partial()
            self._ensure_sender()
        elif isinstance(frame, DTMFFrame) and frame.id not in self.call.caller_digit_ids:
            await self._send_digit(frame.digit)
        elif isinstance(frame, TransferFrame):
            self.spawn(self._transfer_when_heard(frame), interruptible=False)
        elif isinstance(frame, EndFrame):
            await self.wait_heard()
        await self.emit(frame, direction)

    async def _enqueue(self, frame: OutputAudioFrame) -> None:
        playout = self.playout
        assert playout is not None, "audio before StartFrame"
        await self._intake.put(playout, frame)
        self._quiet.clear()
        self._ensure_sender()

    async def _send_digit(self, digit: str) -> None:
        message = self.serializer.dtmf(digit)
        if message is None:
            logger.warning("call %s: %s cannot play digits on the stream; use its REST API (carrier_api)",
                           self.call.info.call_id, self.serializer.name)
            return
        await self.call.send(message)

    # ---------------------------------------------------------------- sending

    def _ensure_sender(self) -> None:
        if self._sender is None or self._sender.done():
            self._sender = self.spawn(self._send_loop(), interruptible=False)

    async def _send_loop(self) -> None:
        playout = self.playout
        assert playout is not None
        period = self.serializer.chunk_ms / 1000.0
        while len(playout):
            now = time.monotonic()
            if now - self._spurt_start > self._spurt_sent + 0.5:  # idle since: a new talk spurt
                self._spurt_start, self._spurt_sent = now, 0.0
            ahead = self._spurt_sent - (now - self._spurt_start)
            if ahead > self.lead_s:
                await asyncio.sleep(ahead - self.lead_s)
                continue
            chunk = playout.next_chunk()
            if chunk is None:  # paused
                await asyncio.sleep(period)
                continue
            self._intake.space.set()
            mark = self.marks.new(chunk.turn_id, period, chunk.text, chunk.uninterruptible)
            await self.call.send(self.serializer.media(chunk.pcm))
            mark_message = self.serializer.mark(mark.name)
            if mark_message is not None:
                await self.call.send(mark_message)
            self._spurt_sent += period
            if not self.speaking:
                self.speaking = True
                await self.emit(BotStartedSpeakingFrame(turn_id=chunk.turn_id), UPSTREAM)
                await self.emit(MetricsFrame(name=metrics.FIRST_AUDIO_OUT, turn_id=chunk.turn_id))

    # ------------------------------------------------------------------- acks

    async def on_mark(self, name: str) -> None:
        """The carrier played everything up to mark ``name``."""
        await self._played(self.marks.ack(name))

    async def _played(self, marks: list[Mark]) -> None:
        if not marks:
            return
        new_words = False
        for mark in marks:
            if mark.turn_id != self.heard.turn_id:
                self.heard = Progress(turn_id=mark.turn_id)
            self.heard.played_s += mark.duration_s
            self.heard.text_heard += mark.text
            new_words = new_words or bool(mark.text)
        finished = not len(self.marks) and (self.playout is None or not len(self.playout))
        if new_words or finished:
            await self._report_progress()
        if finished:
            await self._playback_stopped(interrupted=False)

    async def _report_progress(self) -> None:
        heard = self.heard
        await self.emit(PlayoutProgressFrame(turn_id=heard.turn_id, played_s=heard.played_s,
                                             text_heard=heard.text_heard), UPSTREAM)

    async def _playback_stopped(self, *, interrupted: bool) -> None:
        if self.speaking:
            self.speaking = False
            await self.emit(BotStoppedSpeakingFrame(turn_id=self.heard.turn_id, interrupted=interrupted), UPSTREAM)
        self._quiet.set()

    async def _watch_acks(self) -> None:
        """Clock fallback: a mark unacknowledged long after it should have played counts as played."""
        while True:
            await asyncio.sleep(0.25)
            overdue = None
            now = time.monotonic()
            for mark in self.marks.pending():
                if now < mark.sent_at + self.lead_s + mark.duration_s + self.ack_grace_s:
                    break
                overdue = mark
            if overdue is not None:
                if not self._warned_no_acks:
                    self._warned_no_acks = True
                    logger.warning("call %s: %s stopped acknowledging marks; estimating playout by clock",
                                   self.call.info.call_id, self.serializer.name)
                await self._played(self.marks.ack(overdue.name))

    async def wait_heard(self, timeout: float | None = None) -> None:
        """Until every queued chunk has been sent and acknowledged (or dropped)."""
        if self.playout is not None:
            self._intake.flush(self.playout)
            self.playout.flush_partial()
            if len(self.playout):
                self._ensure_sender()
        if len(self.marks) or (self.playout is not None and len(self.playout)):
            self._quiet.clear()
            await asyncio.wait_for(self._quiet.wait(), timeout)

    # -------------------------------------------------------------- barge-in

    async def _interrupt(self, frame: InterruptFrame) -> None:
        playout = self.playout
        if playout is None:
            return
        playout.drop()
        playout.paused = False
        self._intake.drop()
        if self.marks.playing_uninterruptible:
            return  # the caller is hearing something that must finish
        had_audio = bool(len(self.marks)) or self.speaking
        if had_audio:
            await self.call.send(self.serializer.clear())
        self.marks.clear()
        self._spurt_start, self._spurt_sent = 0.0, 0.0
        if self.speaking:
            await self._report_progress()
            await self._playback_stopped(interrupted=True)
            await self.emit(MetricsFrame(name=metrics.BARGE_IN_STOP, turn_id=frame.turn_id))
        self._quiet.set()

    async def _transfer_when_heard(self, frame: TransferFrame) -> None:
        await self.wait_heard(timeout=30)
        await self.call.transfer(frame.target)
