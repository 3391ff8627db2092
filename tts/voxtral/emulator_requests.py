"""How the emulated servers validate a speech request, and what they then plan to send.

Rules and messages follow ``shared/docs/voxtral-protocols.md`` §1.2 (vLLM-Omni's
``_validate_voxtral_tts_request`` and schema) and §2.2 (Mistral ``SpeechRequest``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tts.voxtral.emulator_voices import decode_reference_seconds
from tts.voxtral.protocol import HOSTED_MODEL
from tts.voxtral.voices import OPEN_WEIGHTS_PRESETS

FORMATS = ("wav", "pcm", "flac", "mp3", "opus")
MISTRAL_MODELS = (HOSTED_MODEL, "voxtral-mini-tts-latest", "voxtral-mini-tts-3-0", "voxtral-mini-tts-3")
_URL_PREFIXES = ("http://", "https://", "data:", "file://")


class RequestError(Exception):
    """A request the real server refuses; ``status`` and message go back as JSON."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@dataclass(slots=True)
class Plan:
    """What to send back: ``mode`` is ``audio`` (raw), ``sse``, ``file`` or ``json``."""

    text: str
    format: str
    mode: str
    dtype: str  # wire encoding of pcm: "<i2" (vLLM-Omni) or "<f4" (Mistral)
    audio_key: str
    max_frames: int
    gated: bool = False  # vLLM-Omni public checkpoint: ref_audio cannot be encoded
    ref_audio_seconds: float | None = None

    @property
    def streaming(self) -> bool:
        return self.mode in ("audio", "sse")

    @property
    def bytes_per_second(self) -> int:
        width = 4 if self.dtype == "<f4" and self.format == "pcm" else 2
        return 24_000 * width


def validate_vllm(body: dict[str, Any], *, model: str, max_tokens: int, allow_cloning: bool) -> Plan:
    text = body.get("input")
    if not isinstance(text, str):
        raise RequestError(422, "Field required", "input")
    fmt = body.get("response_format", "wav")
    if fmt not in FORMATS:
        raise RequestError(422, f"Input should be {', '.join(map(repr, FORMATS))}", "response_format")
    stream_format = body.get("stream_format")
    if stream_format not in (None, "sse", "audio"):
        raise RequestError(422, "Input should be 'sse' or 'audio'", "stream_format")
    speed = body.get("speed", 1.0)
    if not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
        raise RequestError(422, "Input should be between 0.25 and 4.0", "speed")
    if body.get("model") is not None and body["model"] != model:
        raise RequestError(404, f"The model `{body['model']}` does not exist.")
    if not text.strip():
        raise RequestError(400, "Input text cannot be empty")
    # Since #4679 stream:true alone means SSE; an explicit stream_format wins.
    mode = stream_format or ("sse" if body.get("stream") else "file")
    if mode != "file":
        if fmt not in ("pcm", "wav"):
            raise RequestError(400, f"Streaming requires response_format 'pcm' or 'wav', got '{fmt}'")
        if speed != 1.0:
            raise RequestError(400, "speed must be 1.0 when streaming")
        if body.get("word_timestamps"):
            raise RequestError(400, "word_timestamps is only supported over the WebSocket endpoint")
    max_new = body.get("max_new_tokens")
    if max_new is not None and (not isinstance(max_new, int) or not 1 <= max_new <= 4096):
        raise RequestError(400, "max_new_tokens must be between 1 and 4096")
    voice = body.get("voice") or body.get("speaker")
    ref_audio = body.get("ref_audio")
    if voice is None and ref_audio is None:
        raise RequestError(400, "Either 'voice' or 'ref_audio' must be provided for Voxtral TTS")
    plan = Plan(text=text, format=fmt, mode=mode, dtype="<i2", audio_key="audio", max_frames=max_new or max_tokens)
    if ref_audio is not None:
        refs = ref_audio if isinstance(ref_audio, list) else [ref_audio]
        if not all(isinstance(ref, str) and ref.startswith(_URL_PREFIXES) for ref in refs):
            raise RequestError(400, "ref_audio must be a URL (http(s)://, file://) or a data: URL")
        plan.ref_audio_seconds = reference_seconds(refs[0].split(",", 1)[-1])
        plan.gated = not allow_cloning
    elif str(voice).lower() not in OPEN_WEIGHTS_PRESETS:
        raise RequestError(400, f"Invalid speaker '{voice}'. Supported: {', '.join(OPEN_WEIGHTS_PRESETS)}")
    return plan


def validate_mistral(body: dict[str, Any], *, voice_exists: Callable[[str], bool], max_tokens: int) -> Plan:
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise RequestError(400, "input is required and must be a non-empty string")
    fmt = body.get("response_format", "mp3")
    if fmt not in FORMATS:
        raise RequestError(400, f"response_format must be one of {', '.join(FORMATS)}")
    if body.get("model") is not None and body["model"] not in MISTRAL_MODELS:
        raise RequestError(400, f"Invalid model: {body['model']}")
    voice_id = body.get("voice_id")
    ref_audio = body.get("ref_audio")
    if voice_id is not None and ref_audio is not None:
        raise RequestError(400, "voice_id and ref_audio are mutually exclusive")
    if voice_id is None and ref_audio is None:
        raise RequestError(400, "one of voice_id or ref_audio is required")
    mode = "sse" if body.get("stream") else "json"
    plan = Plan(text=text, format=fmt, mode=mode, dtype="<f4", audio_key="audio_data", max_frames=max_tokens)
    if ref_audio is not None:
        if not isinstance(ref_audio, str) or ref_audio.startswith("data:"):
            raise RequestError(400, "ref_audio must be the base64 of an audio file")
        plan.ref_audio_seconds = reference_seconds(ref_audio)
    elif not voice_exists(str(voice_id)):
        raise RequestError(400, f"Voice '{voice_id}' not found")
    return plan


def reference_seconds(b64: str) -> float:
    try:
        seconds = decode_reference_seconds(b64)
    except ValueError as exc:
        raise RequestError(400, f"ref_audio could not be decoded: {exc}") from exc
    if not 3.0 <= seconds <= 25.0:
        raise RequestError(400, f"ref_audio must be 3-25 s of speech, got {seconds:.1f} s")
    return seconds
