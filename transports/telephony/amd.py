"""Answering-machine detection for outbound calls: greeting shape, beep, words.

A person answers with a short "Hello?" and then waits; a voicemail greeting
talks for seconds ("Hi, you've reached...") and ends with a beep. So:

* **greeting length**: speech that runs past ``machine_speech_s`` with only
  short pauses → machine; a short burst followed by ``human_silence_s`` of
  quiet → human;
* **transcript cues**: "leave a message", "after the tone", "voicemail"...
  in a ``TranscriptionFrame`` → machine (needs an STT node upstream of this one
  to be useful; without one the audio heuristics still decide);
* **beep**: a single steady tone (350–2500 Hz) for ``beep_s``, found with a
  bank of Goertzel single-frequency detectors on each 20 ms frame.

The verdict is an ``EventFrame(kind="amd", data={"result": "human"|"machine"})``;
a beep is ``EventFrame(kind="amd_beep")``. With ``voicemail_message`` set the
node also leaves that message after the beep (``SpeakFrame`` then
``EndFrame``), which is what most outbound bots want.
"""

from __future__ import annotations

import time
from functools import lru_cache

import numpy as np

from agent.frames import EndFrame, EventFrame, Frame, InputAudioFrame, SpeakFrame, StartFrame, TranscriptionFrame
from agent.node import DOWNSTREAM, Node

MACHINE_PHRASES = ("leave a message", "leave your message", "after the tone", "after the beep", "voicemail",
                   "voice mail", "not available", "can't come to the phone", "cannot take your call", "mailbox")
_BEEP_FREQS = np.arange(350.0, 2525.0, 25.0)


@lru_cache(maxsize=8)
def _bank(rate: int, length: int) -> np.ndarray:
    return np.exp(-2j * np.pi * np.outer(_BEEP_FREQS, np.arange(length)) / rate)


def goertzel_power(frame: np.ndarray, rate: int) -> np.ndarray:
    """Power at each bank frequency (Goertzel / single-bin DFT), vectorised over the bank."""
    return np.abs(_bank(rate, len(frame)) @ frame.astype(np.float64)) ** 2


class AnsweringMachineDetector(Node):
    def __init__(
        self,
        *,
        machine_speech_s: float = 2.4,
        human_silence_s: float = 1.0,
        max_pause_s: float = 0.6,
        beep_s: float = 0.16,
        speech_level: float = 400.0,
        voicemail_message: str | None = None,
    ) -> None:
        super().__init__(name="amd")
        self.machine_speech_s, self.human_silence_s = machine_speech_s, human_silence_s
        self.max_pause_s, self.beep_s, self.speech_level = max_pause_s, beep_s, speech_level
        self.voicemail_message = voicemail_message
        self.result: str | None = None
        self.beep_at: float | None = None
        self._speech_s = 0.0  # current speech run (short pauses bridged)
        self._quiet_s = 0.0
        self._heard_speech = False
        self._tone_freq: float | None = None
        self._tone_s = 0.0
        self._started = 0.0
        self._left_message = False

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, StartFrame):
            self._started = time.monotonic()
        elif isinstance(frame, InputAudioFrame) and direction == DOWNSTREAM:
            await self._analyse(frame)
        elif isinstance(frame, TranscriptionFrame) and self.result is None:
            text = frame.text.lower()
            if any(phrase in text for phrase in MACHINE_PHRASES):
                await self._decide("machine", "transcript")
        await self.emit(frame, direction)

    async def _analyse(self, frame: InputAudioFrame) -> None:
        samples = frame.samples.astype(np.float64)
        if not samples.size:
            return
        seconds = frame.duration
        if self._beep(samples, frame.sample_rate, seconds):
            await self._on_beep()
            return
        loud = float(np.sqrt(np.mean(samples**2))) > self.speech_level
        if loud:
            self._heard_speech = True
            self._speech_s += seconds + (self._quiet_s if self._quiet_s <= self.max_pause_s else 0.0)
            if self._quiet_s > self.max_pause_s:
                self._speech_s = seconds  # a long pause started a new run
            self._quiet_s = 0.0
        else:
            self._quiet_s += seconds
        if self.result is None:
            if self._speech_s >= self.machine_speech_s:
                await self._decide("machine", "long greeting")
            elif self._heard_speech and self._quiet_s >= self.human_silence_s:
                await self._decide("human", "short greeting then silence")

    def _beep(self, samples: np.ndarray, rate: int, seconds: float) -> bool:
        """True once a steady single tone has lasted ``beep_s``."""
        energy = float(np.sum(samples**2))
        if np.sqrt(energy / len(samples)) < self.speech_level:
            self._tone_s, self._tone_freq = 0.0, None
            return False
        total = energy * len(samples) / 2  # a pure tone's DFT power at its frequency (Parseval)
        power = goertzel_power(samples, rate)
        peak = int(np.argmax(power))
        tonal = float(power[max(0, peak - 1) : peak + 2].sum()) / total > 0.8
        freq = float(_BEEP_FREQS[peak])
        if tonal and (self._tone_freq is None or abs(freq - self._tone_freq) <= 50.0):
            self._tone_s += seconds
            self._tone_freq = freq
        else:
            self._tone_s, self._tone_freq = 0.0, None
        return self._tone_s >= self.beep_s and self.beep_at is None

    async def _on_beep(self) -> None:
        self.beep_at = time.monotonic()
        if self.result is None:
            await self._decide("machine", "beep")
        await self.emit(EventFrame(kind="amd_beep", data={"frequency_hz": self._tone_freq}))
        if self.voicemail_message and not self._left_message:
            self._left_message = True
            await self.emit(SpeakFrame(text=self.voicemail_message, uninterruptible=True))
            await self.emit(EndFrame(reason="voicemail_left"))

    async def _decide(self, result: str, reason: str) -> None:
        self.result = result
        after = time.monotonic() - self._started
        await self.emit(EventFrame(kind="amd", data={"result": result, "reason": reason, "after_s": round(after, 2)}))
