"""A simulated phone line for the turn-taking bench and tests.

``LineCaller`` is the scripted caller with what a real line adds: continuous
white noise, G.711 μ-law, and — with an ``EchoPath`` — the bot's own voice
coming back from a speakerphone. ``SpeakerOutput`` is the recording speaker
that feeds that echo path and remembers, per bot turn, what was synthesized
and what was played, so a resumed answer can be checked byte for byte.

The echo is sample-accurate: the speaker's chunks are placed on the pacer's
regular 20 ms schedule (a new run starts after a gap), and the caller reads
them at its own regular schedule, so within an answer the echo's delay is
constant, as on a real line.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import numpy as np

from agent.audio import ulaw_decode, ulaw_encode
from agent.caller import ScriptedCaller, Step
from agent.frames import EndFrame, Frame, InterruptFrame, OutputAudioFrame, OutputPauseFrame, PlayedAudioFrame
from agent.node import DOWNSTREAM
from transports.local import RecordingOutput
from transports.playout import Chunk


class EchoPath:
    """The bot's played audio, as a microphone hears it ``delay_ms`` later at ``gain_db``."""

    def __init__(self, rate: int, *, gain_db: float = -10.0, delay_ms: float = 80.0) -> None:
        self.rate = rate
        self.gain = 10 ** (gain_db / 20)
        self.delay = delay_ms / 1000.0
        self._chunks: deque[tuple[float, np.ndarray]] = deque()
        self._anchor = 0.0
        self._count = 0
        self._last: float | None = None

    def record(self, t: float, pcm: bytes) -> None:
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
        period = len(samples) / self.rate
        # Like a far end's jitter buffer: chunks play back to back unless the
        # stream really stopped (a late chunk is not a gap).
        slot = self._anchor + (self._count + 1) * period
        if self._last is None or t - slot > 3 * period:
            self._anchor, self._count = t, 0  # a new playout run
        else:
            self._count += 1
        self._last = t
        self._chunks.append((self._anchor + self._count * period, samples))
        while self._chunks and self._chunks[0][0] < t - 3.0:
            self._chunks.popleft()

    def read(self, t0: float, n: int) -> np.ndarray:
        """Echo in the microphone samples [t0, t0 + n / rate)."""
        out = np.zeros(n)
        source = t0 - self.delay
        for start, samples in self._chunks:
            offset = round((start - source) * self.rate)
            if offset >= n or offset + len(samples) <= 0:
                continue
            a, b = max(0, offset), min(n, offset + len(samples))
            out[a:b] += samples[a - offset : b - offset]
        return out * self.gain


class LineCaller(ScriptedCaller):
    """A scripted caller on a line with noise, μ-law and (optionally) the bot's echo."""

    def __init__(self, steps: list[Step], *, sample_rate: int, noise_dbfs: float | None = None,
                 ulaw: bool = False, echo: EchoPath | None = None, first_wait_s: float = 12.0,
                 seed: int = 11) -> None:
        super().__init__(steps, sample_rate=sample_rate, first_wait_s=first_wait_s)
        self.noise_dbfs = noise_dbfs
        self.ulaw = ulaw
        self.echo = echo
        self._rng = np.random.default_rng(seed)
        self.answer_wait_s = 5.0

    async def _call(self) -> None:
        """Like the scripted caller, but a turn always waits for its answer (up to
        ``answer_wait_s``) before the next one, however slow the bot is."""
        self._next_tick = time.monotonic()
        clock = self.spawn(self._silence_while_idle(), interruptible=False)
        await self._wait_for(self._bot_started, self._first_wait_s)
        expect_answer = False
        for step in self.steps:
            if step.during_bot_s is not None:
                await self._wait_for(self._bot_started, 15.0)
                await asyncio.sleep(step.during_bot_s)
            else:
                if expect_answer and not self.bot_speaking:
                    await self._wait_for(self._bot_started, self.answer_wait_s)
                await self._wait_quiet(step.after_bot_s)
            await self._speak(step)
            expect_answer = step.kind in ("turn", "interruption", "barge_in")
        if expect_answer and not self.bot_speaking:
            await self._wait_for(self._bot_started, self.answer_wait_s)
        await self._wait_quiet(1.0)
        clock.cancel()
        await self.emit(EndFrame(reason="caller_finished"))

    async def _silence_while_idle(self) -> None:
        """The caller's clock, with each utterance dated by its *scheduled* frame times.

        Under CPU load the clock's frames go out late and then in a burst, like
        a jittery network; the caller still started and stopped speaking on
        schedule, and latency is measured from that.
        """
        silence = np.zeros(self.frame_samples, dtype=np.int16).tobytes()
        while True:
            scheduled = self._next_tick  # type: ignore[has-type]
            if self._pending:
                pcm, marker = self._pending.popleft()
                await self._send(pcm)
                if marker is not None:
                    marker.set_result(scheduled)
            else:
                await self._send(silence)
            await self._tick()

    async def _send(self, pcm: bytes) -> None:
        if self.noise_dbfs is None and not self.ulaw and self.echo is None:
            await super()._send(pcm)
            return
        mix = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
        n = len(mix)
        if self.echo is not None:
            mix += self.echo.read(self._next_tick - n / self.sample_rate, n)  # type: ignore[attr-defined]
        if self.noise_dbfs is not None:
            mix += self._rng.standard_normal(n) * 32768 * 10 ** (self.noise_dbfs / 20)
        line = np.clip(np.round(mix), -32768, 32767).astype(np.int16)
        out = ulaw_decode(ulaw_encode(line)) if self.ulaw else line.tobytes()
        await super()._send(out)


class SpeakerOutput(RecordingOutput):
    """Records playout per bot turn and feeds the echo path."""

    def __init__(self, *, sample_rate: int, echo: EchoPath | None = None) -> None:
        super().__init__(sample_rate=sample_rate)
        self.echo = echo
        self.synthesized: dict[int, bytearray] = {}
        self.heard: dict[int, bytearray] = {}
        self.paused_turns: set[int] = set()
        self.resumed_turns: set[int] = set()
        self.interrupted_turns: set[int] = set()
        self.stops: list[float] = []  # when a pause or an interrupt reached the speaking output
        self._turn = 0

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, OutputAudioFrame):
            self.synthesized.setdefault(frame.turn_id, bytearray()).extend(frame.pcm)
        elif isinstance(frame, OutputPauseFrame) and self.speaking:
            (self.paused_turns if frame.paused else self.resumed_turns).add(self._turn)
            if frame.paused:
                self.stops.append(time.monotonic())
        elif isinstance(frame, InterruptFrame) and self.speaking:
            self.interrupted_turns.add(self._turn)
            self.stops.append(time.monotonic())
        await super().process(frame, direction)

    async def emit(self, frame: Frame, direction: int = DOWNSTREAM) -> None:
        # With an echo canceller listening, the speaker plays each chunk at the very
        # moment its reference says (a real line has one clock; here it would
        # otherwise differ by however long Python took between the two).
        if isinstance(frame, PlayedAudioFrame) and self.echo is not None:
            self.echo.record(frame.played_at, frame.pcm)
        await super().emit(frame, direction)

    async def _played(self, chunk: Chunk) -> None:
        self._turn = chunk.turn_id
        await super()._played(chunk)

    async def write_audio(self, pcm: bytes) -> None:
        await super().write_audio(pcm)
        self.heard.setdefault(self._turn, bytearray()).extend(pcm)
        if self.echo is not None and not self.send_reference:
            self.echo.record(time.monotonic(), pcm)

    async def write_silence(self) -> None:
        if self.echo is not None and self.playout is not None and not self.send_reference:
            self.echo.record(time.monotonic(), bytes(self.playout.chunk_bytes))

    def stop_after(self, onset: float, within_s: float = 1.5) -> float | None:
        """When the last bot audio frame before the first stop after ``onset`` ended."""
        stop = next((t for t in self.stops if onset <= t <= onset + within_s), None)
        if stop is None:
            return None
        last = max((c.t for c in self.played if c.t <= stop), default=None)
        return None if last is None else last + self.chunk_ms / 1000.0

    def turns_with_pause_resume(self) -> list[int]:
        return sorted((self.paused_turns & self.resumed_turns) - self.interrupted_turns)

    def played_exactly(self, turn: int) -> bool:
        """Every synthesized byte of the turn was played, in order, nothing repeated or lost."""
        made, heard = bytes(self.synthesized.get(turn, b"")), bytes(self.heard.get(turn, b""))
        return len(made) > 0 and heard[: len(made)] == made and not heard[len(made) :].strip(b"\x00")
