"""Ask our incoming-call webhook for a stream, as each carrier does, and read its answer.

A carrier calls the webhook, reads the stream URL and the key-values it must
pass on (TwiML/TeXML ``<Parameter>``, Plivo ``extraHeaders``, Vonage endpoint
``headers``, Exotel the URL's query), opens the socket and repeats the
key-values in its first message. :func:`start_with` puts them where each
carrier's ``start`` carries them, so tests reach the media server the way a
real call does, stream token included. ``sign`` adds the headers a carrier
signs its request with, over the exact method, path and body bytes sent.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

import aiohttp

#: Webhook route, method and the parameter naming the call, per carrier.
_WEBHOOKS = {
    "twilio": ("POST", "/twilio/voice", "CallSid"),
    "telnyx": ("POST", "/telnyx/texml", "CallSid"),
    "plivo": ("POST", "/plivo/answer", "CallUUID"),
    "vonage": ("GET", "/vonage/answer", "uuid"),
    "exotel": ("GET", "/exotel/stream", "CallSid"),
}


@dataclass
class StreamAnswer:
    status: int
    url: str = ""
    params: dict[str, str] = field(default_factory=dict)
    body: str = ""


#: Headers for a request, from its method, path with query, and body bytes.
Signer = Callable[[str, str, bytes], Mapping[str, str]]


async def ask(base_url: str, carrier: str, call_id: str = "", *, sign: Signer | None = None,
              **extra: str) -> StreamAnswer:
    """Call ``carrier``'s webhook at ``base_url`` (http://host:port) for a call named ``call_id``."""
    method, path, id_param = _WEBHOOKS[carrier]
    params = {**({id_param: call_id} if call_id else {}), **extra}
    payload = urlencode(params).encode() if method == "POST" else b""
    path_qs = path if method == "POST" or not params else f"{path}?{urlencode(params)}"
    headers = dict(sign(method, path_qs, payload)) if sign else {}
    if method == "POST":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    async with aiohttp.ClientSession() as http:
        async with http.request(method, base_url + path_qs, data=payload or None, headers=headers) as response:
            body = await response.text()
            if response.status != 200:
                return StreamAnswer(response.status, body=body)
    answer = StreamAnswer(200, body=body)
    if carrier in ("twilio", "telnyx"):
        stream = ET.fromstring(body).find("./Connect/Stream")
        if stream is None:
            return answer
        answer.url = stream.get("url", "")
        answer.params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    elif carrier == "plivo":
        stream = ET.fromstring(body).find("./Stream")
        if stream is None:
            return answer
        answer.url = (stream.text or "").strip()
        pairs = (item.split("=", 1) for item in stream.get("extraHeaders", "").split(",") if "=" in item)
        answer.params = {k: v for k, v in pairs}
    elif carrier == "vonage":
        actions = json.loads(body)
        endpoint = next((a["endpoint"][0] for a in actions if a.get("action") == "connect"), None)
        if endpoint is not None:
            answer.url, answer.params = endpoint["uri"], dict(endpoint.get("headers", {}))
    else:
        answer.url = json.loads(body)["url"]  # exotel: the token rides in the URL's query
    return answer


def start_with(carrier: str, message: str, params: dict[str, str]) -> str:
    """The carrier's first message (``start``, Vonage ``websocket:connected``) carrying ``params``."""
    data = json.loads(message)
    if carrier == "twilio":
        data["start"]["customParameters"] = {**data["start"].get("customParameters", {}), **params}
    elif carrier in ("telnyx", "exotel"):
        data["start"]["custom_parameters"] = {**data["start"].get("custom_parameters", {}), **params}
    elif carrier == "plivo":
        extra = [data["extra_headers"]] if data.get("extra_headers") else []
        data["extra_headers"] = ",".join([*extra, *(f"{k}={v}" for k, v in params.items())])
    elif carrier == "vonage":
        data.update(params)
    return json.dumps(data)
