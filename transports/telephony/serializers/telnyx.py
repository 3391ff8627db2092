"""Telnyx media streaming over WebSocket (``stream_bidirectional_mode=rtp``).

From Telnyx: ``connected``, ``start`` (top-level ``stream_id``;
``start.call_control_id``, ``start.media_format`` {``encoding`` PCMU/PCMA,
``sample_rate``}, ``start.custom_parameters``), ``media`` (``media.payload``
base64 RTP payload, ``media.track``), ``dtmf`` (``dtmf.digit``), ``mark``
(``mark.name``; queued marks are also returned after a clear), ``error``
and ``stop``. To Telnyx: ``media`` {``media.payload``}, ``mark`` and
``clear``.
"""

from __future__ import annotations

from agent.audio import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from transports.telephony.serializers.base import (
    CLOSE_POLICY_VIOLATION,
    CarrierSerializer,
    DigitIn,
    Event,
    MarkAck,
    MediaIn,
    ProtocolError,
    StreamStart,
    StreamStop,
)

_CODECS = {"PCMU": (ulaw_decode, ulaw_encode), "PCMA": (alaw_decode, alaw_encode)}


class TelnyxSerializer(CarrierSerializer):
    name = "telnyx"

    def __init__(self) -> None:
        super().__init__()
        self._decode, self._encode = _CODECS["PCMU"]

    def parse(self, data: str | bytes) -> list[Event]:
        message = self.load_json(data)
        event = self.field(message, "event")
        if event == "connected":
            return []
        if event == "start":
            self.stream_id = self.field(message, "stream_id")
            encoding = str(self.field(message, "start", "media_format", "encoding")).upper()
            if encoding not in _CODECS:
                raise ProtocolError(f"unsupported media encoding {encoding[:40]!r}", CLOSE_POLICY_VIOLATION)
            self.check_format(self.field(message, "start", "media_format", kind=dict), "sample_rate", (8000,))
            self._decode, self._encode = _CODECS[encoding]
            start = message["start"]
            params = self.strings(start.get("custom_parameters"))
            self.started = True
            return [StreamStart(
                stream_id=self.stream_id,
                call_id=self.field(message, "start", "call_control_id"),
                sample_rate=8000,
                encoding="mulaw" if encoding == "PCMU" else "alaw",
                from_number=str(start.get("from", "")),
                to_number=str(start.get("to", "")),
                parameters=params,
            )]
        if event == "media":
            self.require_started()
            if self.section(message, "media").get("track", "inbound") != "inbound":
                return []
            return [MediaIn(self._decode(self.decode_base64(self.field(message, "media", "payload"))))]
        if event == "dtmf":
            return [DigitIn(self.field(message, "dtmf", "digit"))]
        if event == "mark":
            return [MarkAck(self.field(message, "mark", "name"))]
        if event == "stop":
            return [StreamStop("stop")]
        if event == "error":
            raise ProtocolError(f"carrier reported an error: {str(message.get('payload'))[:80]}",
                                CLOSE_POLICY_VIOLATION)
        return []

    def media(self, pcm: bytes) -> str:
        return self.dumps({"event": "media", "media": {"payload": self.encode_base64(self._encode(pcm))}})

    def mark(self, name: str) -> str:
        return self.dumps({"event": "mark", "mark": {"name": name}})

    def clear(self) -> str:
        return self.dumps({"event": "clear"})
