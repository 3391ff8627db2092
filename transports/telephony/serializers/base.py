"""The contract every carrier's media-stream protocol is translated into.

A serializer is pure: it turns one WebSocket message into events and our
audio/marks/clears into messages, and knows nothing about sockets or graphs.
Anything malformed raises :class:`ProtocolError` carrying the WebSocket close
code and reason the server should close *that* call's socket with; no other
exception type leaves ``parse`` (``tests/reliability`` fuzzes all five).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

# RFC 6455 §7.4.1 close codes used for protocol problems.
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009

#: Base64 text allowed in one media message: 2 s of 16 kHz L16, far above any
#: carrier's chunk, far below what would hurt the process.
MAX_BASE64_CHARS = 90_000
#: RFC 6455 §5.5: a close frame's payload is at most 125 bytes, 2 of them the code.
MAX_REASON_BYTES = 120
_UINT = re.compile(r"[0-9]{1,9}")


def fit_reason(reason: str) -> str:
    """``reason`` cut to fit a close frame, never inside a UTF-8 sequence."""
    data = reason.encode("utf-8", "replace")
    if len(data) <= MAX_REASON_BYTES:
        return reason
    return data[: MAX_REASON_BYTES - 3].decode("utf-8", "ignore") + "..."


class ProtocolError(ValueError):
    """A carrier message we cannot accept; closes that call's socket."""

    def __init__(self, reason: str, close_code: int = CLOSE_PROTOCOL_ERROR) -> None:
        reason = fit_reason(reason)
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code


@dataclass(slots=True)
class StreamStart:
    stream_id: str
    call_id: str
    sample_rate: int
    encoding: str  # "mulaw" | "alaw" | "l16"
    from_number: str = ""
    to_number: str = ""
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class MediaIn:
    pcm: bytes  # int16 LE at the stream's sample rate


@dataclass(slots=True)
class DigitIn:
    digit: str


@dataclass(slots=True)
class MarkAck:
    name: str


@dataclass(slots=True)
class Cleared:
    pass


@dataclass(slots=True)
class StreamStop:
    reason: str = "stop"


Event = StreamStart | MediaIn | DigitIn | MarkAck | Cleared | StreamStop


class CarrierSerializer:
    """Base class; one instance per call (it remembers the stream id)."""

    name = "carrier"
    sample_rate = 8000
    #: Outbound audio per media message; Exotel wants at least 100 ms.
    chunk_ms = 20
    #: Whether the carrier acknowledges marks (else playout is estimated by clock).
    supports_marks = True

    def __init__(self) -> None:
        self.stream_id = ""
        self.started = False

    # ------------------------------------------------------------ inbound

    def parse(self, data: str | bytes) -> list[Event]:
        raise NotImplementedError

    # ----------------------------------------------------------- outbound

    def media(self, pcm: bytes) -> str | bytes:
        raise NotImplementedError

    def mark(self, name: str) -> str | None:
        raise NotImplementedError

    def clear(self) -> str:
        raise NotImplementedError

    def dtmf(self, digit: str) -> str | None:
        """A message that plays a digit to the caller, if the protocol has one."""
        return None

    # ------------------------------------------------------------ helpers

    @staticmethod
    def load_json(data: str | bytes) -> dict[str, Any]:
        if isinstance(data, bytes):
            raise ProtocolError("binary message where JSON text was expected", CLOSE_UNSUPPORTED_DATA)
        try:
            message = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"malformed JSON: {exc}"[:120], CLOSE_INVALID_PAYLOAD) from None
        if not isinstance(message, dict):
            raise ProtocolError("JSON message is not an object", CLOSE_INVALID_PAYLOAD)
        return message

    @staticmethod
    def field(message: dict[str, Any], *path: str, kind: type = str) -> Any:
        """``message[path...]``, insisting it exists and has the right type.

        ``kind=int`` also takes a string of ASCII digits (carriers send rates
        both ways), never a bool.
        """
        value: Any = message
        for key in path:
            if not isinstance(value, dict) or key not in value:
                event = message.get("event", "message")
                raise ProtocolError(f"{str(event)[:40]} without {'.'.join(path)}", CLOSE_POLICY_VIOLATION)
            value = value[key]
        if kind is int and isinstance(value, str) and _UINT.fullmatch(value):
            value = int(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ProtocolError(f"{'.'.join(path)} should be {kind.__name__}", CLOSE_POLICY_VIOLATION)
        return value

    @staticmethod
    def section(message: dict[str, Any], key: str) -> dict[str, Any]:
        """An optional object member: ``{}`` when absent, an error when not an object."""
        value = message.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ProtocolError(f"{key} should be an object", CLOSE_POLICY_VIOLATION)
        return value

    @staticmethod
    def strings(value: Any) -> dict[str, str]:
        """Custom parameters as ``str → str`` (anything but an object gives none)."""
        if not isinstance(value, dict):
            return {}
        return {str(k)[:200]: str(v)[:1000] for k, v in list(value.items())[:64]}

    def check_format(self, media_format: dict[str, Any], rate_key: str, allowed: tuple[int, ...]) -> int:
        """The stream's sample rate when the carrier states one; channels must be mono."""
        rate = allowed[0]
        if rate_key in media_format:
            rate = self.field(media_format, rate_key, kind=int)
            if rate not in allowed:
                raise ProtocolError(f"unsupported sample rate {rate} (expected {' or '.join(map(str, allowed))})",
                                    CLOSE_POLICY_VIOLATION)
        channels = media_format.get("channels", 1)
        if channels not in (1, "1"):
            raise ProtocolError(f"unsupported channel count {str(channels)[:10]} (mono only)", CLOSE_POLICY_VIOLATION)
        return rate

    @staticmethod
    def decode_base64(text: str) -> bytes:
        if len(text) > MAX_BASE64_CHARS:
            raise ProtocolError(f"media payload of {len(text)} base64 chars exceeds {MAX_BASE64_CHARS}",
                                CLOSE_TOO_BIG)
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("media payload is not valid base64", CLOSE_INVALID_PAYLOAD) from None

    @staticmethod
    def encode_base64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    @staticmethod
    def dumps(message: dict[str, Any]) -> str:
        return json.dumps(message, separators=(",", ":"))

    def require_started(self) -> None:
        if not self.started:
            raise ProtocolError("media before the stream's start message", CLOSE_PROTOCOL_ERROR)
