"""Vonage Voice API WebSocket endpoint: binary L16 frames, JSON text events.

The first text message is ``websocket:connected`` carrying ``content-type``
(``audio/l16;rate=16000`` or ``rate=8000``) and the NCCO's custom headers;
audio then flows as binary 20 ms frames both ways. Text events:
``websocket:dtmf`` (``digit``), ``websocket:notify`` (the ack of our
``notify`` command, echoing its ``payload``) and ``websocket:cleared``. Our
commands: ``{"action": "clear"}`` and ``{"action": "notify", "payload": ...}``.
"""

from __future__ import annotations

from transports.telephony.serializers.base import (
    CLOSE_POLICY_VIOLATION,
    CLOSE_TOO_BIG,
    CarrierSerializer,
    Cleared,
    DigitIn,
    Event,
    MarkAck,
    MediaIn,
    ProtocolError,
    StreamStart,
)

MAX_FRAME_BYTES = 64_000


class VonageSerializer(CarrierSerializer):
    name = "vonage"
    sample_rate = 16000

    def parse(self, data: str | bytes) -> list[Event]:
        if isinstance(data, bytes):
            self.require_started()
            if len(data) > MAX_FRAME_BYTES:
                raise ProtocolError(f"audio frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}", CLOSE_TOO_BIG)
            if len(data) % 2:
                raise ProtocolError("odd-length L16 frame", CLOSE_POLICY_VIOLATION)
            return [MediaIn(data)]
        message = self.load_json(data)
        event = self.field(message, "event")
        if event == "websocket:connected":
            content_type = self.field(message, "content-type")
            rate = {"audio/l16;rate=16000": 16000, "audio/l16;rate=8000": 8000}.get(content_type.replace(" ", ""))
            if rate is None:
                raise ProtocolError(f"unsupported content-type {content_type[:40]!r}", CLOSE_POLICY_VIOLATION)
            self.sample_rate = rate
            headers = self.strings({k: v for k, v in message.items() if k not in ("event", "content-type")})
            self.stream_id = headers.get("uuid", headers.get("conversation_uuid", ""))
            self.started = True
            return [StreamStart(
                stream_id=self.stream_id,
                call_id=headers.get("uuid", self.stream_id),
                sample_rate=rate,
                encoding="l16",
                from_number=headers.get("from", ""),
                to_number=headers.get("to", ""),
                parameters=headers,
            )]
        if event == "websocket:dtmf":
            return [DigitIn(str(self.field(message, "digit")))]
        if event == "websocket:notify":
            payload = self.field(message, "payload", kind=dict)
            return [MarkAck(str(payload.get("mark", "")))]
        if event == "websocket:cleared":
            return [Cleared()]
        return []

    def media(self, pcm: bytes) -> bytes:
        return pcm

    def mark(self, name: str) -> str:
        return self.dumps({"action": "notify", "payload": {"mark": name}})

    def clear(self) -> str:
        return self.dumps({"action": "clear"})
