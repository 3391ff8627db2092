"""Speech start/stop decisions from Silero probabilities, with hysteresis.

This is the frame-free core of the VAD: feed it int16 samples at 8 or 16 kHz
and it returns start/stop events at sample positions. Keeping it free of frames
and timestamps makes it easy to test and to reuse (benchmarks, offline files).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from agent.vad.silero import SileroStream
from agent.vad.webrtc_gate import WebRTCGate

#: Silero's recurrent state keeps a window or so of high probability after the
#: voice ends; dating the offset one window earlier halves the median error
#: (measured on piper speech: +28..139 ms late without this correction).
_TAIL_WINDOWS = 1


@dataclass(frozen=True, slots=True)
class VADParams:
    """Hysteresis: start high and fast, stop low and only after a hangover.

    The defaults come from measurements on this project's CPU with piper
    speech: a 500 ms hangover never split a sentence at its natural comma or
    full-stop pauses (up to ~400 ms), 300 ms split one turn in ten.
    """

    start_threshold: float = 0.5
    """A window at or above this probability counts as speech."""
    min_speech_ms: float = 64.0
    """Speech needed before a start is declared (filters clicks and coughs)."""
    stop_threshold: float = 0.35
    """A window below this counts as silence; in between keeps the current state."""
    hangover_ms: float = 500.0
    """Silence needed after speech before a stop is declared."""
    use_gate: bool = True
    """Skip Silero on windows webrtcvad is certain hold no speech."""
    pause_ms: float | None = None
    """Silence after which a *pause* is announced inside a segment, long before
    the hangover ends it (then a *resume* if speech comes back first): the cue
    for speculative transcription. None: no pause events."""
    resume_speech_ms: float = 32.0
    """Speech needed to call a pause over: one window. Mid-turn, the caller
    going on is the likeliest sound, and every window spent confirming it is
    one in which the bot may start to answer over them."""

    def __post_init__(self) -> None:
        if not 0.0 < self.stop_threshold <= self.start_threshold < 1.0:
            raise ValueError("need 0 < stop_threshold <= start_threshold < 1")
        if self.min_speech_ms < 0 or self.hangover_ms < 0 or self.resume_speech_ms < 0:
            raise ValueError("min_speech_ms, resume_speech_ms and hangover_ms must be >= 0")
        if self.pause_ms is not None and not 0 < self.pause_ms < self.hangover_ms:
            raise ValueError("pause_ms must be between 0 and hangover_ms")


@dataclass(frozen=True, slots=True)
class VADEvent:
    """``sample`` is the estimated true onset/offset, in samples since stream start."""

    kind: Literal["start", "stop", "pause", "resume"]
    sample: int


class SpeechDetector:
    """Silero (behind an optional webrtcvad gate) plus start/stop hysteresis."""

    def __init__(self, sample_rate: int = 16000, params: VADParams | None = None) -> None:
        self.params = params or VADParams()
        self.sample_rate = sample_rate
        self._silero = SileroStream(sample_rate)
        self._gate = WebRTCGate(sample_rate) if self.params.use_gate else None
        self.window = self._silero.window
        window_ms = 1000.0 * self.window / sample_rate
        self._start_windows = max(1, round(self.params.min_speech_ms / window_ms))
        self._resume_windows = max(1, round(self.params.resume_speech_ms / window_ms))
        self._stop_windows = max(1, round(self.params.hangover_ms / window_ms))
        self._pause_windows = (
            None if self.params.pause_ms is None else min(self._stop_windows - 1, max(1, round(self.params.pause_ms / window_ms)))
        )
        self.paused = False  # inside a segment, after a pause event and before resume/stop
        self._resume_run = 0
        self._pending = np.zeros(0, dtype=np.int16)
        self._position = 0  # samples consumed into windows so far
        self.speaking = False
        self.probability = 0.0
        self._run = 0  # consecutive speech windows while silent / silence windows while speaking
        self._run_start = 0  # first sample of the current candidate onset
        self._speech_start = 0  # onset of the current speech segment
        self._last_speech_end = 0  # end sample of the last speech window
        self._gated_run = 0
        self._gated_window = np.zeros(self.window, dtype=np.int16)
        self.windows_total = 0
        self.windows_gated = 0

    @property
    def position(self) -> int:
        """Samples received so far (the media time of "now", in samples)."""
        return self._position + len(self._pending)

    def finish(self) -> VADEvent | None:
        """Close an open speech segment at the end of the stream."""
        return self._stop() if self.speaking else None

    def process(self, samples: np.ndarray) -> list[VADEvent]:
        """Consume int16 samples; return the events they completed, in order."""
        if len(self._pending):
            samples = np.concatenate((self._pending, samples))
        events: list[VADEvent] = []
        usable = len(samples) - len(samples) % self.window
        for offset in range(0, usable, self.window):
            event = self._step(samples[offset : offset + self.window])
            if event is not None:
                events.append(event)
        self._pending = samples[usable:].copy()
        return events

    def _step(self, window: np.ndarray) -> VADEvent | None:
        start = self._position
        self._position += self.window
        self.windows_total += 1
        self.probability = self._probability(window)
        p = self.params
        if not self.speaking:
            if self.probability >= p.start_threshold:
                if self._run == 0:
                    self._run_start = start
                self._run += 1
                self._last_speech_end = self._position
                if self._run >= self._start_windows:
                    self.speaking, self._run = True, 0
                    self._speech_start = self._run_start
                    return VADEvent("start", self._run_start)
            elif self.probability < p.stop_threshold:
                self._run = 0
            return None
        if self.probability >= p.stop_threshold:
            self._run = 0
            if self.probability >= p.start_threshold:
                self._last_speech_end = self._position
                if self.paused:
                    self._resume_run += 1
                    if self._resume_run >= self._resume_windows:
                        self.paused, self._resume_run = False, 0
                        return VADEvent("resume", start)
            return None
        self._resume_run = 0
        self._run += 1
        if self._run >= self._stop_windows:
            return self._stop()
        if self._run == self._pause_windows and not self.paused:
            self.paused = True
            return VADEvent("pause", self._speech_end())
        return None

    def _speech_end(self) -> int:
        return max(self._last_speech_end - _TAIL_WINDOWS * self.window, self._speech_start)

    def _stop(self) -> VADEvent:
        self.speaking, self._run, self.paused, self._resume_run = False, 0, False, 0
        return VADEvent("stop", self._speech_end())

    def _probability(self, window: np.ndarray) -> float:
        gate_open = (
            self._gate is None
            or self.speaking
            or self._run > 0
            or self.probability >= self.params.stop_threshold
            or self._gate.might_be_speech(window)
        )
        if not gate_open:
            self.windows_gated += 1
            self._gated_run += 1
            self._silero.skip(window)
            self._gated_window = window
            return 0.0
        if self._gated_run:
            # The gate opens late on soft onsets: score the window it just
            # closed as well, so an onset there is not lost (or dated 32 ms late).
            # Silero's state is kept across the gap: it last saw a non-speech
            # window, which measured closer to ungated behaviour than a reset.
            self._silero.rewind()
            self._gated_run = 0
            previous = self._silero(self._gated_window)
            if previous >= self.params.start_threshold:
                self._run, self._run_start = 1, self._position - 2 * self.window
        return self._silero(window)
