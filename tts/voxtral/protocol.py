"""Wire protocol of Voxtral TTS servers: request bodies and streamed-audio decoding.

Two dialects share the path ``POST /v1/audio/speech`` but differ in almost every
detail (see ``shared/docs/voxtral-protocols.md``):

* ``vllm-omni`` (self-hosted open weights): raw ``audio/pcm`` body of s16le 24 kHz
  with ``stream_format:"audio"``, or SSE whose deltas carry base64 under ``audio``.
* ``mistral`` (hosted API): SSE whose deltas carry base64 **float32 LE** PCM under
  ``audio_data``; voices are ``voice_id``; Bearer auth.

Everything here is pure (no I/O) so it can be tested against byte streams taken
straight from the protocol document.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.audio.convert import float_to_int16

SAMPLE_RATE = 24_000
"""Both servers speak 24 kHz mono (codec: 240-sample patches, 12.5 Hz frames)."""
FRAME_SAMPLES = 1_920
"""One codec frame (one output token) is 80 ms of audio."""
SPEECH_PATH = "/v1/audio/speech"
VOICES_PATH = "/v1/audio/voices"
OPEN_WEIGHTS_MODEL = "mistralai/Voxtral-4B-TTS-2603"
HOSTED_MODEL = "voxtral-mini-tts-2603"
MISTRAL_BASE_URL = "https://api.mistral.ai"

# Messages the vLLM-Omni public checkpoint raises when asked to encode a reference.
_CLONING_GATED = re.compile(r"encoder weights|encode_waveforms|not available in the open-source", re.I)


class Dialect(str, enum.Enum):
    VLLM_OMNI = "vllm-omni"
    MISTRAL = "mistral"

    @classmethod
    def parse(cls, value: str | Dialect) -> Dialect:
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(d.value for d in cls)
            raise ValueError(f"unknown Voxtral dialect {value!r}; choose one of: {names}") from None

    @property
    def default_model(self) -> str:
        return OPEN_WEIGHTS_MODEL if self is Dialect.VLLM_OMNI else HOSTED_MODEL

    @property
    def pcm_dtype(self) -> str:
        """Encoding of ``response_format:"pcm"``: int16 on vLLM-Omni, float32 on Mistral."""
        return "<i2" if self is Dialect.VLLM_OMNI else "<f4"

    @property
    def sse_audio_key(self) -> str:
        return "audio" if self is Dialect.VLLM_OMNI else "audio_data"


def build_speech_body(
    dialect: Dialect,
    text: str,
    *,
    voice: str | None = None,
    ref_audio: str | None = None,
    model: str | None = None,
    sse: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of one streaming synthesis request, in ``dialect``'s field names.

    ``ref_audio`` must already be encoded for the dialect (``voices.ReferenceClip``
    does that). ``sse`` only matters for vLLM-Omni, whose default here is the raw
    PCM stream: it is the cheapest to decode and has no base64 overhead.
    """
    if not text.strip():
        raise ValueError("cannot synthesize empty text")
    if (voice is None) == (ref_audio is None):
        raise ValueError("give exactly one of voice or ref_audio")
    body: dict[str, Any] = {"input": text, "response_format": "pcm"}
    if model:
        body["model"] = model
    if dialect is Dialect.VLLM_OMNI:
        if voice is not None:
            body["voice"] = voice
        else:
            body["ref_audio"] = ref_audio
        # Since vLLM-Omni #4679 ``stream:true`` alone means SSE; ``stream_format`` is
        # the explicit switch. Older servers read ``stream:true`` as raw bytes, and
        # the client looks at the content-type anyway.
        body["stream"] = True
        body["stream_format"] = "sse" if sse else "audio"
    else:
        if voice is not None:
            body["voice_id"] = voice
        else:
            body["ref_audio"] = ref_audio
        body["stream"] = True
    if extra:
        body.update(extra)
    return body


def request_headers(dialect: Dialect, api_key: str | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream, audio/pcm;q=0.9"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


# --------------------------------------------------------------------------- PCM


class PcmDecoder:
    """Turns an arbitrarily split byte stream into int16 samples.

    Reads are not sample aligned (the ASGI server frames the body as it likes, and
    Mistral never promised aligned deltas), so the bytes of a split sample are kept
    for the next chunk instead of being dropped.
    """

    __slots__ = ("_dtype", "_width", "_tail")

    def __init__(self, dtype: str) -> None:
        self._dtype = np.dtype(dtype)
        self._width = self._dtype.itemsize
        self._tail = b""

    @property
    def pending_bytes(self) -> int:
        return len(self._tail)

    def feed(self, data: bytes) -> np.ndarray:
        if self._tail:
            data = self._tail + data
        usable = len(data) - len(data) % self._width
        self._tail = data[usable:]
        if usable == 0:
            return np.zeros(0, dtype=np.int16)
        samples = np.frombuffer(data, dtype=self._dtype, count=usable // self._width)
        if self._dtype.kind == "f":
            return float32_to_int16(samples)
        return samples.astype(np.int16, copy=False)


def float32_to_int16(samples: np.ndarray) -> np.ndarray:
    """Vectorised [-1, 1] float → int16 with clipping (no per-sample Python loop)."""
    return float_to_int16(samples)


WAV_HEADER_BYTES = 44


class WavHeaderSkipper:
    """Drops the 44-byte streaming WAV header (sizes 0xFFFFFFFF) in front of s16 data."""

    __slots__ = ("_remaining",)

    def __init__(self) -> None:
        self._remaining = WAV_HEADER_BYTES

    def feed(self, data: bytes) -> bytes:
        if self._remaining <= 0:
            return data
        cut = min(self._remaining, len(data))
        self._remaining -= cut
        return data[cut:]


# --------------------------------------------------------------------------- SSE


@dataclass(slots=True)
class SseEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None


class SseParser:
    """Incremental ``text/event-stream`` parser (WHATWG rules).

    Handles CRLF / CR / LF line ends (a CR at the end of one read may pair with an
    LF at the start of the next), ``:`` comment lines (keep-alives), multi-line
    ``data`` fields joined with ``\\n``, and UTF-8 split across reads.
    """

    __slots__ = ("_buf", "_event", "_data", "_id", "_started", "_pending_cr")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._started = False
        self._pending_cr = False

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._pending_cr = False
        self._buf += chunk
        if not self._started and self._buf:
            if self._buf.startswith(b"\xef\xbb\xbf"):
                del self._buf[:3]
            self._started = True
        events: list[SseEvent] = []
        start = 0
        buf = self._buf
        while True:
            end = _find_line_end(buf, start)
            if end < 0:
                break
            line = bytes(buf[start:end])
            if buf[end] == 0x0D:  # CR
                if end + 1 < len(buf):
                    start = end + 2 if buf[end + 1] == 0x0A else end + 1
                else:
                    start = end + 1
                    self._pending_cr = True
            else:
                start = end + 1
            event = self._line(line.decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
        del self._buf[:start]
        return events

    def close(self) -> list[SseEvent]:
        """End of stream: a last event without its blank line is still delivered.

        The WHATWG rule discards it, but a server that ends with ``done`` and no
        trailing blank line has still told us it finished, so we keep it.
        """
        events = self.feed(b"\n") if self._buf else []
        if self._data or self._event:
            events.append(self._dispatch())
        return [e for e in events if e is not None]

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            if not self._data and not self._event:
                return None
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\x00" not in value:
            self._id = value
        return None

    def _dispatch(self) -> SseEvent:
        event = SseEvent(event=self._event or "message", data="\n".join(self._data), id=self._id)
        self._event = ""
        self._data = []
        return event


def _find_line_end(buf: bytearray, start: int) -> int:
    lf = buf.find(b"\n", start)
    cr = buf.find(b"\r", start)
    if lf < 0:
        return cr
    if cr < 0:
        return lf
    return min(lf, cr)


# -------------------------------------------------------------- speech events


@dataclass(slots=True)
class AudioDelta:
    audio: bytes


@dataclass(slots=True)
class SpeechDone:
    usage: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SpeechFailed:
    message: str
    code: int | None = None


SpeechEvent = AudioDelta | SpeechDone | SpeechFailed


def interpret_sse(dialect: Dialect, event: SseEvent) -> SpeechEvent | None:
    """Map one SSE event to what it means; ``None`` for events we may ignore.

    The kind comes from the ``event:`` line or, when absent, the payload's
    ``type``. Either audio key is accepted (a proxy may have re-keyed it), the
    dialect's own first.
    """
    if not event.data:
        return None
    try:
        payload = json.loads(event.data)
    except json.JSONDecodeError as exc:
        raise ProtocolViolation(f"SSE data is not JSON: {event.data[:80]!r}") from exc
    if not isinstance(payload, dict):
        raise ProtocolViolation(f"SSE data is not a JSON object: {event.data[:80]!r}")
    kind = event.event if event.event != "message" else str(payload.get("type", ""))
    if kind == "speech.audio.delta":
        b64 = payload.get(dialect.sse_audio_key)
        if b64 is None:
            b64 = payload.get("audio_data", payload.get("audio"))
        if not isinstance(b64, str):
            raise ProtocolViolation("speech.audio.delta without an audio payload")
        try:
            return AudioDelta(base64.b64decode(b64, validate=True))
        except binascii.Error as exc:
            raise ProtocolViolation(f"speech.audio.delta carries invalid base64: {exc}") from exc
    if kind == "speech.audio.done":
        usage = payload.get("usage")
        return SpeechDone(usage if isinstance(usage, dict) else {})
    if kind in ("speech.audio.error", "error"):
        message, code = _error_fields(payload)
        return SpeechFailed(message or "server reported a synthesis error", code)
    return None


class ProtocolViolation(Exception):
    """The server sent something the protocol does not allow."""


def _error_fields(payload: dict[str, Any]) -> tuple[str, int | None]:
    error = payload.get("error", payload)
    if isinstance(error, str):
        return error, None
    if not isinstance(error, dict):
        return "", None
    message = error.get("message") or error.get("detail") or ""
    if isinstance(message, (list, dict)):
        message = json.dumps(message)
    code = error.get("code")
    return str(message), code if isinstance(code, int) else None


def error_message_from_body(body: bytes) -> str:
    """The human message inside an error response, whatever its JSON shape.

    vLLM-Omni: ``{"error":{"message":…}}``; FastAPI schema errors: ``{"detail":[…]}``;
    other proxies: ``{"message":…}``. Falls back to the start of the raw text.
    """
    text = body.decode("utf-8", errors="replace").strip()
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        return text[:300]
    if isinstance(payload, dict):
        message, _ = _error_fields(payload)
        if message:
            return message
    return text[:300]


def is_cloning_gated(message: str) -> bool:
    """True when the server says it cannot encode reference audio (public checkpoint)."""
    return bool(_CLONING_GATED.search(message))
