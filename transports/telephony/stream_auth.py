"""Per-call tokens for carrier media-stream WebSockets.

Anyone who can reach ``/{carrier}/media`` could otherwise open a socket, send
a made-up ``start`` and get a bot, a session and model time. So the stream is
tied to the incoming-call webhook we answered: the answer carries a token
(Twilio and Telnyx as a ``<Parameter>``, Plivo in ``extraHeaders``, Vonage in
the websocket endpoint's headers, Exotel in the URL's query), and the media
server checks it at ``start`` before any session is built.

A token is ``expiry.nonce.bound.mac``: an HMAC-SHA256 over the carrier, the
call id the webhook saw (when it saw one), the expiry and a random nonce. It is
stateless, so a worker other than the one that answered the webhook can check
it, as long as they share ``secret`` (``--workers N`` share one per process
tree; separate machines need the same ``VOXWIRE_STREAM_SECRET``). It is:

* unguessable — 96 random bits of nonce under a 256-bit key;
* short-lived — valid ``ttl_s`` (60 s: a carrier connects within a second or two);
* single-use in the worker that checks it (its nonce is remembered until expiry);
* bound to the call — when the webhook named the call, a ``start`` for
  another call id is refused; always bound to the carrier.

Comparisons are constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

#: Name of the token among a stream's custom parameters / headers.
PARAMETER = "voxwire_token"
#: Name of the token in a stream URL's query string.
QUERY = "token"
#: Environment variable holding the shared secret for several machines.
SECRET_ENV = "VOXWIRE_STREAM_SECRET"

_MAX_TOKEN_CHARS = 200


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class StreamTokens:
    """Issues tokens in webhook answers and checks them at a stream's ``start``."""

    def __init__(self, secret: str | bytes | None = None, *, ttl_s: float = 60.0,
                 clock: Callable[[], float] = time.time, max_remembered: int = 100_000) -> None:
        secret = secret if secret is not None else os.environ.get(SECRET_ENV) or None
        if isinstance(secret, str):
            secret = secret.encode()
        if secret is not None and len(secret) < 16:
            raise ValueError("the stream-token secret must be at least 16 bytes")
        self._key = secret or secrets.token_bytes(32)
        self.ttl_s = ttl_s
        self.clock = clock
        self.max_remembered = max_remembered
        self._used: OrderedDict[str, float] = OrderedDict()  # nonce -> expiry

    def issue(self, carrier: str, call_id: str = "") -> str:
        """A token for one stream of ``carrier``; bound to ``call_id`` when it is known."""
        expiry = str(int(self.clock() + self.ttl_s))
        nonce = _b64(secrets.token_bytes(12))
        bound = "1" if call_id else "0"
        return ".".join((expiry, nonce, bound, self._mac(carrier, call_id, expiry, nonce)))

    def check(self, token: str | None, carrier: str, call_id: str) -> str | None:
        """None when ``token`` admits this stream (and spends it), else the problem in words."""
        if not token:
            return "stream token missing"
        parts = token.split(".")
        if (len(token) > _MAX_TOKEN_CHARS or len(parts) != 4 or parts[2] not in ("0", "1")
                or not (parts[0].isascii() and parts[0].isdigit() and len(parts[0]) < 16)):
            return "stream token malformed"
        expiry, nonce, bound, mac = parts
        expected = self._mac(carrier, call_id if bound == "1" else "", expiry, nonce)
        if not hmac.compare_digest(mac.encode(), expected.encode()):
            return "stream token invalid for this call" if bound == "1" else "stream token invalid"
        now = self.clock()
        if int(expiry) < now:
            return "stream token expired"
        self._forget_expired(now)
        if nonce in self._used:
            return "stream token already used"
        self._used[nonce] = float(expiry)
        while len(self._used) > self.max_remembered:
            self._used.popitem(last=False)
        return None

    def _mac(self, carrier: str, call_id: str, expiry: str, nonce: str) -> str:
        message = "\n".join(("voxwire-stream-v1", carrier, call_id, expiry, nonce)).encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def _forget_expired(self, now: float) -> None:
        while self._used:
            nonce, expiry = next(iter(self._used.items()))
            if expiry >= now:
                break
            del self._used[nonce]
