"""Carrier REST calls for what a media stream cannot do: transfer, hang up, digits.

Each builder returns an ``httpx.Request`` and sends nothing, so requests can
be inspected and tested offline; :class:`CallControl` sends them with an
``httpx.AsyncClient`` (inject one built on ``httpx.MockTransport`` in tests).

* Twilio: update the live call with new TwiML (``<Dial>`` to transfer) or
  ``Status=completed`` to hang up (Calls resource, form-encoded, basic auth).
* Telnyx: Call Control actions ``transfer``, ``hangup``, ``send_dtmf`` (JSON, bearer).
* Plivo: transfer the A leg to a new answer URL (POST), hang up (DELETE).
* Vonage: ``PUT /v1/calls/{uuid}`` with ``transfer`` to an NCCO or ``hangup``;
  ``PUT /v1/calls/{uuid}/dtmf`` (bearer JWT, which the caller mints).
* Exotel exposes no documented mid-call transfer for streams; not built.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from xml.sax.saxutils import escape

import httpx

from agent.calls import CallInfo

logger = logging.getLogger(__name__)

TWILIO_API = "https://api.twilio.com/2010-04-01"
TELNYX_API = "https://api.telnyx.com/v2"
PLIVO_API = "https://api.plivo.com/v1"
VONAGE_API = "https://api.nexmo.com/v1"


def twilio_update_call(account_sid: str, auth_token: str, call_sid: str, **fields: str) -> httpx.Request:
    url = f"{TWILIO_API}/Accounts/{account_sid}/Calls/{call_sid}.json"
    request = httpx.Request("POST", url, data=fields)
    return _basic(request, account_sid, auth_token)


def twilio_transfer(account_sid: str, auth_token: str, call_sid: str, target: str) -> httpx.Request:
    verb = f"<Sip>{escape(target)}</Sip>" if target.startswith("sip:") else escape(target)
    twiml = f"<Response><Dial>{verb}</Dial></Response>"
    return twilio_update_call(account_sid, auth_token, call_sid, Twiml=twiml)


def twilio_hangup(account_sid: str, auth_token: str, call_sid: str) -> httpx.Request:
    return twilio_update_call(account_sid, auth_token, call_sid, Status="completed")


def telnyx_action(api_key: str, call_control_id: str, action: str, body: dict[str, str]) -> httpx.Request:
    return httpx.Request("POST", f"{TELNYX_API}/calls/{call_control_id}/actions/{action}", json=body,
                         headers={"Authorization": f"Bearer {api_key}"})


def plivo_transfer(auth_id: str, auth_token: str, call_uuid: str, answer_url: str) -> httpx.Request:
    body = {"legs": "aleg", "aleg_url": answer_url, "aleg_method": "POST"}
    return _basic(httpx.Request("POST", f"{PLIVO_API}/Account/{auth_id}/Call/{call_uuid}/", json=body),
                  auth_id, auth_token)


def plivo_hangup(auth_id: str, auth_token: str, call_uuid: str) -> httpx.Request:
    return _basic(httpx.Request("DELETE", f"{PLIVO_API}/Account/{auth_id}/Call/{call_uuid}/"), auth_id, auth_token)


def vonage_update(jwt: str, uuid: str, body: dict[str, object], path: str = "") -> httpx.Request:
    return httpx.Request("PUT", f"{VONAGE_API}/calls/{uuid}{path}", content=json.dumps(body).encode(),
                         headers={"Authorization": f"Bearer {jwt}", "Content-Type": "application/json"})


def vonage_transfer(jwt: str, uuid: str, target: str) -> httpx.Request:
    endpoint = {"type": "sip", "uri": target} if target.startswith("sip:") else {"type": "phone", "number": target}
    ncco = [{"action": "connect", "endpoint": [endpoint]}]
    return vonage_update(jwt, uuid, {"action": "transfer", "destination": {"type": "ncco", "ncco": ncco}})


def _basic(request: httpx.Request, user: str, password: str) -> httpx.Request:
    auth = httpx.BasicAuth(user, password)
    return next(auth.auth_flow(request))


@dataclass(slots=True)
class CarrierCredentials:
    """What each carrier's REST API authenticates with (fill the one you use)."""

    account_sid: str = ""  # Twilio
    auth_token: str = ""  # Twilio / Plivo
    auth_id: str = ""  # Plivo
    api_key: str = ""  # Telnyx
    jwt: str = ""  # Vonage (application JWT)
    answer_url: str = ""  # Plivo transfer: XML that dials the target


class CallControl:
    """Sends the carrier REST request for a transfer, hang-up or digits."""

    def __init__(self, carrier: str, credentials: CarrierCredentials, client: httpx.AsyncClient | None = None) -> None:
        self.carrier, self.credentials = carrier, credentials
        self.client = client or httpx.AsyncClient(timeout=10.0)

    def transfer_request(self, info: CallInfo, target: str) -> httpx.Request | None:
        c = self.credentials
        if self.carrier == "twilio":
            return twilio_transfer(c.account_sid, c.auth_token, info.call_id, target)
        if self.carrier == "telnyx":
            return telnyx_action(c.api_key, info.call_id, "transfer", {"to": target})
        if self.carrier == "plivo":
            return plivo_transfer(c.auth_id, c.auth_token, info.call_id, f"{c.answer_url}?to={target}")
        if self.carrier == "vonage":
            return vonage_transfer(c.jwt, info.call_id, target)
        return None

    def hangup_request(self, info: CallInfo) -> httpx.Request | None:
        c = self.credentials
        if self.carrier == "twilio":
            return twilio_hangup(c.account_sid, c.auth_token, info.call_id)
        if self.carrier == "telnyx":
            return telnyx_action(c.api_key, info.call_id, "hangup", {})
        if self.carrier == "plivo":
            return plivo_hangup(c.auth_id, c.auth_token, info.call_id)
        if self.carrier == "vonage":
            return vonage_update(c.jwt, info.call_id, {"action": "hangup"})
        return None

    def digits_request(self, info: CallInfo, digits: str) -> httpx.Request | None:
        c = self.credentials
        if self.carrier == "telnyx":
            return telnyx_action(c.api_key, info.call_id, "send_dtmf", {"digits": digits})
        if self.carrier == "vonage":
            return vonage_update(c.jwt, info.call_id, {"digits": digits}, "/dtmf")
        return None

    async def send(self, request: httpx.Request | None) -> bool:
        if request is None:
            logger.warning("%s: this action has no REST equivalent here", self.carrier)
            return False
        try:
            response = await self.client.send(request)
        except httpx.HTTPError as exc:
            logger.warning("%s: %s %s failed: %s", self.carrier, request.method, request.url.path, exc)
            return False
        if response.status_code >= 300:
            logger.warning("%s: %s %s → %s", self.carrier, request.method, request.url.path, response.status_code)
            return False
        return True
