"""Telephony shared by SIP and the carriers: call info, call control, limits, voicemail detection,
and the carrier media-stream server (Twilio, Telnyx, Vonage, Plivo, Exotel)."""

from transports.telephony.amd import AnsweringMachineDetector
from transports.telephony.control import CallInfo, TransferFrame
from transports.telephony.guard import CallGuard, CallLimits
from transports.telephony.server import CarrierServer

__all__ = ["AnsweringMachineDetector", "CallGuard", "CallInfo", "CallLimits", "CarrierServer", "TransferFrame"]
