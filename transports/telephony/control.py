"""Call information and call-control frames shared by every telephony transport.

A bot controls the line with frames, whatever carries the call:

* hang up: emit ``EndFrame(reason="bot_hangup")``; queued speech plays first;
* keypad out: emit ``DTMFFrame(digit=...)`` downstream; it reaches the line
  (RFC 4733 on SIP, the carrier's DTMF message or REST call elsewhere);
* transfer: emit :class:`TransferFrame`; the output transport performs it
  once the bot's queued speech has been heard (SIP REFER; carriers through
  the helpers in :mod:`transports.telephony.carrier_api`).

Caller digits arrive as ``DTMFFrame`` from the input transport; the output
transport never echoes those back to the line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agent.frames import Frame


@dataclass(slots=True, kw_only=True)
class TransferFrame(Frame):
    """Hand the caller to ``target`` (a SIP URI or E.164 number)."""

    target: str
    reason: str = "transfer"


@dataclass(slots=True, kw_only=True)
class CallInfo:
    """What a bot factory knows about the call it is building a graph for."""

    call_id: str
    transport: str  # "sip", "twilio", "telnyx", "vonage", "plivo", "exotel"
    direction: Literal["inbound", "outbound"] = "inbound"
    from_number: str = ""
    to_number: str = ""
    remote_address: str = ""
    codec: str = "PCMU"
    parameters: dict[str, str] = field(default_factory=dict)  # custom params / X- headers
