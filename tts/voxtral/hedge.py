"""A fallback voice speaking one clause on the side, in case the server stays silent.

``VoxtralTTSNode`` starts one when a clause's first audio is late, and plays
it only if it has audio before the server does; otherwise the task is
cancelled and nothing of it is heard.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np


class Hedge:
    """The fallback voice speaking one clause on the side while the server is late.

    Its audio waits in a queue until the race is decided: played if the
    fallback wins, dropped with the task if the server does.
    """

    def __init__(self, audio: AsyncIterator[np.ndarray]) -> None:
        self._audio = audio
        self._queue: asyncio.Queue[np.ndarray | None] = asyncio.Queue()
        self.ready = asyncio.Event()  # first audio in, or the fallback finished without any
        self.has_audio = False
        self.won = False
        self.task: asyncio.Task[None]

    async def run(self) -> None:
        try:
            async for chunk in self._audio:
                if len(chunk):
                    self.has_audio = True
                    self._queue.put_nowait(chunk)
                    self.ready.set()
        finally:
            self._queue.put_nowait(None)
            self.ready.set()

    async def chunks(self) -> AsyncIterator[np.ndarray]:
        while (chunk := await self._queue.get()) is not None:
            yield chunk
