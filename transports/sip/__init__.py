"""Native SIP/RTP telephony: a SIP user agent whose calls each run a voxwire Session."""

from transports.sip.transport import SipCall, SipServer
from transports.sip.uac import CallFailed

__all__ = ["CallFailed", "SipCall", "SipServer"]
