"""Telephony shared by SIP and the carriers: call info, call control, limits, voicemail detection,
and the carrier media-stream server (Twilio, Telnyx, Vonage, Plivo, Exotel)."""

from agent.calls import CallInfo
from agent.frames import TransferFrame
from transports.telephony.amd import AnsweringMachineDetector
from transports.telephony.guard import CallGuard, CallLimits
from transports.telephony.server import CarrierServer

__all__ = ["AnsweringMachineDetector", "CallGuard", "CallInfo", "CallLimits", "CarrierServer", "TransferFrame"]
