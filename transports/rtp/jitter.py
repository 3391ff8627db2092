"""Adaptive jitter buffer with loss concealment, indexed by RTP timestamp.

The playout side pulls one fixed frame per tick (20 ms at 8 kHz), whatever
packet size the far end sends (10, 20, 30, 60 ms ptime all work because the
buffer is addressed by sample timestamp, not by packet).

Delay adapts in both directions without a separate controller:

* it **grows** on underrun: when nothing is buffered for the playout cursor
  the buffer stops the cursor and refills to the target before playing again,
  so a late burst is absorbed rather than discarded;
* it **shrinks** when more than the target is queued: whole frames are
  skipped (quiet ones preferred), so latency does not ratchet up forever.

The target itself follows the RFC 3550 interarrival-jitter estimate.
Missing audio is concealed by repeating the last frame with a fading gain,
then silence; a talk spurt that jumps far ahead (silence suppression, hold)
resynchronises the cursor instead of concealing the gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transports.rtp.packet import ts_delta

# Gains for the 1st, 2nd, 3rd consecutive concealed frame; then silence.
_CONCEAL_GAINS = (0.9, 0.6, 0.3)
#: Chunks held at most (5 s of 20 ms packets, far beyond ``max_delay_ms``): a
#: peer sending scattered timestamps cannot grow memory, or the per-tick sort.
MAX_CHUNKS = 256


@dataclass(slots=True)
class JitterStats:
    received: int = 0
    late: int = 0
    duplicates: int = 0
    concealed_frames: int = 0
    skipped_frames: int = 0
    resyncs: int = 0
    overflow: int = 0  # chunks dropped because MAX_CHUNKS were held
    jitter_ms: float = 0.0
    target_ms: float = 0.0


class JitterBuffer:
    def __init__(
        self,
        *,
        clock_rate: int = 8000,
        frame_samples: int = 160,
        min_delay_ms: float = 40.0,
        max_delay_ms: float = 300.0,
    ) -> None:
        self.clock_rate = clock_rate
        self.frame_samples = frame_samples
        self._min_delay = int(clock_rate * min_delay_ms / 1000)
        self._max_delay = int(clock_rate * max_delay_ms / 1000)
        self.stats = JitterStats()
        self.reset()

    def reset(self) -> None:
        """Forget the stream (new SSRC, re-INVITE): next packet starts afresh."""
        self._chunks: dict[int, np.ndarray] = {}
        self._ref_raw: int | None = None
        self._ref_ext = 0
        self._cursor: int | None = None
        self._buffering = True
        self._last_frame = np.zeros(self.frame_samples, dtype=np.int16)
        self._lost_run = 0
        self._packet_samples = self.frame_samples
        self._jitter = 0.0  # RFC 3550 J, in timestamp units
        self._last_transit: float | None = None

    # ------------------------------------------------------------------ input

    def push(self, timestamp: int, samples: np.ndarray, arrival: float) -> None:
        """Add decoded audio that arrived at ``arrival`` (seconds, monotonic)."""
        ext = self._extend(timestamp)
        self.stats.received += 1
        self._update_jitter(ext, arrival)
        count = len(samples)
        if count == 0:
            return
        self._packet_samples = count
        if self._cursor is not None and ext + count <= self._cursor:
            self.stats.late += 1
            return
        if ext in self._chunks:
            self.stats.duplicates += 1
            return
        self._chunks[ext] = samples
        if len(self._chunks) > MAX_CHUNKS:
            del self._chunks[max(self._chunks)]  # the farthest ahead is the least likely to play
            self.stats.overflow += 1

    def _extend(self, timestamp: int) -> int:
        if self._ref_raw is None:
            self._ref_raw, self._ref_ext = timestamp, 0
            return 0
        ext = self._ref_ext + ts_delta(timestamp, self._ref_raw)
        if ext > self._ref_ext:
            self._ref_raw, self._ref_ext = timestamp, ext
        return ext

    def _update_jitter(self, ext: int, arrival: float) -> None:
        transit = arrival * self.clock_rate - ext
        if self._last_transit is not None:
            d = abs(transit - self._last_transit)
            if d < self._max_delay * 4:  # a talk-spurt jump is not jitter
                self._jitter += (d - self._jitter) / 16.0
        self._last_transit = transit
        self.stats.jitter_ms = 1000.0 * self._jitter / self.clock_rate

    # ----------------------------------------------------------------- output

    @property
    def target_delay(self) -> int:
        """Samples to hold before playing: a packet plus three jitters."""
        wanted = self._packet_samples + 3.0 * self._jitter
        target = int(min(self._max_delay, max(self._min_delay, wanted)))
        self.stats.target_ms = 1000.0 * target / self.clock_rate
        return target

    @property
    def buffered(self) -> int:
        """Samples queued ahead of the playout cursor (holes included)."""
        if not self._chunks:
            return 0
        start = self._cursor if self._cursor is not None else min(self._chunks)
        end = max(k + len(v) for k, v in self._chunks.items())
        return max(0, end - start)

    def pop(self) -> tuple[np.ndarray, bool]:
        """One frame for this tick, and whether it is real (not concealment)."""
        if self._buffering:
            if not self._chunks or self.buffered < self.target_delay:
                return self._conceal(), False
            self._buffering = False
            earliest = min(self._chunks)
            if self._cursor is None or earliest - self._cursor > self._max_delay:
                if self._cursor is not None:
                    self.stats.resyncs += 1
                self._cursor = earliest
        assert self._cursor is not None
        self._drop_excess()
        frame, covered = self._assemble(self._cursor)
        if covered == 0:
            if not any(k >= self._cursor for k in self._chunks):
                self._buffering = True  # underrun: hold the cursor and refill
                return self._conceal(), False
            frame = self._conceal()
            self._cursor += self.frame_samples
            return frame, False
        self._cursor += self.frame_samples
        self._lost_run = 0
        self._last_frame = frame
        return frame, True

    def _assemble(self, start: int) -> tuple[np.ndarray, int]:
        end = start + self.frame_samples
        out = np.zeros(self.frame_samples, dtype=np.int16)
        covered = 0
        for key in sorted(self._chunks):
            if key >= end:
                break
            chunk = self._chunks[key]
            chunk_end = key + len(chunk)
            if chunk_end <= start:
                del self._chunks[key]  # stale (arrived late but before cursor moved)
                continue
            lo, hi = max(key, start), min(chunk_end, end)
            out[lo - start : hi - start] = chunk[lo - key : hi - key]
            covered += hi - lo
            if chunk_end <= end:
                del self._chunks[key]
        return out, covered

    def _drop_excess(self) -> None:
        """Skip a frame when far more than the target is queued."""
        excess = self.buffered - self.target_delay
        if excess < 2 * self.frame_samples:
            return
        assert self._cursor is not None
        frame, covered = self._assemble(self._cursor)
        loud = covered and float(np.abs(frame.astype(np.int32)).mean()) > 500.0
        if loud and excess < 6 * self.frame_samples:
            # Keep this (loud) frame; it will be put back and played now.
            self._chunks[self._cursor] = frame
            return
        self._cursor += self.frame_samples
        self.stats.skipped_frames += 1

    def _conceal(self) -> np.ndarray:
        if self._cursor is None:  # the stream has not started: plain silence
            return np.zeros(self.frame_samples, dtype=np.int16)
        self.stats.concealed_frames += 1
        run = self._lost_run
        self._lost_run += 1
        if run >= len(_CONCEAL_GAINS):
            return np.zeros(self.frame_samples, dtype=np.int16)
        start = 1.0 if run == 0 else _CONCEAL_GAINS[run - 1]
        gains = np.linspace(start, _CONCEAL_GAINS[run], self.frame_samples)
        return (self._last_frame * gains).astype(np.int16)
