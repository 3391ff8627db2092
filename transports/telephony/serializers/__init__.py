"""One serializer per carrier media-stream protocol, looked up by name."""

from __future__ import annotations

from transports.telephony.serializers.base import CarrierSerializer, ProtocolError
from transports.telephony.serializers.exotel import ExotelSerializer
from transports.telephony.serializers.plivo import PlivoSerializer
from transports.telephony.serializers.telnyx import TelnyxSerializer
from transports.telephony.serializers.twilio import TwilioSerializer
from transports.telephony.serializers.vonage import VonageSerializer

SERIALIZERS: dict[str, type[CarrierSerializer]] = {
    cls.name: cls
    for cls in (TwilioSerializer, TelnyxSerializer, VonageSerializer, PlivoSerializer, ExotelSerializer)
}

__all__ = ["SERIALIZERS", "CarrierSerializer", "ProtocolError"]
