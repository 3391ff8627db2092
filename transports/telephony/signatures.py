"""Who may ask for a stream: the incoming-call webhook checks of Telnyx, Plivo, Vonage and Exotel.

Our webhook answer hands out a stream token (:mod:`.stream_auth`), so the
webhook itself must know the request came from the carrier. Each carrier says
so its own way (Twilio's HMAC is in :mod:`.webhooks`):

* **Telnyx** — Ed25519 over ``f"{telnyx-timestamp}|{raw body}"``, the signature
  base64 in ``telnyx-signature-ed25519``, checked with the account's public key
  (``TELNYX_PUBLIC_KEY``, base64 of the 32 raw bytes). A timestamp older than
  ``tolerance_s`` (300 s) is refused, as Telnyx's SDKs do.
* **Plivo** — ``X-Plivo-Signature-V3``: base64 HMAC-SHA256 keyed with the auth
  token (``PLIVO_AUTH_TOKEN``) over the URL rebuilt as Plivo's Python SDK does
  (GET: ``url?k=v&…`` sorted; POST: ``url?`` then sorted ``namevalue`` pairs),
  then ``"."`` and ``X-Plivo-Signature-V3-Nonce``. The header lists one
  signature per active auth token; any may match. V3 carries no timestamp, so
  a replayed request cannot be told from a fresh one.
* **Vonage** — signed webhooks: ``Authorization: Bearer <JWT>``, HS256 with the
  signature secret (``VONAGE_SIGNATURE_SECRET``), ``iat`` within ``tolerance_s``,
  and ``payload_hash`` the SHA-256 (hex) of the payload: a POST's raw body, or a
  GET's query parameters as compact JSON in their order (Vonage's support
  article). A request with a payload but no ``payload_hash`` is refused.
* **Exotel** — signs nothing. The only check is HTTP Basic credentials put in the
  applet's URL (``https://user:password@host/exotel/stream``), compared with
  ``EXOTEL_WEBHOOK_USER`` / ``EXOTEL_WEBHOOK_PASSWORD``.

Every check returns None for a good request, else the reason in words, which
never includes a secret or a signature. Comparisons are constant-time.
``cryptography`` (Telnyx) and PyJWT (Vonage) come with ``voxwire[telephony]``
and are imported only when that carrier's secret is set, so a server without
them still serves the other carriers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, parse_qsl, urlsplit, urlunsplit

from aiohttp import BasicAuth

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

logger = logging.getLogger(__name__)

#: How old a Telnyx timestamp or a Vonage ``iat`` may be, in seconds.
TOLERANCE_S = 300.0
#: Environment variables read by :meth:`WebhookSecrets.from_env`.
ENV = {"telnyx_public_key": "TELNYX_PUBLIC_KEY", "plivo_auth_token": "PLIVO_AUTH_TOKEN",
       "vonage_signature_secret": "VONAGE_SIGNATURE_SECRET", "exotel_user": "EXOTEL_WEBHOOK_USER",
       "exotel_password": "EXOTEL_WEBHOOK_PASSWORD"}


@dataclass(frozen=True)
class WebhookSecrets:
    """The per-carrier secrets; a carrier with none configured is not checked."""

    telnyx_public_key: str | None = None
    plivo_auth_token: str | None = None
    vonage_signature_secret: str | None = None
    exotel_user: str | None = None
    exotel_password: str | None = None
    tolerance_s: float = TOLERANCE_S

    def __post_init__(self) -> None:
        if self.vonage_signature_secret:
            _require("jwt", "VONAGE_SIGNATURE_SECRET")
        if self.telnyx_public_key:
            telnyx_key(self.telnyx_public_key)  # a bad key fails at start, not on the first call
        secret = self.vonage_signature_secret
        if secret and len(secret.encode()) < 32:
            logger.warning("VONAGE_SIGNATURE_SECRET is %d bytes; HS256 wants at least 32 (RFC 7518)",
                           len(secret.encode()))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> WebhookSecrets:
        return cls(**{field: environ.get(name) or None for field, name in ENV.items()})

    def configured(self, carrier: str) -> bool:
        return bool({"telnyx": self.telnyx_public_key, "plivo": self.plivo_auth_token,
                     "vonage": self.vonage_signature_secret,
                     "exotel": self.exotel_user or self.exotel_password}.get(carrier))


def check_request(carrier: str, secrets: WebhookSecrets, *, method: str, url: str,
                  headers: Mapping[str, str], body: bytes, now: float | None = None) -> str | None:
    """None when ``carrier``'s webhook request is authentic (or its secret is not set), else why not.

    ``url`` is the address the carrier called (our public URL, with the query);
    ``headers`` a case-insensitive mapping such as aiohttp's.
    """
    now = time.time() if now is None else now
    if carrier == "telnyx" and secrets.telnyx_public_key:
        return verify_telnyx(secrets.telnyx_public_key, body, headers.get("telnyx-timestamp"),
                             headers.get("telnyx-signature-ed25519"), now=now, tolerance_s=secrets.tolerance_s)
    if carrier == "plivo" and secrets.plivo_auth_token:
        params = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True) if method == "POST" else {}
        return verify_plivo(secrets.plivo_auth_token, method, url, params,
                            headers.get("X-Plivo-Signature-V3-Nonce"), headers.get("X-Plivo-Signature-V3"))
    if carrier == "vonage" and secrets.vonage_signature_secret:
        return verify_vonage(secrets.vonage_signature_secret, headers.get("Authorization"), method=method,
                             query=parse_qsl(urlsplit(url).query, keep_blank_values=True), body=body,
                             now=now, tolerance_s=secrets.tolerance_s)
    if carrier == "exotel" and secrets.configured("exotel"):
        return verify_exotel(secrets.exotel_user or "", secrets.exotel_password or "",
                             headers.get("Authorization"))
    return None


def _require(module: str, setting: str) -> ModuleType:
    try:
        return import_module(module)
    except ImportError:
        package = "PyJWT" if module == "jwt" else module.split(".")[0]
        raise RuntimeError(f"{setting} is set but {package} is not installed: pip install 'voxwire[telephony]'") \
            from None


def telnyx_key(public_key_b64: str) -> Ed25519PublicKey:
    """The account's Ed25519 key from its base64 form; ValueError says what is wrong with it."""
    ed25519 = _require("cryptography.hazmat.primitives.asymmetric.ed25519", "TELNYX_PUBLIC_KEY")
    try:
        return ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64, validate=True))
    except (binascii.Error, ValueError):
        raise ValueError("TELNYX_PUBLIC_KEY must be the base64 of a 32-byte Ed25519 public key") from None


def verify_telnyx(public_key_b64: str, body: bytes, timestamp: str | None, signature: str | None, *,
                  now: float, tolerance_s: float = TOLERANCE_S) -> str | None:
    if not timestamp or not signature:
        return "telnyx-signature-ed25519 or telnyx-timestamp header missing"
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) < 16):
        return "telnyx-timestamp is not a Unix time"
    from cryptography.exceptions import InvalidSignature

    try:
        raw = base64.b64decode(signature, validate=True)
        telnyx_key(public_key_b64).verify(raw, timestamp.encode() + b"|" + body)
    except (binascii.Error, ValueError):
        return "telnyx-signature-ed25519 is not base64"
    except InvalidSignature:
        return "Ed25519 signature does not match the timestamp and body"
    if int(timestamp) < now - tolerance_s:
        return f"telnyx-timestamp is {now - int(timestamp):.0f} s old (limit {tolerance_s:g} s)"
    return None


def plivo_signature(auth_token: str, method: str, url: str, params: Mapping[str, list[str]], nonce: str) -> str:
    """Plivo's V3 signature of a request (``params``: a POST's form fields, each a list of values)."""
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    query = parse_qs(parts.query, keep_blank_values=True)
    query_string = "&".join(f"{k}={v}" for k in sorted(query) for v in sorted(query[k]))
    if method == "POST" and params:
        base += "?" + (query_string + "." if query_string else "")
        base += "".join(f"{k}{v}" for k in sorted(params) for v in sorted(params[k]))
    elif query_string:
        base += "?" + query_string
    digest = hmac.new(auth_token.encode(), f"{base}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_plivo(auth_token: str, method: str, url: str, params: Mapping[str, list[str]],
                 nonce: str | None, signatures: str | None) -> str | None:
    if not nonce or not signatures:
        return "X-Plivo-Signature-V3 or X-Plivo-Signature-V3-Nonce header missing"
    expected = plivo_signature(auth_token, method, url, params, nonce).encode()
    # Check every listed signature, so the time taken does not say which one matched.
    matches = [hmac.compare_digest(expected, s.strip().encode()) for s in signatures.split(",")]
    return None if any(matches) else "X-Plivo-Signature-V3 does not match the URL, parameters and nonce"


def vonage_payload(method: str, query: list[tuple[str, str]], body: bytes) -> bytes:
    """What Vonage's ``payload_hash`` covers: a POST's body, a GET's query as compact JSON in order."""
    if method == "GET":
        return json.dumps(dict(query), separators=(",", ":"), ensure_ascii=False).encode() if query else b""
    return body


def verify_vonage(secret: str, authorization: str | None, *, method: str, query: list[tuple[str, str]],
                  body: bytes, now: float, tolerance_s: float = TOLERANCE_S) -> str | None:
    import jwt
    from jwt.warnings import InsecureKeyLengthWarning

    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "Authorization: Bearer <JWT> header missing"
    try:
        with warnings.catch_warnings():  # a short secret is reported once, in WebhookSecrets
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            claims = jwt.decode(token.strip(), secret, algorithms=["HS256"], options={
                "require": ["iat"], "verify_iat": False, "verify_exp": False, "verify_nbf": False,
                "verify_aud": False})
    except jwt.InvalidSignatureError:
        return "JWT signature does not match the signature secret"
    except jwt.MissingRequiredClaimError:
        return "JWT has no iat"
    except jwt.InvalidTokenError as exc:
        return f"JWT rejected ({type(exc).__name__})"
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, (int, float)):
        return "JWT iat is not a number"
    if now - iat > tolerance_s:
        return f"JWT issued {now - iat:.0f} s ago (limit {tolerance_s:g} s)"
    if iat - now > tolerance_s:
        return f"JWT issued {iat - now:.0f} s in the future"
    if isinstance(exp, (int, float)) and now > exp:
        return "JWT expired"
    payload = vonage_payload(method, query, body)
    if payload:
        claimed = claims.get("payload_hash")
        if not isinstance(claimed, str):
            return "JWT has no payload_hash for a request that carries a payload"
        if not hmac.compare_digest(claimed.lower().encode(), hashlib.sha256(payload).hexdigest().encode()):
            return "payload_hash does not match the payload"
    return None


def verify_exotel(user: str, password: str, authorization: str | None) -> str | None:
    if not authorization:
        return "no HTTP Basic credentials (put user:password@ in the applet URL)"
    try:
        given = BasicAuth.decode(authorization)
    except ValueError:
        return "Authorization is not valid HTTP Basic"
    # Both compared, always, so the time taken does not say which one was wrong.
    same_user = hmac.compare_digest(given.login.encode(), user.encode())
    same_password = hmac.compare_digest(given.password.encode(), password.encode())
    return None if same_user & same_password else "HTTP Basic credentials do not match"
