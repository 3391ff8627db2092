"""Cut a stream of arbitrary-size PCM chunks into fixed-size frames."""

from __future__ import annotations

from collections.abc import Iterator


class Rechunker:
    """Accumulates int16 PCM bytes and yields frames of ``frame_ms``.

    Transports and codecs want fixed frames (20 ms for RTP and Opus) while
    models produce whatever they like; keeping the remainder here means no
    sample is lost or duplicated at chunk edges.
    """

    def __init__(self, sample_rate: int, frame_ms: int = 20, channels: int = 1) -> None:
        self.sample_rate = sample_rate
        self.frame_bytes = sample_rate * frame_ms // 1000 * 2 * channels
        self._buffer = bytearray()

    def push(self, pcm: bytes) -> Iterator[bytes]:
        self._buffer += pcm
        size = self.frame_bytes
        while len(self._buffer) >= size:
            frame = bytes(self._buffer[:size])
            del self._buffer[:size]
            yield frame

    def flush(self, pad: bool = True) -> bytes | None:
        """The leftover partial frame, zero-padded to full size if ``pad``."""
        if not self._buffer:
            return None
        rest = bytes(self._buffer)
        self._buffer.clear()
        if pad:
            rest += b"\x00" * (self.frame_bytes - len(rest))
        return rest

    def clear(self) -> None:
        self._buffer.clear()

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer)
