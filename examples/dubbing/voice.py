"""The dub's voice: Voxtral, cloned from the speaker, or the local emulator offline.

Voxtral clones zero-shot from 3–25 s of reference audio, across languages: a
Spanish speaker's clip gives their voice to the English dub. Set
``VOXWIRE_VOXTRAL_URL`` (+ ``VOXWIRE_VOXTRAL_DIALECT``, default ``mistral``,
and ``MISTRAL_API_KEY``) to use a real server; cloning needs the Mistral API —
the open-weights vLLM-Omni checkpoint refuses references, and the node then
speaks with its fallback voice. Without the variable an in-process protocol
emulator answers: it speaks with **piper's single English voice, not Voxtral,
so the clone is accepted but not heard**.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.frames import Frame, InputAudioFrame, UserStartedSpeakingFrame, UserStoppedSpeakingFrame
from agent.node import Node
from agent.workers import run_blocking
from tts.voxtral import ReferenceClip, VoxtralTTSNode, load_reference
from tts.voxtral.errors import ReferenceClipError
from tts.voxtral.protocol import Dialect

logger = logging.getLogger(__name__)

REFERENCE_MIN_S = 4.0  # of speech, before trimming; Voxtral needs at least 3 s
REFERENCE_MAX_S = 15.0


@dataclass(frozen=True, slots=True)
class VoxtralEndpoint:
    url: str
    dialect: str
    api_key: str | None
    emulated: bool


_emulators: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[Any]] = weakref.WeakKeyDictionary()


async def voxtral_endpoint() -> VoxtralEndpoint:
    """The server from the environment, else this event loop's emulator (started once)."""
    url = os.environ.get("VOXWIRE_VOXTRAL_URL")
    if url:
        return VoxtralEndpoint(url, os.environ.get("VOXWIRE_VOXTRAL_DIALECT", "mistral"),
                               os.environ.get("MISTRAL_API_KEY"), emulated=False)
    loop = asyncio.get_running_loop()
    if loop not in _emulators:  # one start, however many calls ask at once
        _emulators[loop] = loop.create_task(_start_emulator())
    emulator = await asyncio.shield(_emulators[loop])
    return VoxtralEndpoint(emulator.url, "mistral", None, emulated=True)


async def _start_emulator() -> Any:
    from tts.voxtral.emulator import VoxtralEmulator

    emulator = VoxtralEmulator(Dialect.MISTRAL, allow_cloning=True, rtf=0.1)
    await emulator.start()
    logger.warning("no VOXWIRE_VOXTRAL_URL: dubbing through the local Voxtral protocol emulator at %s "
                   "(its voice is piper, not Voxtral; the cloned voice is not applied)", emulator.url)
    return emulator


def local_emulator() -> Any:
    """The emulator this event loop started, if any (to inspect what it was asked)."""
    started = _emulators.get(asyncio.get_running_loop())
    return started.result() if started is not None and started.done() else None


async def close_local_emulator() -> None:
    started = _emulators.pop(asyncio.get_running_loop(), None)
    if started is not None:
        await (await started).close()


class ClonedVoice(VoxtralTTSNode):
    """``VoxtralTTSNode`` whose reference clip can arrive mid-call (from the live speaker)."""

    def use_reference(self, clip: ReferenceClip) -> None:
        # VoxtralTTSNode reads the encoded reference for every new request; set both
        # forms, as its on_start does for a clip given up front.
        self.ref_audio = clip
        self._encoded_ref = clip.encode(self.dialect)
        logger.info("%s: cloning the speaker from %.1f s of their speech", self.name, clip.duration)


def reference_from(samples: np.ndarray, rate: int) -> ReferenceClip | None:
    """A cloning clip from a speaker's audio (first 15 s of speech), or None if too short."""
    loud = np.flatnonzero(np.abs(samples.astype(np.float32)) > 0.02 * max(1.0, float(np.abs(samples).max())))
    if len(loud) == 0:
        return None
    clip = samples[loud[0] : loud[0] + int(REFERENCE_MAX_S * rate)]
    try:
        return load_reference((clip, rate))
    except ReferenceClipError as exc:
        logger.warning("cannot clone the speaker yet: %s", exc)
        return None


class VoiceSampler(Node):
    """Live calls: gathers the speaker's speech and hands ``voice`` a clone once there is enough.

    Sits after the VAD; the first sentences are dubbed in the preset voice
    until ~4 s of speech have been heard (usually the first sentence or two).
    """

    def __init__(self, voice: ClonedVoice, *, name: str | None = None) -> None:
        super().__init__(name=name or "voice_sampler")
        self.voice = voice
        self.cloned = False
        self._speech: list[np.ndarray] = []
        self._speaking = False
        self._rate = 16000

    async def process(self, frame: Frame, direction: int) -> None:
        if not self.cloned:
            if isinstance(frame, UserStartedSpeakingFrame):
                self._speaking = True
            elif isinstance(frame, InputAudioFrame) and self._speaking:
                self._rate = frame.sample_rate
                self._speech.append(frame.samples.copy())
            elif isinstance(frame, UserStoppedSpeakingFrame):
                self._speaking = False
                gathered = sum(len(s) for s in self._speech) / self._rate
                if gathered >= REFERENCE_MIN_S:
                    clip = await run_blocking(reference_from, np.concatenate(self._speech), self._rate, pool="tts")
                    if clip is not None:
                        self.voice.use_reference(clip)
                        self.cloned = True
                        self._speech = []
        await self.emit(frame, direction)
