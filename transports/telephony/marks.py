"""Carrier playback acknowledgements: the truth about what the caller heard.

Carriers buffer the audio we send and play it at their own pace, so "sent"
is not "heard". After each chunk we send a named mark; the carrier returns
the name when the audio before it has played. A mark's ack therefore means
this chunk *and every chunk before it* reached the caller's ear.

After a ``clear`` some carriers (Twilio, Telnyx) return the marks that were
still queued; those chunks were never played, so a clear forgets every
pending mark and their late acks are ignored.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class Mark:
    name: str
    turn_id: int
    duration_s: float
    text: str
    sent_at: float
    uninterruptible: bool = False


class MarkTracker:
    def __init__(self, prefix: str = "vw") -> None:
        self._pending: OrderedDict[str, Mark] = OrderedDict()
        self._counter = itertools.count(1)
        self._prefix = prefix
        self.acked = 0
        self.ignored = 0

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def pending_s(self) -> float:
        """Audio sent but not yet confirmed played."""
        return sum(m.duration_s for m in self._pending.values())

    def oldest(self) -> Mark | None:
        return next(iter(self._pending.values()), None)

    def pending(self) -> list[Mark]:
        """Unacknowledged marks, oldest first."""
        return list(self._pending.values())

    @property
    def playing_uninterruptible(self) -> bool:
        return any(m.uninterruptible for m in self._pending.values())

    def new(self, turn_id: int, duration_s: float, text: str, uninterruptible: bool = False) -> Mark:
        name = f"{self._prefix}-{turn_id}-{next(self._counter)}"
        mark = Mark(name, turn_id, duration_s, text, time.monotonic(), uninterruptible)
        self._pending[mark.name] = mark
        return mark

    def ack(self, name: str) -> list[Mark]:
        """Marks now known played, oldest first; [] for unknown or cleared names."""
        if name not in self._pending:
            self.ignored += 1
            return []
        played = []
        while self._pending:
            key, mark = self._pending.popitem(last=False)
            played.append(mark)
            if key == name:
                break
        self.acked += len(played)
        return played

    def clear(self) -> list[Mark]:
        """Forget every pending mark (their audio was discarded); returns them."""
        dropped = list(self._pending.values())
        self._pending.clear()
        return dropped
