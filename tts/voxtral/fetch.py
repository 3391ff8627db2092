"""One clause's request as the node sees it: a task filling a queue, plus its numbers.

The task reads the HTTP stream as fast as the server sends, so a prefetched
clause is ready when its turn comes; the node drains the queue at playout pace.
Cancelling the task closes the stream (``async with``), which tells the server.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from tts.voxtral.errors import VoxtralError
from tts.voxtral.protocol import SAMPLE_RATE
from tts.voxtral.stream import SpeechStream

log = logging.getLogger(__name__)

Item = np.ndarray | BaseException | None  # audio, a failure, or the end


@dataclass(eq=False)
class Fetch:
    text: str
    turn_id: int
    uninterruptible: bool
    stream: SpeechStream
    wake: asyncio.Event
    queue: asyncio.Queue[Item] = field(default_factory=asyncio.Queue)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # the first item (audio, failure or end) is in
    error: VoxtralError | None = None  # why the stream failed, if it did
    task: asyncio.Task[Any] = field(init=False)
    received: int = 0  # samples that arrived
    consumed: int = 0  # samples handed to the node for playout
    expected_s: float = 0.0  # speech the text should make, from the calibrated speaking rate
    t_consume_start: float | None = None
    t_first_frame: float | None = None
    reported: bool = False

    async def run(self) -> None:
        try:
            async with self.stream:
                async for pcm in self.stream:
                    self.received += len(pcm)
                    self.queue.put_nowait(pcm)
                    if len(pcm):
                        self.arrived.set()
                    self.wake.set()
            self.queue.put_nowait(None)
        except VoxtralError as exc:
            self.error = exc
            self.queue.put_nowait(exc)
        except httpx.HTTPError as exc:  # anything the client did not map is still a server failure
            log.exception("unexpected HTTP failure from the Voxtral server")
            self.error = VoxtralError(f"HTTP failure talking to the server: {exc!r}")
            self.queue.put_nowait(self.error)
        finally:
            self.arrived.set()
            self.wake.set()

    @property
    def buffered_s(self) -> float:
        """Audio received but not yet handed on."""
        return max(0, self.received - self.consumed) / SAMPLE_RATE

    @property
    def pending_s(self) -> float:
        """Audio this request will still add to what the caller must hear.

        Until the stream ends, the text's expected length stands in for audio not
        yet generated, so a request that just started counts as what it will be.
        """
        if self.task.done():
            return self.buffered_s
        return max(0.0, max(self.received / SAMPLE_RATE, self.expected_s) - self.consumed_s)

    @property
    def consumed_s(self) -> float:
        return self.consumed / SAMPLE_RATE

    @property
    def wasted_bytes(self) -> int:
        """Wire bytes whose audio was received but will never be played."""
        stats = self.stream.stats
        if not self.received:
            return 0
        return round(stats.wire_bytes * (self.received - self.consumed) / self.received)

    def metrics(self, error: str | None = None) -> dict[str, Any]:
        stats = self.stream.stats
        framework_ms = None
        if self.t_first_frame is not None and stats.t_first_byte is not None:
            ready = max(stats.t_first_byte, self.t_consume_start or stats.t_first_byte)
            framework_ms = round((self.t_first_frame - ready) * 1000.0, 3)
        ttfa = stats.ttfa
        return {
            "text": self.text,
            "turn_id": self.turn_id,
            "ttfa_ms": None if ttfa is None else round(ttfa * 1000.0, 2),
            "framework_delay_ms": framework_ms,
            "rtf": None if stats.rtf is None else round(stats.rtf, 4),
            "audio_s": round(stats.audio_seconds, 3),
            "wire_bytes": stats.wire_bytes,
            "completed": stats.completed,
            "cancelled": stats.closed_early and error is None,
            "wasted_bytes": self.wasted_bytes,
            "usage": stats.usage,
            "error": error,
        }


def remaining_text(text: str, spoken_s: float, seconds_per_char: float = 0.065) -> str:
    """The words of ``text`` not yet spoken after ``spoken_s`` seconds of audio.

    Positions are estimated from the speaking rate; the word in progress is
    repeated rather than skipped, since a repeated word sounds better than a gap.
    """
    if spoken_s <= 0:
        return text
    words = text.split()
    spoken_chars = spoken_s / seconds_per_char
    position = 0
    for index, word in enumerate(words):
        if position + len(word) > spoken_chars:
            return " ".join(words[index:])
        position += len(word) + 1
    return ""
