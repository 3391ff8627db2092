"""Streaming, stateful resampling with soxr.

One ``Resampler`` per stream: soxr keeps filter state between chunks, so
20 ms frames resample without clicks at frame edges (resampling each chunk on
its own is what makes telephony audio sound choppy). The filter also holds the
newest few ms back (up to ~65 ms at "HQ"), so whoever knows a stream has ended
(the end of a TTS utterance) calls :meth:`Resampler.flush`, or its last words
are cut short.
"""

from __future__ import annotations

import numpy as np
import soxr


class Resampler:
    """int16 in, int16 out, any rate pair; a no-op when the rates match."""

    def __init__(self, in_rate: int, out_rate: int, channels: int = 1, quality: str = "HQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.channels = channels
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, channels, dtype="int16", quality=quality)
        )

    def process(self, pcm: bytes | np.ndarray, last: bool = False) -> np.ndarray:
        """Resample a chunk; ``last=True`` flushes what the filter still holds."""
        samples = np.frombuffer(pcm, dtype=np.int16) if isinstance(pcm, (bytes, bytearray, memoryview)) else pcm
        if self._stream is None:
            return samples
        if self.channels > 1:
            samples = samples.reshape(-1, self.channels)
        out = self._stream.resample_chunk(samples, last=last)
        return out.reshape(-1)

    def process_bytes(self, pcm: bytes, last: bool = False) -> bytes:
        return self.process(pcm, last).tobytes()

    def flush(self) -> np.ndarray:
        """The audio the filter still holds; the stream then starts afresh (reusable)."""
        if self._stream is None:
            return np.zeros(0, dtype=np.int16)
        tail = self._stream.resample_chunk(np.zeros((0, self.channels), dtype=np.int16), last=True)
        self._stream.clear()
        return tail.reshape(-1)


def resample(samples: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Resample a whole clip at once (int16 or float32, mono)."""
    if in_rate == out_rate:
        return samples
    return soxr.resample(samples, in_rate, out_rate)
