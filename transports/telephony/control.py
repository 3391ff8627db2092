"""How a bot controls a phone line — with frames, whatever carries the call.

* hang up: emit ``EndFrame(reason="bot_hangup")``; queued speech plays first;
* keypad out: emit ``DTMFFrame(digit=...)`` downstream; it reaches the line
  (RFC 4733 on SIP, the carrier's DTMF message or REST call elsewhere);
* transfer: emit :class:`agent.frames.TransferFrame`; the output transport
  performs it once the bot's queued speech has been heard (SIP REFER;
  carriers through the helpers in :mod:`transports.telephony.carrier_api`).

Caller digits arrive as ``DTMFFrame`` from the input transport; the output
transport never echoes those back to the line.

The call's description is :class:`agent.calls.CallInfo`, the same for every
transport (the carrier's call id is ``call_id``; SIP ``X-`` headers and stream
parameters are in ``metadata``). Both names are re-exported here for code
written against this module.
"""

from __future__ import annotations

from agent.calls import CallInfo
from agent.frames import TransferFrame

__all__ = ["CallInfo", "TransferFrame"]
