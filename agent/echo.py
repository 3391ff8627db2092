"""Echo cancellation from the known playout: the bot must not barge in on itself.

On a speakerphone, or a phone line with a leaky hybrid, the caller's audio
carries the bot's own voice back, attenuated and late. A VAD cannot tell that
echo from a caller who talks over the bot, so every answer would interrupt
itself. The output transport knows exactly what it played and when: asked
with a ``PlayoutReferenceRequestFrame``, it sends each played chunk upstream
as a ``PlayedAudioFrame``. ``EchoCanceller`` sits first in the graph (before
the VAD) and uses that reference:

1. **Delay and gain**: the reference is placed on the input's timeline by
   wall clock, then the echo's delay and gain are found by normalised
   cross-correlation (FFT) of the last second of input against it; a peak
   above ``lock_correlation`` locks the echo path, re-checked every second.
2. **Subtraction**: a frequency-domain NLMS filter (overlap-save, one block
   per input frame, ``pre_ms`` of taps before the found delay) starts from
   the single tap the correlation found and adapts to the path's colouring
   while only echo is present (a Geigel-style check freezes it during
   double talk).
3. **Residual gate**: frames whose residual is close to what the filter
   leaves of pure echo are attenuated (``suppress_gain``), so the VAD never
   fires on a residue; a caller speaking over the bot stands well above it.
   Before the path is locked (the first ~0.3 s of the first answer), a
   half-duplex gate attenuates input quieter than ``max_echo_gain`` times the
   reference; after ``acquire_s`` of reference with no echo found, the input
   is left alone (a headset has no echo).

Handles: a linear echo path (delay up to ``max_delay_ms``, any gain below
about 0 dB, colouring within the filter's 20 ms span), G.711 and line noise,
a path that changes between answers. Does not handle: reverberant rooms with
tails longer than the filter, non-linear loudspeaker distortion, or clock
drift between the far end's playout and capture (the correlation re-locks,
but the filter then re-converges); soft double talk during the first answer
before the path is locked is attenuated.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from agent.audio import Resampler, to_mono
from agent.frames import (
    Frame,
    InputAudioFrame,
    PlayedAudioFrame,
    PlayoutReferenceRequestFrame,
    StartFrame,
)
from agent.node import DOWNSTREAM, Node

logger = logging.getLogger(__name__)

_FULL_SCALE = 32768.0
_NOISE_FLOOR = (10 ** (-65 / 20)) ** 2  # mean power (full scale 1.0) below which nothing matters


class EchoCanceller(Node):
    """Removes the bot's own voice from the caller's audio, using the played audio as reference."""

    def __init__(
        self,
        *,
        max_delay_ms: float = 500.0,
        lock_correlation: float = 0.45,
        max_echo_gain: float = 0.5,
        suppress_gain: float = 0.1,
        pre_ms: float = 2.5,
        acquire_s: float = 2.0,
        step_size: float = 0.2,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.max_delay_ms = max_delay_ms
        self.lock_correlation = lock_correlation
        self.max_echo_gain = max_echo_gain
        self.suppress_gain = suppress_gain
        self.pre_ms = pre_ms
        self.acquire_s = acquire_s
        self.step_size = step_size
        self.rate: int | None = None
        self._first_pts: float | None = None
        self._anchor: float | None = None  # wall time of input sample 0
        self._anchor_frames = 0
        self._mic: _Ring | None = None
        self._ref: _Ring | None = None
        self._ref_resampler: Resampler | None = None
        self._ref_active_until = -1  # input index until which the reference may still echo
        self._ref_seen_s = 0.0  # seconds of reference played so far (acquisition budget)
        self._next_estimate = 0
        self._filter: _BlockNLMS | None = None
        self.delay: int | None = None  # locked echo delay, samples
        self.gain = 0.0
        self.correlation = 0.0
        self._residual_ratio = 0.05
        self._candidate: int | None = None  # a delay seen once, locked when seen again
        self._harm = 0  # recent frames where subtracting made the input louder
        self.stats: dict[str, Any] = {"frames": 0, "suppressed": 0, "locks": 0, "unlocks": 0, "echo_frames": 0}

    # ---------------------------------------------------------------- frames

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, PlayedAudioFrame):
            self._reference(frame)
            return  # consumed: nothing upstream needs the reference
        if isinstance(frame, InputAudioFrame) and direction == DOWNSTREAM:
            await self.emit(self._cancel(frame), direction)
            return
        await self.emit(frame, direction)
        if isinstance(frame, StartFrame):
            await self.emit(PlayoutReferenceRequestFrame(enabled=True))

    # -------------------------------------------------------------- timeline

    def _setup(self, rate: int) -> None:
        self.rate = rate
        self._mic = _Ring(int(rate * 3.0))
        self._ref = _Ring(int(rate * 4.0))

    def _index(self, pts: float) -> int:
        assert self.rate is not None
        return round((pts - (self._first_pts or 0.0)) * self.rate)

    def _reference(self, frame: PlayedAudioFrame) -> None:
        if self.rate is None or self._anchor is None or self._ref is None:
            return  # no input yet: nothing to echo into
        samples = np.frombuffer(frame.pcm, dtype=np.int16)
        if frame.sample_rate != self.rate:
            if self._ref_resampler is None or self._ref_resampler.in_rate != frame.sample_rate:
                self._ref_resampler = Resampler(frame.sample_rate, self.rate)
            samples = self._ref_resampler.process(samples)
        if not len(samples):
            return
        start = round((frame.played_at - self._anchor) * self.rate)
        # Chunks of one playout run play back to back (the far end buffers a
        # late chunk rather than leaving a gap): snap the sender's jitter away.
        if -len(samples) // 2 <= start - self._ref.end <= 3 * len(samples):
            start = self._ref.end
        self._ref.write(start, samples.astype(np.float32) / _FULL_SCALE)
        self._ref_active_until = max(self._ref_active_until, start + len(samples) + self._max_delay())
        if np.any(samples):
            self._ref_seen_s += len(samples) / self.rate

    def _max_delay(self) -> int:
        assert self.rate is not None
        return int(self.rate * self.max_delay_ms / 1000)

    # ----------------------------------------------------------- processing

    def _cancel(self, frame: InputAudioFrame) -> InputAudioFrame:
        if len(frame.pcm) % (2 * frame.channels):
            raise ValueError(f"malformed audio frame: {len(frame.pcm)} bytes is not whole int16 samples")
        if self.rate is None:
            self._setup(frame.sample_rate)
            self._first_pts = frame.pts
        elif frame.sample_rate != self.rate:
            raise ValueError(f"input sample rate changed mid-call ({self.rate} → {frame.sample_rate} Hz)")
        assert self._mic is not None and self._ref is not None
        samples = to_mono(frame.samples, frame.channels)
        start = self._index(frame.pts)
        self._track_anchor(start + len(samples))
        mic = samples.astype(np.float32) / _FULL_SCALE
        self._mic.write(start, mic)
        self.stats["frames"] += 1
        if start >= self._ref_active_until or not len(mic):
            return frame if frame.channels == 1 else _mono_frame(frame, samples)
        if start + len(mic) >= self._next_estimate:
            self._estimate(start + len(mic))
        out = self._process(start, mic)
        cleaned = np.clip(np.round(out * _FULL_SCALE), -32768, 32767).astype(np.int16)
        return InputAudioFrame(pcm=cleaned.tobytes(), sample_rate=frame.sample_rate, channels=1, pts=frame.pts)

    def _track_anchor(self, end_index: int) -> None:
        """Wall time of input sample 0, from the earliest arrival seen in the first second."""
        assert self.rate is not None
        if self._anchor_frames >= 50:
            return
        self._anchor_frames += 1
        anchor = time.monotonic() - end_index / self.rate
        self._anchor = anchor if self._anchor is None else min(self._anchor, anchor)

    def _process(self, start: int, mic: np.ndarray) -> np.ndarray:
        assert self._ref is not None and self.rate is not None
        n = len(mic)
        p_mic = float(np.mean(mic**2))
        if self.delay is None:
            if self._ref_seen_s > self.acquire_s:
                return mic  # no echo path found: leave the caller alone
            return self._half_duplex(start, mic, p_mic)
        pre = int(self.rate * self.pre_ms / 1000)
        if self._filter is None or self._filter.block != n:
            self._filter = _BlockNLMS(n, pre, self.gain, self.step_size)
        x = self._ref.read(start - self.delay + pre - n, 2 * n)  # previous block + this block
        echo, residual = self._filter.run(x)
        residual = (mic - echo).astype(np.float32)
        p_echo = float(np.mean(echo**2))
        p_res = float(np.mean(residual**2))
        if p_echo <= _NOISE_FLOOR:
            return residual
        self.stats["echo_frames"] += 1
        if p_res > 1.2 * p_mic + _NOISE_FLOOR:  # subtracting adds energy: the path moved
            self._harm += 1
            if self._harm >= 25:
                self._unlock("subtraction kept adding energy")
            return self._half_duplex(start, mic, p_mic)
        self._harm = max(0, self._harm - 1)
        loud_reference = float(np.mean(x[n:] ** 2)) > 1e-4  # adapt on real excitation only
        echo_only = np.max(np.abs(mic)) < max(0.6, 2.0 * abs(self.gain)) * max(float(np.max(np.abs(x))), 1e-9)
        if echo_only and loud_reference:
            self._filter.adapt(x, residual)
            ratio = min(1.0, p_res / p_echo)
            self._residual_ratio += 0.05 * (ratio - self._residual_ratio)
        near_end = p_res > max(4.0 * self._residual_ratio, 0.03) * p_echo + _NOISE_FLOOR
        if near_end:
            return residual
        self.stats["suppressed"] += 1
        return residual * self.suppress_gain

    def _half_duplex(self, start: int, mic: np.ndarray, p_mic: float) -> np.ndarray:
        """Without a usable echo path: attenuate input quieter than the loudest echo could be."""
        assert self._ref is not None
        n = len(mic)
        window = self._ref.read(start - self._max_delay(), self._max_delay() + n)
        p_ref = _max_block_power(window, n)
        if p_mic < self.max_echo_gain**2 * p_ref and p_ref > _NOISE_FLOOR:
            self.stats["suppressed"] += 1
            return mic * self.suppress_gain
        return mic

    def _estimate(self, end: int) -> None:
        """Find (or re-check) the echo path by cross-correlating input and reference."""
        assert self._mic is not None and self._ref is not None and self.rate is not None
        searching = self.delay is None and self._ref_seen_s <= self.acquire_s
        self._next_estimate = end + int(self.rate * (0.1 if searching else 1.0))
        span = int(self.rate * 1.0)
        max_delay = self._max_delay()
        mic = self._mic.read(end - span, span)
        ref = self._ref.read(end - span - max_delay, span + max_delay)
        block = self.rate // 50
        # Sparse windows correlate by chance: both sides must carry sound most of the time.
        if _active_fraction(mic, block) < 0.5 or _active_fraction(ref, block) < 0.3:
            return
        step = max(1, self.rate // 16000)  # wideband input: correlate at 16 kHz or so
        if step > 1:
            mic, ref = _decimate(mic, step), _decimate(ref, step)
        delay, corr, gain = _correlate(mic, ref, max_delay // step)
        delay *= step
        self.correlation = corr
        tolerance = max(1, self.rate // 4000)
        if corr < self.lock_correlation or not 0.01 < abs(gain) < 2.0:
            self._candidate = None
            return
        if self.delay is not None and abs(delay - self.delay) <= tolerance:
            self._candidate = None
            return  # the locked path still holds
        if self._candidate is None or abs(delay - self._candidate) > tolerance:
            self._candidate = delay  # seen once: confirm with the next window
            return
        self._candidate = None
        self.delay, self.gain = delay, gain
        self._filter = None  # rebuilt around the new delay
        self._residual_ratio, self._harm = 0.05, 0
        self.stats["locks"] += 1
        self.stats["delay_ms"] = round(1000.0 * delay / self.rate, 1)
        self.stats["gain_db"] = round(20 * np.log10(max(abs(gain), 1e-6)), 1)
        logger.debug("echo path locked: %.1f ms, %.1f dB, r=%.2f", 1000 * delay / self.rate,
                     self.stats["gain_db"], corr)

    def _unlock(self, why: str) -> None:
        logger.debug("echo path unlocked: %s", why)
        self.delay, self._filter, self._harm = None, None, 0
        self.stats["unlocks"] += 1


def _mono_frame(frame: InputAudioFrame, samples: np.ndarray) -> InputAudioFrame:
    return InputAudioFrame(pcm=samples.astype(np.int16).tobytes(), sample_rate=frame.sample_rate, pts=frame.pts)


def _decimate(samples: np.ndarray, step: int) -> np.ndarray:
    """Every ``step``-th sample of a boxcar-smoothed copy (enough to find a delay)."""
    usable = len(samples) - len(samples) % step
    return samples[:usable].reshape(-1, step).mean(axis=1)


def _active_fraction(window: np.ndarray, block: int) -> float:
    """Share of ``block``-sample blocks above the noise floor."""
    usable = len(window) - len(window) % block
    if usable <= 0:
        return 0.0
    return float(np.mean(np.mean(window[:usable].reshape(-1, block) ** 2, axis=1) > _NOISE_FLOOR))


def _max_block_power(window: np.ndarray, block: int) -> float:
    usable = len(window) - len(window) % block
    if usable <= 0:
        return float(np.mean(window**2)) if len(window) else 0.0
    return float(np.max(np.mean(window[:usable].reshape(-1, block) ** 2, axis=1)))


def _correlate(mic: np.ndarray, ref: np.ndarray, max_delay: int) -> tuple[int, float, float]:
    """(delay, normalised correlation, gain) of the best match of ``mic`` in ``ref``.

    ``ref`` holds ``max_delay`` samples before the ``mic`` window: lag d pairs
    mic[t] with ref[t + max_delay - d].
    """
    span = len(mic)
    size = 1 << int(np.ceil(np.log2(span + len(ref))))
    spectrum = np.fft.rfft(ref, size) * np.conj(np.fft.rfft(mic, size))
    raw = np.fft.irfft(spectrum, size)[: max_delay + 1]  # raw[k] = sum mic[t] ref[t + k]
    energy = np.concatenate(([0.0], np.cumsum(ref.astype(np.float64) ** 2)))
    ks = np.arange(max_delay + 1)
    ref_energy = energy[ks + span] - energy[ks]
    mic_energy = float(np.sum(mic.astype(np.float64) ** 2))
    norm = raw / np.sqrt(np.maximum(ref_energy * mic_energy, 1e-12))
    best = int(np.argmax(np.abs(norm)))
    gain = float(raw[best] / max(ref_energy[best], 1e-12))
    return max_delay - best, float(abs(norm[best])), gain


class _BlockNLMS:
    """Frequency-domain NLMS (overlap-save), block = filter length = one input frame."""

    def __init__(self, block: int, pre: int, gain: float, step: float) -> None:
        self.block = block
        taps = np.zeros(2 * block)
        taps[min(pre, block - 1)] = gain
        self.weights = np.fft.rfft(taps)
        self.power = np.full(block + 1, 1e-6)
        self.step = step
        self._spectrum: np.ndarray | None = None

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Echo estimate for this block, and the reference spectrum; ``x`` is the last two blocks."""
        spectrum = np.fft.rfft(x)
        self._spectrum = spectrum
        echo = np.fft.irfft(spectrum * self.weights)[self.block :]
        return echo.astype(np.float32), spectrum

    def adapt(self, x: np.ndarray, residual: np.ndarray) -> None:
        spectrum = self._spectrum if self._spectrum is not None else np.fft.rfft(x)
        self.power = 0.9 * self.power + 0.1 * np.abs(spectrum) ** 2
        error = np.fft.rfft(np.concatenate((np.zeros(self.block), residual)))
        # Regularised per bin: quiet bins of the reference must not turn line noise into huge steps.
        regularise = 0.1 * float(np.mean(self.power)) + 1e-6
        gradient = np.fft.irfft(self.step * np.conj(spectrum) * error / (self.power + regularise))
        gradient[self.block :] = 0.0  # keep the filter causal and one block long
        self.weights += np.fft.rfft(gradient)


class _Ring:
    """Samples addressed by absolute index; only the last ``size`` are kept."""

    __slots__ = ("buffer", "size", "end")

    def __init__(self, size: int) -> None:
        self.buffer = np.zeros(size, dtype=np.float32)
        self.size = size
        self.end = 0  # absolute index just past the newest sample written

    def write(self, start: int, samples: np.ndarray) -> None:
        if start > self.end:  # a gap: silence
            gap = min(start - self.end, self.size)
            self._put(start - gap, np.zeros(gap, dtype=np.float32))
        samples = samples[-self.size :]
        start = max(start, start + len(samples) - self.size)
        self._put(start, samples)
        self.end = max(self.end, start + len(samples))

    def _put(self, start: int, samples: np.ndarray) -> None:
        idx = np.arange(start, start + len(samples)) % self.size
        self.buffer[idx] = samples

    def read(self, start: int, count: int) -> np.ndarray:
        """``count`` samples from ``start``; zeros where nothing (or nothing still kept) was written."""
        absolute = np.arange(start, start + count)
        out = self.buffer[absolute % self.size]
        valid = (absolute >= max(0, self.end - self.size)) & (absolute < self.end)
        return np.where(valid, out, np.float32(0.0))
