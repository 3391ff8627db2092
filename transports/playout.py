"""What the caller hears, and when: the playout buffer behind every output.

Bot audio waits here in fixed-size chunks until the transport's clock takes
it. Because this is the last place audio can be held back, it is where an
interrupt drops it, where a barge-in pauses it (so a backchannel can resume
exactly where it stopped), and where "what was heard" is decided: a chunk's
words count as heard only once the chunk has been played.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from agent.audio import Resampler, pcm_problem, to_mono
from agent.frames import OutputAudioFrame


@dataclass(slots=True)
class Chunk:
    pcm: bytes
    text: str
    turn_id: int
    uninterruptible: bool


@dataclass(slots=True)
class Progress:
    """Running totals for the turn being played."""

    turn_id: int = 0
    played_s: float = 0.0
    text_heard: str = ""


class PlayoutBuffer:
    """A bounded FIFO of fixed-duration chunks with pause, resume and flush."""

    def __init__(self, sample_rate: int, chunk_ms: int = 20, max_buffer_s: float = 1.0) -> None:
        self.sample_rate = sample_rate
        self.chunk_ms = chunk_ms
        self.chunk_bytes = sample_rate * chunk_ms // 1000 * 2
        self.max_chunks = max(1, int(max_buffer_s * 1000 / chunk_ms))
        self.paused = False
        self.progress = Progress()
        self._chunks: deque[Chunk] = deque()
        self._partial = bytearray()
        self._partial_text: list[str] = []
        self._partial_meta: tuple[int, bool] = (0, False)

    def __len__(self) -> int:
        return len(self._chunks)

    @property
    def full(self) -> bool:
        return len(self._chunks) >= self.max_chunks

    @property
    def buffered_s(self) -> float:
        return len(self._chunks) * self.chunk_ms / 1000.0

    def push(self, pcm: bytes, text: str, turn_id: int, uninterruptible: bool) -> None:
        """Add audio of any length; it is cut into chunks, keeping the remainder."""
        if (turn_id, uninterruptible) != self._partial_meta and self._partial:
            self.flush_partial()
        self._partial_meta = (turn_id, uninterruptible)
        if text:
            self._partial_text.append(text)
        self._partial += pcm
        size = self.chunk_bytes
        while len(self._partial) >= size:
            words = "".join(self._partial_text)
            self._partial_text.clear()
            self._chunks.append(Chunk(bytes(self._partial[:size]), words, turn_id, uninterruptible))
            del self._partial[:size]

    def flush_partial(self) -> None:
        """Pad and queue a trailing partial chunk (end of an utterance)."""
        if not self._partial and not self._partial_text:
            return
        pad = b"\x00" * (self.chunk_bytes - len(self._partial))
        turn_id, uninterruptible = self._partial_meta
        self._chunks.append(Chunk(bytes(self._partial) + pad, "".join(self._partial_text), turn_id, uninterruptible))
        self._partial.clear()
        self._partial_text.clear()

    def next_chunk(self) -> Chunk | None:
        """Take the chunk due now (None when paused or empty) and count it heard."""
        if self.paused or not self._chunks:
            return None
        chunk = self._chunks.popleft()
        progress = self.progress
        if chunk.turn_id != progress.turn_id:
            self.progress = progress = Progress(turn_id=chunk.turn_id)
        progress.played_s += self.chunk_ms / 1000.0
        progress.text_heard += chunk.text
        return chunk

    def drop(self) -> int:
        """Interrupt: drop every interruptible chunk; returns how many went."""
        before = len(self._chunks)
        self._chunks = deque(c for c in self._chunks if c.uninterruptible)
        if not self._partial_meta[1]:
            self._partial.clear()
            self._partial_text.clear()
        return before - len(self._chunks)

    @property
    def playing_uninterruptible(self) -> bool:
        return bool(self._chunks) and self._chunks[0].uninterruptible


class AudioIntake:
    """The front door of a playout buffer, shared by every kind of output.

    Bot audio is checked (a malformed frame raises ``ValueError`` naming the
    problem, which ends that call), down-mixed to mono, and resampled to the
    buffer's rate by one streaming resampler per source stream; a full buffer
    makes the producer wait until a chunk has been played: backpressure that
    keeps TTS only a little ahead of the caller. The resampler holds the newest
    few ms back, so the output calls :meth:`flush` at the end of each utterance
    (and :meth:`drop` on an interrupt).
    """

    def __init__(self) -> None:
        self.space = asyncio.Event()
        self._resampler: Resampler | None = None
        self._tail_meta: tuple[int, bool] = (0, False)  # turn id, uninterruptible of the held audio

    async def put(self, playout: PlayoutBuffer, frame: OutputAudioFrame) -> None:
        problem = pcm_problem(len(frame.pcm), frame.sample_rate, frame.channels)
        if problem is not None:
            raise ValueError(f"bot audio: {problem}")
        pcm = frame.pcm  # the usual case (mono at the playout rate) is passed on as it is
        if frame.channels != 1:
            pcm = to_mono(frame.samples, frame.channels).tobytes()
        if frame.sample_rate != playout.sample_rate:
            resampler = self._resampler
            if resampler is None or resampler.in_rate != frame.sample_rate:
                self.flush(playout)  # another source rate: the previous stream has ended
                resampler = self._resampler = Resampler(frame.sample_rate, playout.sample_rate)
            pcm = resampler.process_bytes(pcm)
            self._tail_meta = (frame.turn_id, frame.uninterruptible)
        else:
            self.flush(playout)
        while playout.full:
            self.space.clear()
            await self.space.wait()
        playout.push(pcm, frame.text, frame.turn_id, frame.uninterruptible)

    def flush(self, playout: PlayoutBuffer) -> None:
        """End of an utterance: queue what the resampler still holds (the last few ms)."""
        if self._resampler is None:
            return
        tail = self._resampler.flush()
        self._resampler = None
        if len(tail):
            turn_id, uninterruptible = self._tail_meta
            playout.push(tail.tobytes(), "", turn_id, uninterruptible)

    def drop(self) -> None:
        """Interrupt: what the resampler holds must not be heard (unless uninterruptible)."""
        if self._resampler is not None and not self._tail_meta[1]:
            self._resampler = None
        self.space.set()

