"""``VADNode``: turns the caller's audio into speech start/stop frames.

Audio passes through untouched; the node adds ``UserStartedSpeakingFrame`` and
``UserStoppedSpeakingFrame`` after the audio frame that completed the decision,
dated with the media time (``pts``) of the estimated true onset/offset. With
``VADParams.pause_ms`` it also announces short pauses inside a segment (and
the caller going on) as ``UserPausedFrame``, long before the hangover ends the
segment: the cue for speculative transcription.

Media time is counted in samples from the first frame's ``pts``, the same clock
the STT node uses, so a timestamp from here indexes the STT's buffer exactly
even when a transport's own timestamps jitter.

Silero runs inline, in the task that delivers the audio: a 32 ms window costs
0.11-0.18 ms on this project's 2-core CPU (``bench/speech.py``; onnxruntime's
own ``run`` is ~0.1 ms of that), about 0.5 % of a core while the caller speaks,
and the webrtcvad gate makes silent windows cost ~12 µs. A thread hand-off per
window would cost about as much as the inference and add latency.
"""

from __future__ import annotations

import time

from agent.audio import Resampler, to_mono
from agent.frames import (
    EndFrame,
    Frame,
    InputAudioFrame,
    MetricsFrame,
    UserPausedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from agent.metrics import USER_SPEECH_END, USER_SPEECH_START
from agent.node import Node
from agent.vad.detector import SpeechDetector, VADEvent, VADParams
from agent.vad.silero import shared_session
from agent.workers import run_blocking

_NATIVE_RATES = (8000, 16000)


class VADNode(Node):
    """Silero VAD behind a webrtcvad gate, with start/stop hysteresis."""

    def __init__(self, params: VADParams | None = None, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.params = params or VADParams()
        self.detector: SpeechDetector | None = None
        self._resampler: Resampler | None = None
        self._first_pts: float | None = None
        self._turn_id = 0

    async def on_start(self) -> None:
        # Load the shared model off the event loop before the first audio arrives.
        await run_blocking(shared_session)

    @property
    def speaking(self) -> bool:
        return self.detector is not None and self.detector.speaking

    @property
    def turn_id(self) -> int:
        """Id of the current (or last) speech segment; counts from 1."""
        return self._turn_id

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, InputAudioFrame):
            events = self._analyse(frame)  # first, so malformed audio stops here
            await self.emit(frame, direction)
            for event in events:
                await self._announce(event)
            return
        if isinstance(frame, EndFrame) and self.detector is not None:
            # The stream ended mid-speech: close the segment so nothing waits for it.
            event = self.detector.finish()
            if event is not None:
                await self._announce(event)
        await self.emit(frame, direction)

    def _analyse(self, frame: InputAudioFrame) -> list[VADEvent]:
        if len(frame.pcm) % (2 * frame.channels):
            raise ValueError(
                f"malformed audio frame: {len(frame.pcm)} bytes is not whole "
                f"{frame.channels}-channel int16 samples"
            )
        if self._first_pts is None:
            self._first_pts = frame.pts
        samples = to_mono(frame.samples, frame.channels)
        rate = frame.sample_rate
        if rate not in _NATIVE_RATES:
            if self._resampler is None or self._resampler.in_rate != rate:
                self._resampler = Resampler(rate, 16000)
            samples, rate = self._resampler.process(samples), 16000
        if self.detector is None:
            self.detector = SpeechDetector(rate, self.params)
        elif self.detector.sample_rate != rate:
            raise ValueError(f"input sample rate changed mid-call ({self.detector.sample_rate} → {rate} Hz)")
        return self.detector.process(samples)

    async def _announce(self, event: VADEvent) -> None:
        assert self.detector is not None
        rate = self.detector.sample_rate
        pts = (self._first_pts or 0.0) + event.sample / rate
        # Map media time to the monotonic clock: the newest sample is "now".
        at = time.monotonic() - (self.detector.position - event.sample) / rate
        if event.kind == "start":
            self._turn_id += 1
            await self.emit(MetricsFrame(name=USER_SPEECH_START, turn_id=self._turn_id, t=at))
            await self.emit(UserStartedSpeakingFrame(pts=pts, turn_id=self._turn_id))
        elif event.kind in ("pause", "resume"):
            await self.emit(UserPausedFrame(pts=pts, turn_id=self._turn_id, paused=event.kind == "pause"))
        else:
            await self.emit(MetricsFrame(name=USER_SPEECH_END, turn_id=self._turn_id, t=at))
            await self.emit(UserStoppedSpeakingFrame(pts=pts, turn_id=self._turn_id))
