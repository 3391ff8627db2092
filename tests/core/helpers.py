"""Small nodes the graph tests are built from."""

from __future__ import annotations

import asyncio

from agent import DOWNSTREAM, Node
from agent.frames import Frame, OutputAudioFrame


class Collect(Node):
    """Records every frame it sees (with direction), then passes it on."""

    def __init__(self, name: str | None = None, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(name=name, **kwargs)
        self.seen: list[tuple[Frame, int]] = []

    async def process(self, frame: Frame, direction: int) -> None:
        self.seen.append((frame, direction))
        await self.emit(frame, direction)

    def of(self, cls: type, direction: int = DOWNSTREAM) -> list:
        return [f for f, d in self.seen if isinstance(f, cls) and d == direction]


class SlowSink(Collect):
    """A buffered consumer that takes ``delay`` per media frame (a real-time speaker)."""

    def __init__(self, delay: float, max_queued_media: int = 5) -> None:
        super().__init__(name="slow-sink", buffered=True, max_queued_media=max_queued_media)
        self.delay = delay

    async def process(self, frame: Frame, direction: int) -> None:
        if frame.media:
            await asyncio.sleep(self.delay)
        await super().process(frame, direction)


def bot_audio(n: int, ms: int = 20, rate: int = 16000, text: str = "") -> OutputAudioFrame:
    return OutputAudioFrame(pcm=b"\x01\x00" * (rate * ms // 1000), sample_rate=rate, text=text or f"w{n} ")
