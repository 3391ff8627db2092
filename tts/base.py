"""What every TTS node shares: clauses in, paced-ready 20 ms audio frames out.

A subclass only turns one clause of text into int16 audio chunks at its native
rate (``synthesize``). This base does the rest, the same way for every voice:

* LLM text deltas are cut into clauses (``ClauseAggregator``) and queued, so the
  first clause is synthesized while the LLM is still writing the second;
* clauses are spoken strictly in order by one speaker task;
* audio is resampled to the call's output rate with a streaming soxr filter and
  cut into ``frame_ms`` frames, each carrying the words it speaks (for "what the
  caller heard") and the turn id;
* an ``InterruptFrame`` cancels the clause being synthesized and drops every
  queued one, except those from an uninterruptible ``SpeakFrame``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from agent.audio import Rechunker, Resampler
from agent.frames import (
    EndFrame,
    Frame,
    InterruptFrame,
    LLMTextFrame,
    LLMTurnEndFrame,
    OutputAudioFrame,
    SpeakFrame,
    StartFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from agent.metrics import TTS_FIRST_AUDIO
from agent.node import Node
from tts.text_aggregator import ClauseAggregator

logger = logging.getLogger(__name__)

#: Seconds of speech per character, before the first clause has calibrated it
#: (a conversational 150 words per minute is about 15 characters per second).
_INITIAL_SECONDS_PER_CHAR = 0.065


@dataclass(slots=True)
class _Clause:
    text: str
    turn_id: int
    uninterruptible: bool = False


@dataclass(slots=True)
class _TurnEnd:
    turn_id: int
    frame: Frame | None  # the LLMTurnEndFrame, passed on behind the turn's audio
    uninterruptible: bool = False


@dataclass(slots=True)
class _Drained:
    done: asyncio.Future[None]
    uninterruptible: bool = True  # an interrupt must not lose the end of the call


class TTSNode(Node):
    """Base TTS node; subclasses implement :meth:`synthesize`.

    ``sample_rate`` is the output rate (None: the call's output rate from the
    ``StartFrame``); ``native_rate`` is the rate ``synthesize`` yields.
    """

    #: True when ``synthesize`` yields each text as one chunk: frames then get
    #: word timings from the real duration instead of a speaking-rate estimate.
    whole_text_chunks: ClassVar[bool] = False

    def __init__(
        self,
        *,
        native_rate: int,
        sample_rate: int | None = None,
        frame_ms: int = 20,
        aggregator: ClauseAggregator | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if not 10 <= frame_ms <= 60:
            raise ValueError("frame_ms must be between 10 and 60 (20-40 suit every transport)")
        self.native_rate = native_rate
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.aggregator = aggregator or ClauseAggregator()
        self._queue: deque[_Clause | _TurnEnd | _Drained] = deque()
        self._queued = asyncio.Event()
        self._speaker_task: asyncio.Task[None] | None = None
        self._text_turn = 0
        self._speaking_turn: int | None = None
        self._dropped_turn: int | None = None
        self._pts = 0.0
        self._seconds_per_char = _INITIAL_SECONDS_PER_CHAR

    async def synthesize(self, text: str) -> AsyncIterator[np.ndarray]:
        """Yield int16 mono chunks of ``text`` spoken at ``self.native_rate``."""
        raise NotImplementedError
        yield np.zeros(0, dtype=np.int16)  # pragma: no cover - makes this a generator

    # ----------------------------------------------------------------- input

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, StartFrame):
            if self.sample_rate is None:
                self.sample_rate = frame.output_sample_rate
            self._speaker_task = self.spawn(self._speaker(), interruptible=False)
            await self.emit(frame, direction)
        elif isinstance(frame, LLMTextFrame):
            if frame.turn_id and frame.turn_id == self._dropped_turn:
                return  # a straggler of an answer the caller interrupted
            if frame.turn_id != self._text_turn:
                self._enqueue_all(self.aggregator.flush(), self._text_turn)
                self._text_turn = frame.turn_id
            self._enqueue_all(self.aggregator.push(frame.text), frame.turn_id)
        elif isinstance(frame, LLMTurnEndFrame):
            if frame.turn_id and frame.turn_id == self._dropped_turn:
                return
            self._enqueue_all(self.aggregator.flush(), frame.turn_id)
            self._put(_TurnEnd(frame.turn_id, frame))
        elif isinstance(frame, SpeakFrame):
            clauses = ClauseAggregator(first_clause_min_words=self.aggregator.first_clause_min_words).split(frame.text)
            self._enqueue_all(clauses, frame.turn_id, frame.uninterruptible)
            self._put(_TurnEnd(frame.turn_id, None, frame.uninterruptible))
        elif isinstance(frame, InterruptFrame):
            self._interrupt()
            await self.emit(frame, direction)
        elif isinstance(frame, EndFrame) and self._speaker_task is not None:
            # A graceful end lets the last words ("Goodbye!") be spoken first.
            self._enqueue_all(self.aggregator.flush(), self._text_turn)
            drained = _Drained(asyncio.get_running_loop().create_future())
            self._put(drained)
            # (If the session is torn down meanwhile, the speaker ends and so does the wait.)
            await asyncio.wait({drained.done, self._speaker_task}, return_when=asyncio.FIRST_COMPLETED)
            await self.emit(frame, direction)
        else:
            await self.emit(frame, direction)

    def _enqueue_all(self, clauses: list[str], turn_id: int, uninterruptible: bool = False) -> None:
        for text in clauses:
            self._put(_Clause(text, turn_id, uninterruptible))

    def _put(self, item: _Clause | _TurnEnd | _Drained) -> None:
        self._queue.append(item)
        self._queued.set()

    def _interrupt(self) -> None:
        """Drop queued speech; the clause being spoken was already cancelled by ``Node``."""
        self._dropped_turn = self._text_turn or None
        self.aggregator.reset()
        kept = deque(item for item in self._queue if item.uninterruptible)
        logger.debug("%s: interrupt dropped %d queued items", self.name, len(self._queue) - len(kept))
        self._queue = kept

    # ---------------------------------------------------------------- output

    async def _speaker(self) -> None:
        """Speak queued clauses one after another, for the life of the node."""
        while True:
            while not self._queue:
                self._queued.clear()
                await self._queued.wait()
            item = self._queue.popleft()
            if isinstance(item, _Drained):
                await self._end_turn(_TurnEnd(0, None))
                item.done.set_result(None)
                continue
            if isinstance(item, _TurnEnd):
                await self._end_turn(item)
                continue
            task = self.spawn(self._speak(item), interruptible=not item.uninterruptible)
            await asyncio.wait({task})  # a cancelled clause must not end the speaker
            if task.cancelled():
                await self._end_turn(_TurnEnd(item.turn_id, None))

    async def _end_turn(self, end: _TurnEnd) -> None:
        if self._speaking_turn is not None:
            await self.emit(TTSStoppedFrame(turn_id=self._speaking_turn))
            self._speaking_turn = None
        if end.frame is not None:
            await self.emit(end.frame)

    async def _speak(self, clause: _Clause) -> None:
        assert self.sample_rate is not None, "TTS node used before its StartFrame"
        first_of_turn = self._speaking_turn != clause.turn_id
        if first_of_turn:
            if self._speaking_turn is not None:
                await self.emit(TTSStoppedFrame(turn_id=self._speaking_turn))
            self._speaking_turn = clause.turn_id
            await self.emit(TTSStartedFrame(turn_id=clause.turn_id))
        words = _WordClock(clause.text, self._seconds_per_char * len(clause.text))
        resampler = Resampler(self.native_rate, self.sample_rate)
        rechunker = Rechunker(self.sample_rate, self.frame_ms)
        held: bytes | None = None  # one frame kept back so the clause's last frame gets its last words
        produced = 0
        async for chunk in self.synthesize(clause.text):
            if self.whole_text_chunks and produced == 0:
                words.duration = len(chunk) / self.native_rate
            produced += len(chunk)
            for pcm in rechunker.push(resampler.process(chunk).tobytes()):
                if held is not None:
                    await self._send(held, clause, words, first_of_turn)
                    first_of_turn = False
                held = pcm
        tail = rechunker.push(resampler.process(np.zeros(0, dtype=np.int16), last=True).tobytes())
        for pcm in [*tail, rechunker.flush()]:
            if pcm is None:
                continue
            if held is not None:
                await self._send(held, clause, words, first_of_turn)
                first_of_turn = False
            held = pcm
        if held is not None:
            words.finish()
            await self._send(held, clause, words, first_of_turn)
        if produced and clause.text:
            actual = produced / self.native_rate / len(clause.text)
            self._seconds_per_char += 0.3 * (actual - self._seconds_per_char)

    async def _send(self, pcm: bytes, clause: _Clause, words: _WordClock, first_of_turn: bool) -> None:
        assert self.sample_rate is not None
        duration = len(pcm) / 2 / self.sample_rate
        frame = OutputAudioFrame(
            pcm=pcm,
            sample_rate=self.sample_rate,
            pts=self._pts,
            text=words.advance(duration),
            turn_id=clause.turn_id,
            uninterruptible=clause.uninterruptible,
        )
        self._pts += duration
        if first_of_turn:
            await self.mark(TTS_FIRST_AUDIO, clause.turn_id)
        await self.emit(frame)


class _WordClock:
    """Hands out a clause's words as its audio plays, by estimated word start time.

    Word starts are spread over the clause's duration in proportion to their
    character offsets: crude, but within a word or two of the truth for
    conversational speech, which is what an interrupted answer's history needs.
    """

    __slots__ = ("_words", "_starts", "_next", "_elapsed", "duration", "_total")

    def __init__(self, text: str, duration: float) -> None:
        self._words = text.split(" ")
        offsets, position = [], 0
        for word in self._words:
            offsets.append(position)
            position += len(word) + 1
        self._total = max(position - 1, 1)
        self._starts = offsets
        self._next = 0
        self._elapsed = 0.0
        self.duration = duration

    def advance(self, seconds: float) -> str:
        """Words that start within the next ``seconds`` of audio."""
        self._elapsed += seconds
        spoken: list[str] = []
        while self._next < len(self._words) and (
            self._starts[self._next] / self._total * self.duration < self._elapsed
        ):
            spoken.append(self._words[self._next])
            self._next += 1
        return "".join(word + " " for word in spoken)  # frames concatenate to the answer

    def finish(self) -> None:
        """Make the next ``advance`` release every remaining word."""
        self.duration = 0.0
