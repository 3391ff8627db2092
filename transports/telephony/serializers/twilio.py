"""Twilio Media Streams (bidirectional ``<Connect><Stream>``), base64 μ-law 8 kHz.

Messages from Twilio: ``connected``, ``start`` (``start.streamSid``,
``start.callSid``, ``start.customParameters``, ``start.mediaFormat``),
``media`` (``media.payload``), ``dtmf`` (``dtmf.digit``), ``mark``
(``mark.name``, sent when the audio before our mark has played; also returned
for unplayed marks after a ``clear``) and ``stop``. To Twilio: ``media``,
``mark`` and ``clear``, each carrying ``streamSid``.
"""

from __future__ import annotations

from agent.audio import ulaw_decode, ulaw_encode
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


class TwilioSerializer(CarrierSerializer):
    name = "twilio"

    def parse(self, data: str | bytes) -> list[Event]:
        message = self.load_json(data)
        event = self.field(message, "event")
        if event == "connected":
            return []
        if event == "start":
            self.stream_id = self.field(message, "start", "streamSid")
            encoding = self.field(message, "start", "mediaFormat", "encoding")
            if encoding != "audio/x-mulaw":
                raise ProtocolError(f"unsupported media encoding {encoding[:40]!r}", CLOSE_POLICY_VIOLATION)
            self.check_format(self.field(message, "start", "mediaFormat", kind=dict), "sampleRate", (8000,))
            params = self.strings(message["start"].get("customParameters"))
            self.started = True
            return [StreamStart(
                stream_id=self.stream_id,
                call_id=self.field(message, "start", "callSid"),
                sample_rate=8000,
                encoding="mulaw",
                from_number=str(params.get("From", params.get("from", ""))),
                to_number=str(params.get("To", params.get("to", ""))),
                parameters=params,
            )]
        if event == "media":
            self.require_started()
            if self.section(message, "media").get("track", "inbound") not in ("inbound", "inbound_track"):
                return []
            return [MediaIn(ulaw_decode(self.decode_base64(self.field(message, "media", "payload"))))]
        if event == "dtmf":
            return [DigitIn(self.field(message, "dtmf", "digit"))]
        if event == "mark":
            return [MarkAck(self.field(message, "mark", "name"))]
        if event == "stop":
            return [StreamStop("stop")]
        return []  # unknown events are ignored, as Twilio may add new ones

    def media(self, pcm: bytes) -> str:
        payload = self.encode_base64(ulaw_encode(pcm))
        return self.dumps({"event": "media", "streamSid": self.stream_id, "media": {"payload": payload}})

    def mark(self, name: str) -> str:
        return self.dumps({"event": "mark", "streamSid": self.stream_id, "mark": {"name": name}})

    def clear(self) -> str:
        return self.dumps({"event": "clear", "streamSid": self.stream_id})
