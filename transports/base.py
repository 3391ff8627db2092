"""Base classes for the two ends of a call: audio in, audio out.

``InputTransport`` turns whatever the network delivers into ``InputAudioFrame``
and ``DTMFFrame``. ``OutputTransport`` owns the playout buffer and the clock:
it is the only node that knows when the caller actually hears something, so it
reports ``BotStartedSpeaking``/``BotStoppedSpeaking`` and ``PlayoutProgress``
upstream, marks first audio out, and makes an interrupt audible at once.

The output runs in one of two modes. *Push* (RTP, sinks): the transport's own
task paces 20 ms chunks in real time and calls :meth:`write_audio`. *Pull*
(aiortc tracks): the media stack asks for the next chunk with :meth:`pull`.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from agent import metrics
from agent.audio import Resampler, pcm_problem, to_mono
from agent.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    DTMFFrame,
    EndFrame,
    EventFrame,
    Frame,
    InputAudioFrame,
    InterruptFrame,
    LLMTurnEndFrame,
    MetricsFrame,
    OutputAudioFrame,
    OutputPauseFrame,
    PlayedAudioFrame,
    PlayoutProgressFrame,
    PlayoutReferenceRequestFrame,
    StartFrame,
    TTSStoppedFrame,
)
from agent.node import DOWNSTREAM, UPSTREAM, Node
from transports.playout import AudioIntake, Chunk, PlayoutBuffer

logger = logging.getLogger(__name__)


class InputTransport(Node):
    """Feeds caller audio and keypad digits into the graph.

    Every chunk is checked here, once for every node behind: an unusable one
    (no channels, a rate of 0, bytes that are not whole int16 samples) ends the
    call with an error naming this transport and the problem; an odd but usable
    one is converted (down-mixed to mono, resampled to the transport's rate),
    with one log line per call saying so.
    """

    def __init__(self, *, sample_rate: int | None = None, name: str | None = None) -> None:
        super().__init__(name=name)
        self.sample_rate = sample_rate
        self.muted = False
        self._media_time = 0.0
        # Named apart from the ``_resampler`` that transports keep for their own codec rate.
        self._conform_resampler: Resampler | None = None
        self._conform_refused = False
        self._conform_warned: set[str] = set()

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, StartFrame) and self.sample_rate is None:
            self.sample_rate = frame.input_sample_rate
        elif isinstance(frame, EventFrame) and frame.kind == "mute":
            self.muted = bool(frame.data.get("muted", True))
        await self.emit(frame, direction)

    async def push_audio(self, pcm: bytes, sample_rate: int | None = None, channels: int = 1) -> None:
        """Send one chunk of caller audio; media time advances by its length.

        While muted (an operator's command) the graph hears silence of the same
        length, so clocks and VAD state keep running.
        """
        if self._conform_refused:
            return
        rate = (self.sample_rate or 16000) if sample_rate is None else sample_rate
        problem = pcm_problem(len(pcm), rate, channels)
        if problem is not None:
            self._conform_refused = True  # one error per call, not one per 20 ms
            self._failed(ValueError(f"caller audio: {problem}"))
            return
        target = self.sample_rate or rate
        if channels != 1 or rate != target or self._conform_resampler is not None:
            pcm = self._converted(np.frombuffer(pcm, dtype=np.int16), rate, channels, target).tobytes()
            if not pcm:
                return  # the resampler is still filling (a few ms, once)
        if self.muted:
            pcm = bytes(len(pcm))
        frame = InputAudioFrame(pcm=pcm, sample_rate=target, pts=self._media_time)
        self._media_time += len(pcm) / (2 * target)
        await self.emit(frame)

    def _converted(self, samples: np.ndarray, rate: int, channels: int, target: int) -> np.ndarray:
        """Mono at ``target`` Hz (input of another shape is logged once per call)."""
        if channels != 1:
            self._warn_once("channels", "%s: caller audio has %d channels; down-mixing to mono", self.name, channels)
            samples = to_mono(samples, channels)
        held = np.zeros(0, dtype=np.int16)
        if self._conform_resampler is not None and (rate == target or self._conform_resampler.in_rate != rate):
            held, self._conform_resampler = self._conform_resampler.flush(), None  # that rate's stream ended
        if rate != target:
            self._warn_once(f"rate {rate}", "%s: caller audio at %d Hz on a %d Hz input; resampling",
                            self.name, rate, target)
            if self._conform_resampler is None:
                # "QQ": soxr's higher qualities release 20 ms chunks in ~100 ms bursts.
                self._conform_resampler = Resampler(rate, target, quality="QQ")
            samples = self._conform_resampler.process(samples)
        return np.concatenate([held, samples]) if len(held) else samples

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._conform_warned:
            self._conform_warned.add(key)
            logger.warning(message, *args)

    async def push_dtmf(self, digit: str, duration_ms: int = 160) -> None:
        await self.emit(DTMFFrame(digit=digit, duration_ms=duration_ms))

    async def hangup(self, reason: str = "caller_hangup") -> None:
        """The far end went away: nothing queued can be heard any more."""
        await self.emit(CancelFrame(reason=reason))


class OutputTransport(Node):
    """Plays bot audio in real time and tells the graph what was heard."""

    def __init__(
        self,
        *,
        sample_rate: int | None = None,
        chunk_ms: int = 20,
        max_buffer_s: float = 1.0,
        idle_grace_s: float = 0.25,
        pull: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.sample_rate = sample_rate
        self.chunk_ms = chunk_ms
        self.max_buffer_s = max_buffer_s
        self.idle_grace_s = idle_grace_s
        self.pull_mode = pull
        self.playout: PlayoutBuffer | None = None
        self.speaking = False
        self._intake = AudioIntake()
        self._drained = asyncio.Event()
        self._pacer: asyncio.Task[None] | None = None
        self._marked_turns: set[int] = set()
        self._last_audio_t = 0.0
        self.send_reference = False  # PlayedAudioFrame upstream, for an echo canceller

    # ------------------------------------------------------------ subclass API

    async def write_audio(self, pcm: bytes) -> None:
        """Push mode: send one chunk to the far end (default: discard)."""

    async def write_silence(self) -> None:
        """Push mode: a tick with nothing to play (paused or idle between words)."""

    async def pull(self) -> bytes | None:
        """Pull mode: the chunk to send now, or None for silence."""
        return await self._take_chunk()

    # ------------------------------------------------------------------ frames

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, OutputAudioFrame):
            await self._enqueue(frame)
            return
        if isinstance(frame, StartFrame):
            if self.sample_rate is None:
                self.sample_rate = frame.output_sample_rate
            self.playout = PlayoutBuffer(self.sample_rate, self.chunk_ms, self.max_buffer_s)
        elif isinstance(frame, InterruptFrame):
            await self._interrupt(frame)
        elif isinstance(frame, OutputPauseFrame):
            if self.playout is not None:
                self.playout.paused = frame.paused
                if frame.paused and self.speaking:  # the caller hears the bot stop now
                    await self.emit(MetricsFrame(name=metrics.BARGE_IN_STOP, turn_id=frame.turn_id))
        elif isinstance(frame, (TTSStoppedFrame, LLMTurnEndFrame)):
            if self.playout is not None:  # end of an utterance: its last few ms go out too
                self._intake.flush(self.playout)
                self.playout.flush_partial()
                self._ensure_pacer()
        elif isinstance(frame, EndFrame):
            await self._wait_drained()
        elif isinstance(frame, PlayoutReferenceRequestFrame):
            self.send_reference = frame.enabled
        await self.emit(frame, direction)

    async def _enqueue(self, frame: OutputAudioFrame) -> None:
        playout = self.playout
        assert playout is not None, "OutputTransport got audio before StartFrame"
        await self._intake.put(playout, frame)
        self._drained.clear()
        self._ensure_pacer()

    async def _interrupt(self, frame: InterruptFrame) -> None:
        playout = self.playout
        if playout is None:
            return
        was_speaking = self.speaking
        playout.drop()
        playout.paused = False
        self._intake.drop()
        if not playout.playing_uninterruptible and was_speaking:
            await self._stopped_speaking(interrupted=True)
            await self.emit(MetricsFrame(name=metrics.BARGE_IN_STOP, turn_id=frame.turn_id))

    async def _wait_drained(self) -> None:
        playout = self.playout
        if playout is None:
            return
        self._intake.flush(playout)
        playout.flush_partial()
        if len(playout) and not self.pull_mode:
            self._ensure_pacer()
            await self._drained.wait()

    # -------------------------------------------------------------- the clock

    def _ensure_pacer(self) -> None:
        if self.pull_mode or (self._pacer is not None and not self._pacer.done()):
            return
        if self.playout is not None and len(self.playout):
            self._pacer = self.spawn(self._pace(), interruptible=False)

    async def _pace(self) -> None:
        """Write one chunk per tick on an absolute schedule (no drift).

        A short gap between sentences (``idle_grace_s``) keeps the bot
        "speaking" instead of flapping stopped/started at every clause.
        """
        period = self.chunk_ms / 1000.0
        next_tick = time.monotonic()
        playout = self.playout
        assert playout is not None
        last_audio = next_tick
        while len(playout) or playout.paused or (
            self.speaking and next_tick - last_audio < self.idle_grace_s
        ):
            pcm = await self._take_chunk()
            if pcm is None:
                await self.write_silence()
            else:
                last_audio = next_tick
                await self.write_audio(pcm)
            next_tick += period
            delay = next_tick - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_tick = time.monotonic()
        if self.speaking:
            await self._stopped_speaking(interrupted=False)
        self._drained.set()

    async def _take_chunk(self) -> bytes | None:
        playout = self.playout
        if playout is None:
            return None
        chunk = playout.next_chunk()
        if chunk is None:
            if self.send_reference and (self.speaking or playout.paused):
                await self._send_reference(bytes(playout.chunk_bytes))  # silence plays too
            if (self.pull_mode and self.speaking and not playout.paused and not len(playout)
                    and time.monotonic() - self._last_audio_t >= self.idle_grace_s):
                await self._stopped_speaking(interrupted=False)  # same grace as push mode
            return None
        self._last_audio_t = time.monotonic()
        self._intake.space.set()
        await self._played(chunk)
        return chunk.pcm

    async def _played(self, chunk: Chunk) -> None:
        if not self.speaking:
            self.speaking = True
            await self.emit(BotStartedSpeakingFrame(turn_id=chunk.turn_id), UPSTREAM)
        if chunk.turn_id not in self._marked_turns:
            self._marked_turns.add(chunk.turn_id)
            await self.emit(MetricsFrame(name=metrics.FIRST_AUDIO_OUT, turn_id=chunk.turn_id), DOWNSTREAM)
        if chunk.text:
            await self._report_progress()
        if self.send_reference:
            await self._send_reference(chunk.pcm)

    async def _send_reference(self, pcm: bytes) -> None:
        """Tell an echo canceller what the caller's speaker plays now (opt-in)."""
        assert self.playout is not None
        await self.emit(
            PlayedAudioFrame(pcm=pcm, sample_rate=self.playout.sample_rate, played_at=time.monotonic()), UPSTREAM
        )

    async def _report_progress(self) -> None:
        assert self.playout is not None
        progress = self.playout.progress
        await self.emit(
            PlayoutProgressFrame(
                turn_id=progress.turn_id, played_s=progress.played_s, text_heard=progress.text_heard
            ),
            UPSTREAM,
        )

    async def _stopped_speaking(self, *, interrupted: bool) -> None:
        self.speaking = False
        assert self.playout is not None
        await self._report_progress()
        await self.emit(
            BotStoppedSpeakingFrame(turn_id=self.playout.progress.turn_id, interrupted=interrupted), UPSTREAM
        )
