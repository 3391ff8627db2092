"""A buffered node's inbox: the ordered lane, bounded by how much media it holds.

Urgent frames never enter an inbox (the node handles them in the sender's task,
so they overtake whatever is queued here). Ordered frames keep their relative
order; only media frames count against ``max_media``, so a slow consumer makes
its producer wait instead of growing a queue without bound.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from agent.frames import Frame

Item = tuple[Frame, int]


class Inbox:
    __slots__ = ("_items", "_media", "_max_media", "_getter", "_putters")

    def __init__(self, max_media: int) -> None:
        if max_media < 1:
            raise ValueError("max_media must be at least 1")
        self._items: deque[Item] = deque()
        self._media = 0
        self._max_media = max_media
        self._getter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def media_count(self) -> int:
        return self._media

    async def put(self, frame: Frame, direction: int) -> None:
        """Queue a frame; waits while the media lane is full (backpressure)."""
        if frame.media:
            while self._media >= self._max_media:
                waiter = asyncio.get_running_loop().create_future()
                self._putters.append(waiter)
                try:
                    await waiter
                except asyncio.CancelledError:
                    if waiter in self._putters:
                        self._putters.remove(waiter)
                    raise
            self._media += 1
        self._items.append((frame, direction))
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    async def get(self) -> Item:
        while not self._items:
            self._getter = asyncio.get_running_loop().create_future()
            try:
                await self._getter
            finally:
                self._getter = None
        item = self._items.popleft()
        if item[0].media:
            self._media -= 1
            self._wake_putter()
        return item

    def flush(self, keep: Callable[[Frame], bool]) -> int:
        """Drop every queued frame ``keep`` rejects; returns how many went."""
        before = len(self._items)
        kept = deque(item for item in self._items if keep(item[0]))
        self._items = kept
        self._media = sum(1 for frame, _ in kept if frame.media)
        while self._putters and self._media < self._max_media:
            if not self._wake_putter():
                break
        return before - len(kept)

    def _wake_putter(self) -> bool:
        while self._putters:
            waiter = self._putters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return True
        return False
