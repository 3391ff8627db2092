"""How the emulator puts audio on the wire: raw PCM/WAV bodies, SSE events, files.

SSE payloads are compact JSON (``separators=(",", ":")``) with the dialect's key:
``audio`` plus ``response_format`` on vLLM-Omni, ``audio_data`` on Mistral.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import soundfile
from aiohttp import web

from tts.voxtral.emulator_requests import Plan
from tts.voxtral.protocol import FRAME_SAMPLES, SAMPLE_RATE, Dialect

CONTENT_TYPES = {"wav": "audio/wav", "pcm": "audio/pcm", "flac": "audio/flac", "mp3": "audio/mpeg", "opus": "audio/ogg"}
_SOUNDFILE_FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
}


class RawSender:
    """``stream_format:"audio"``: the body is the bytes themselves."""

    def __init__(self, response: web.StreamResponse) -> None:
        self._response = response

    async def audio(self, data: bytes) -> None:
        await self._response.write(data)


class SseSender:
    """``text/event-stream``: one ``speech.audio.delta`` per chunk, then done or error."""

    def __init__(self, response: web.StreamResponse, plan: Plan) -> None:
        self._response = response
        self._key = plan.audio_key
        self._format = plan.format

    async def _event(self, name: str, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, separators=(",", ":"))
        await self._response.write(f"event: {name}\ndata: {data}\n\n".encode())

    async def audio(self, data: bytes) -> None:
        payload = {"type": "speech.audio.delta", self._key: base64.b64encode(data).decode("ascii")}
        if self._key == "audio":
            payload["response_format"] = self._format
        await self._event("speech.audio.delta", payload)

    async def done(self, usage: dict[str, Any]) -> None:
        await self._event("speech.audio.done", {"type": "speech.audio.done", "usage": usage})

    async def error(self, message: str, code: int) -> None:
        error = {"message": message, "type": "server_error", "param": None, "code": code}
        await self._event("speech.audio.error", {"type": "speech.audio.error", "error": error})


def encode_pcm(audio: np.ndarray, dtype: str) -> bytes:
    """float32 audio → the wire encoding (``<i2`` s16le or ``<f4`` float32 LE)."""
    if dtype == "<f4":
        return audio.astype("<f4").tobytes()
    return np.rint(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def encode_file(audio: np.ndarray, fmt: str, dtype: str = "<i2") -> bytes:
    """A whole file in ``fmt`` (``pcm`` is the raw samples in the dialect's encoding)."""
    if fmt == "pcm":
        return encode_pcm(audio, dtype)
    container, subtype = _SOUNDFILE_FORMATS[fmt]
    out = io.BytesIO()
    soundfile.write(out, audio, SAMPLE_RATE, format=container, subtype=subtype)
    return out.getvalue()


def streaming_wav_header() -> bytes:
    """The 44-byte header both servers send first, sizes left at 0xFFFFFFFF."""
    return bytes.fromhex(
        "52494646ffffffff57415645666d74201000000001000100c05d000080bb000002001000"
        "64617461ffffffff"
    )


def split_frames(audio: np.ndarray, frame_counts: list[int]) -> list[np.ndarray]:
    parts, start = [], 0
    for count in frame_counts:
        end = start + count * FRAME_SAMPLES
        parts.append(audio[start:end])
        start = end
    return parts


def misalign(chunks: list[bytes]) -> list[bytes]:
    """Move 3 bytes of every chunk boundary into the next chunk (splits samples)."""
    data = b"".join(chunks)
    cuts, position = [], 0
    for chunk in chunks[:-1]:
        position += len(chunk)
        cuts.append(max(0, position - 3))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:]) if b > a]


def usage(dialect: Dialect, text: str, frames: int) -> dict[str, Any]:
    """Token usage in the dialect's field names (one output token per 80 ms frame)."""
    text_tokens = max(1, len(text.encode()) // 4)
    if dialect is Dialect.VLLM_OMNI:
        return {
            "input_tokens": text_tokens, "output_tokens": frames, "total_tokens": text_tokens + frames,
            "input_token_details": {"text_tokens": text_tokens, "audio_tokens": 0},
        }  # fmt: skip
    return {"prompt_tokens": text_tokens, "completion_tokens": frames, "total_tokens": text_tokens + frames}
