"""Plivo audio streams (``<Stream bidirectional="true">``), μ-law 8 kHz.

From Plivo: ``start`` (``start.streamId``, ``start.callId``,
``start.mediaFormat`` {``encoding``, ``sampleRate``}, ``extra_headers``),
``media`` (``media.payload``), ``dtmf`` (``dtmf.digit``), ``playedStream``
(the ack of a ``checkpoint``, by ``name``) and ``clearedAudio``. To Plivo:
``playAudio`` {``media.contentType``, ``media.sampleRate``, ``media.payload``},
``checkpoint`` (our mark), ``clearAudio`` and ``sendDTMF``.
"""

from __future__ import annotations

from agent.audio import ulaw_decode, ulaw_encode
from transports.telephony.serializers.base import (
    CLOSE_POLICY_VIOLATION,
    CarrierSerializer,
    Cleared,
    DigitIn,
    Event,
    MarkAck,
    MediaIn,
    ProtocolError,
    StreamStart,
    StreamStop,
)


def _parse_extra_headers(text: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in text.replace(";", ",").split(",") if "=" in item)
    return {key.strip(): value.strip() for key, value in pairs}


class PlivoSerializer(CarrierSerializer):
    name = "plivo"

    def parse(self, data: str | bytes) -> list[Event]:
        message = self.load_json(data)
        event = self.field(message, "event")
        if event == "start":
            self.stream_id = self.field(message, "start", "streamId")
            encoding = self.field(message, "start", "mediaFormat", "encoding")
            if encoding != "audio/x-mulaw":
                raise ProtocolError(f"unsupported media encoding {encoding[:40]!r}; use "
                                    "contentType=audio/x-mulaw;rate=8000", CLOSE_POLICY_VIOLATION)
            self.check_format(self.field(message, "start", "mediaFormat", kind=dict), "sampleRate", (8000,))
            extra = message.get("extra_headers")
            self.started = True
            return [StreamStart(
                stream_id=self.stream_id,
                call_id=self.field(message, "start", "callId"),
                sample_rate=8000,
                encoding="mulaw",
                parameters=_parse_extra_headers(extra) if isinstance(extra, str) else {},
            )]
        if event == "media":
            self.require_started()
            return [MediaIn(ulaw_decode(self.decode_base64(self.field(message, "media", "payload"))))]
        if event == "dtmf":
            return [DigitIn(self.field(message, "dtmf", "digit"))]
        if event in ("playedStream", "played"):
            return [MarkAck(self.field(message, "name"))]
        if event == "clearedAudio":
            return [Cleared()]
        if event == "stop":
            return [StreamStop("stop")]
        return []

    def media(self, pcm: bytes) -> str:
        return self.dumps({
            "event": "playAudio",
            "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000,
                      "payload": self.encode_base64(ulaw_encode(pcm))},
        })

    def mark(self, name: str) -> str:
        return self.dumps({"event": "checkpoint", "streamId": self.stream_id, "name": name})

    def clear(self) -> str:
        return self.dumps({"event": "clearAudio", "streamId": self.stream_id})

    def dtmf(self, digit: str) -> str:
        return self.dumps({"event": "sendDTMF", "dtmf": digit})
