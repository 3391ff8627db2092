"""Answers to a carrier's incoming-call webhook, and request signature checks.

When a call arrives the carrier asks our HTTP endpoint what to do; these
build the instruction that connects the call to our media WebSocket:
TwiML ``<Connect><Stream>`` (Twilio), TeXML (Telnyx, same shape), Plivo XML
``<Stream bidirectional>``, a Vonage NCCO ``connect`` to a websocket
endpoint, and the JSON ``{"url": ...}`` Exotel's dynamic-URL applet fetches.

``validate_twilio_signature`` implements Twilio's request validation: an
HMAC-SHA1, keyed with the account's auth token, over the full URL followed
by every POST parameter name and value sorted by name, base64-encoded.
The other carriers' request checks are in :mod:`.signatures`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from xml.sax.saxutils import escape, quoteattr


def twiml_connect_stream(stream_url: str, parameters: Mapping[str, str] | None = None) -> str:
    """TwiML that bridges the call to a bidirectional Media Stream."""
    params = "".join(
        f"<Parameter name={quoteattr(k)} value={quoteattr(v)}/>" for k, v in (parameters or {}).items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Connect><Stream url={quoteattr(stream_url)}>{params}</Stream></Connect></Response>"
    )


def texml_connect_stream(stream_url: str, parameters: Mapping[str, str] | None = None) -> str:
    """Telnyx TeXML: the same verbs; bidirectional RTP mode, PCMU."""
    params = "".join(
        f"<Parameter name={quoteattr(k)} value={quoteattr(v)}/>" for k, v in (parameters or {}).items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<Response><Connect><Stream url={quoteattr(stream_url)} bidirectionalMode="rtp" '
        f'bidirectionalCodec="PCMU">{params}</Stream></Connect></Response>'
    )


def plivo_stream_xml(stream_url: str, extra_headers: Mapping[str, str] | None = None) -> str:
    """Plivo XML: a bidirectional μ-law stream that keeps the call up while it runs."""
    extra = ",".join(f"{k}={v}" for k, v in (extra_headers or {}).items())
    extra_attr = f" extraHeaders={quoteattr(extra)}" if extra else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        '<Stream bidirectional="true" keepCallAlive="true" contentType="audio/x-mulaw;rate=8000"'
        f"{extra_attr}>{escape(stream_url)}</Stream></Response>"
    )


def vonage_ncco(stream_url: str, headers: Mapping[str, str] | None = None, *, rate: int = 16000) -> str:
    """A Vonage NCCO connecting the call to our websocket as L16 audio."""
    endpoint = {"type": "websocket", "uri": stream_url, "content-type": f"audio/l16;rate={rate}",
                "headers": dict(headers or {})}
    return json.dumps([{"action": "connect", "endpoint": [endpoint]}])


def exotel_stream_url(stream_url: str, *, sample_rate: int = 8000) -> str:
    """The JSON Exotel's Voicebot applet fetches when configured with an HTTPS URL.

    ``stream_url`` may carry a query already: our stream token, which the
    media server reads from the URL when Exotel connects.
    """
    if sample_rate != 8000:
        stream_url += ("&" if "?" in stream_url else "?") + f"sample-rate={sample_rate}"
    return json.dumps({"url": stream_url})


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str] | None = None) -> str:
    payload = url + "".join(f"{k}{v}" for k, v in sorted((params or {}).items()))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def validate_twilio_signature(
    auth_token: str, url: str, params: Mapping[str, str] | None, signature: str | None
) -> bool:
    """True when ``signature`` (the X-Twilio-Signature header) matches the request.

    Twilio may sign the URL with or without the default port, so both forms
    are accepted; the comparison is constant-time.
    """
    if not signature:
        return False
    for candidate in _url_variants(url):
        if hmac.compare_digest(twilio_signature(auth_token, candidate, params), signature):
            return True
    return False


def _url_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    variants = [url]
    default = {"https": 443, "wss": 443, "http": 80, "ws": 80}.get(parts.scheme)
    if parts.port is None and default:
        variants.append(urlunsplit(parts._replace(netloc=f"{parts.netloc}:{default}")))
    elif parts.port == default and parts.hostname:
        variants.append(urlunsplit(parts._replace(netloc=parts.hostname)))
    return variants


def form_params(body: str) -> dict[str, str]:
    """An x-www-form-urlencoded body as a dict (last value wins, as Twilio signs)."""
    return dict(parse_qsl(body, keep_blank_values=True))


def encode_form(params: Mapping[str, str]) -> str:
    return urlencode(dict(params))
