"""Exotel AgentStream / Voicebot applet: base64 16-bit PCM ("audio/x-raw") 8 kHz.

From Exotel: ``connected``, ``start`` (``stream_sid``, ``start.call_sid``,
``start.from``/``to``, ``start.custom_parameters``, ``start.media_format``
{``encoding`` audio/x-raw, ``sample_rate`` "8000"}), ``media``
(``media.payload``), ``dtmf`` (``dtmf.digit``), ``mark`` (``mark.name``) and
``stop``. To Exotel: ``media``, ``mark`` and ``clear`` with ``stream_sid``.
Exotel asks for outbound chunks of at least 100 ms, in multiples of 320 bytes.
"""

from __future__ import annotations

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


class ExotelSerializer(CarrierSerializer):
    name = "exotel"
    chunk_ms = 100

    def parse(self, data: str | bytes) -> list[Event]:
        message = self.load_json(data)
        event = self.field(message, "event")
        if event == "connected":
            return []
        if event == "start":
            start = self.field(message, "start", kind=dict)
            sid_in = "stream_sid" if "stream_sid" in message else None
            self.stream_id = self.field(message, "stream_sid") if sid_in else self.field(message, "start", "stream_sid")
            self.field(message, "start", "media_format", "sample_rate", kind=int)  # required here
            rate = self.check_format(self.field(message, "start", "media_format", kind=dict), "sample_rate",
                                     (8000, 16000, 24000))
            self.sample_rate = rate
            params = self.strings(start.get("custom_parameters"))
            self.started = True
            return [StreamStart(
                stream_id=self.stream_id,
                call_id=self.field(message, "start", "call_sid"),
                sample_rate=rate,
                encoding="l16",
                from_number=str(start.get("from", "")),
                to_number=str(start.get("to", "")),
                parameters=params,
            )]
        if event == "media":
            self.require_started()
            pcm = self.decode_base64(self.field(message, "media", "payload"))
            if len(pcm) % 2:
                raise ProtocolError("odd-length 16-bit PCM payload", CLOSE_POLICY_VIOLATION)
            return [MediaIn(pcm)]
        if event == "dtmf":
            return [DigitIn(self.field(message, "dtmf", "digit"))]
        if event == "mark":
            return [MarkAck(self.field(message, "mark", "name"))]
        if event == "stop":
            return [StreamStop("stop")]
        return []

    def media(self, pcm: bytes) -> str:
        return self.dumps({"event": "media", "stream_sid": self.stream_id,
                           "media": {"payload": self.encode_base64(pcm)}})

    def mark(self, name: str) -> str:
        return self.dumps({"event": "mark", "stream_sid": self.stream_id, "mark": {"name": name}})

    def clear(self) -> str:
        return self.dumps({"event": "clear", "stream_sid": self.stream_id})
