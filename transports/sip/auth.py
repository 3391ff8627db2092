"""HTTP Digest for SIP (RFC 3261 §22, RFC 7616 with MD5): answer a challenge.

Trunks challenge REGISTER and INVITE with 401/407 and a nonce; the answer
proves the password without sending it. Only MD5 and ``qop=auth`` (or no
qop, the RFC 2069 form) are implemented, which is what SIP trunks use.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class Credentials:
    username: str
    password: str


def parse_challenge(value: str) -> dict[str, str]:
    """``Digest realm="x", nonce="y", qop="auth"`` → a dict of its parameters."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ValueError(f"unsupported auth scheme {scheme!r}")
    params: dict[str, str] = {}
    for part in _split_params(rest):
        key, _, raw = part.partition("=")
        params[key.strip().lower()] = raw.strip().strip('"')
    if "nonce" not in params or "realm" not in params:
        raise ValueError("digest challenge without realm or nonce")
    return params


def _split_params(text: str) -> list[str]:
    parts, quoted, start = [], False, 0
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()  # noqa: S324 - the protocol mandates MD5


def digest_response(
    challenge: dict[str, str],
    credentials: Credentials,
    *,
    method: str,
    uri: str,
    nonce_count: int = 1,
    cnonce: str | None = None,
) -> str:
    """The value of the Authorization / Proxy-Authorization header."""
    algorithm = challenge.get("algorithm", "MD5")
    if algorithm.upper() != "MD5":
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    realm, nonce = challenge["realm"], challenge["nonce"]
    ha1 = _md5(f"{credentials.username}:{realm}:{credentials.password}")
    ha2 = _md5(f"{method}:{uri}")
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    fields = [
        f'username="{credentials.username}"',
        f'realm="{realm}"',
        f'nonce="{nonce}"',
        f'uri="{uri}"',
    ]
    if "auth" in qops:
        cnonce = cnonce or secrets.token_hex(8)
        nc = f"{nonce_count:08x}"
        response = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        fields += [f'response="{response}"', "qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
    else:
        fields.append(f'response="{_md5(f"{ha1}:{nonce}:{ha2}")}"')
    fields.append("algorithm=MD5")
    if "opaque" in challenge:
        fields.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(fields)
