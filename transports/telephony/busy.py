"""Turning a carrier call away politely when the worker is busy or draining.

A refused call should hear "all our agents are busy", not dead air, and the
refusing worker should spend nothing on it (it is out of CPU, or leaving).
So the words are spoken by the *carrier's* own text-to-speech, at the first
place the protocol allows:

1. **The incoming-call webhook** (Twilio, Telnyx, Plivo, Vonage): instead of
   connecting the stream, answer with say-then-hang-up instructions (TwiML /
   TeXML ``<Say><Hangup/>``, Plivo ``<Speak><Hangup/>``, a Vonage ``talk``
   NCCO). Exotel's stream applet only accepts a stream URL, so its webhook
   answers ``503`` with ``Retry-After`` and the flow's failure branch runs.
2. **The media WebSocket**, when the stream reaches a worker that is full
   (``--workers N`` behind one port: the webhook and the WebSocket are two
   connections and may land on different workers, or the worker filled up in
   between): with REST credentials, Twilio's live call is redirected to the
   same say-then-hang-up TwiML and Vonage's is transferred to a ``talk`` NCCO;
   otherwise the carrier hangs up the call itself. Either way the socket is
   closed with code **1013 (Try Again Later)** and the reason, e.g.
   ``busy: all agents are busy`` — the standard WebSocket code for "overloaded,
   retry later", which the carrier logs in its stream events.
"""

from __future__ import annotations

import json
from xml.sax.saxutils import escape

import httpx

from agent.calls import BUSY_PROMPT, CallInfo
from transports.telephony.carrier_api import CallControl, twilio_update_call, vonage_update

#: RFC 6455 / IANA registry: the server is overloaded, the client should retry later.
CLOSE_TRY_AGAIN_LATER = 1013


def busy_webhook_answer(carrier: str, prompt: str = BUSY_PROMPT) -> tuple[int, str, str]:
    """(HTTP status, body, content type) answering a carrier's incoming-call webhook with a refusal."""
    said = escape(prompt)
    if carrier in ("twilio", "telnyx"):
        return 200, f'<?xml version="1.0" encoding="UTF-8"?><Response><Say>{said}</Say><Hangup/></Response>', \
            "application/xml"
    if carrier == "plivo":
        return 200, f'<?xml version="1.0" encoding="UTF-8"?><Response><Speak>{said}</Speak><Hangup/></Response>', \
            "application/xml"
    if carrier == "vonage":
        return 200, json.dumps([{"action": "talk", "text": prompt}]), "application/json"
    return 503, json.dumps({"error": "unavailable", "prompt": prompt}), "application/json"


def busy_redirect_request(control: CallControl, info: CallInfo, prompt: str = BUSY_PROMPT) -> httpx.Request | None:
    """The REST request that makes the carrier say ``prompt`` and hang up a live call, if it has one."""
    c = control.credentials
    if control.carrier == "twilio":
        twiml = f"<Response><Say>{escape(prompt)}</Say><Hangup/></Response>"
        return twilio_update_call(c.account_sid, c.auth_token, info.call_id, Twiml=twiml)
    if control.carrier == "vonage":
        ncco = [{"action": "talk", "text": prompt}]
        return vonage_update(c.jwt, info.call_id, {"action": "transfer", "destination": {"type": "ncco", "ncco": ncco}})
    return None


def close_reason(reason: str) -> bytes:
    """A WebSocket close reason (at most 123 bytes) that says why the call was refused."""
    return f"{reason}: all agents are busy"[:120].encode()
