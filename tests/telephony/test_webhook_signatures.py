"""Only the carrier gets a stream: Telnyx, Plivo, Vonage and Exotel webhook requests are authenticated.

Each test signs its request the way the carrier's documentation says (a real
Ed25519 key, Plivo's V3 HMAC string, a real PyJWT token, HTTP Basic from the
URL's userinfo), sends it over HTTP to the real aiohttp server and reads the
answer as the carrier would. A good request gets the stream URL and its token;
a missing, forged, stale or tampered one gets 403, no token, and a log line
naming the carrier and the reason — never the secret or the signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.telephony.bots import TalkerBot
from tests.telephony.webhook_client import Signer, StreamAnswer, ask
from transports.telephony import server as server_module
from transports.telephony import signatures
from transports.telephony.server import CarrierServer
from transports.telephony.signatures import WebhookSecrets

PUBLIC_URL = "https://bot.example.com"  # what the carrier calls (and signs); we listen behind it
TELNYX_KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
PLIVO_TOKEN = "MzY4ZTU0NjQtMjQ1Mi00YzQ5LWI1ZDgtNjQ1"
VONAGE_SECRET = "kRm5b3X9qZ2vT8wL1nP4sC7yH0jF6dGa"  # 32 bytes, as RFC 7518 asks for HS256
EXOTEL_USER, EXOTEL_PASSWORD = "exotel", "s3cret-applet-pass"
CALL_IDS = {"telnyx": "v3:cc-1", "plivo": "c-1", "vonage": "call-uuid-1", "exotel": "CA1"}


def _public_b64(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


SECRETS = WebhookSecrets(telnyx_public_key=_public_b64(TELNYX_KEY), plivo_auth_token=PLIVO_TOKEN,
                         vonage_signature_secret=VONAGE_SECRET, exotel_user=EXOTEL_USER,
                         exotel_password=EXOTEL_PASSWORD)


# --- How each carrier signs (written from its documentation, independently of signatures.py) ---

def telnyx(key: Ed25519PrivateKey = TELNYX_KEY, *, age_s: float = 0, body: bytes | None = None) -> Signer:
    """``telnyx-signature-ed25519`` = base64(Ed25519(f"{telnyx-timestamp}|{raw body}"))."""
    def sign(method: str, path_qs: str, sent: bytes) -> dict[str, str]:
        stamp = str(int(time.time() - age_s))
        signed = stamp.encode() + b"|" + (sent if body is None else body)
        return {"telnyx-timestamp": stamp, "telnyx-signature-ed25519": base64.b64encode(key.sign(signed)).decode()}
    return sign


def plivo(token: str = PLIVO_TOKEN, *, body: bytes | None = None, url: str = PUBLIC_URL,
          also: tuple[str, ...] = ()) -> Signer:
    """V3 for a POST: HMAC-SHA256(token, url + "?" + sorted name+value pairs + "." + nonce), base64."""
    def sign(method: str, path_qs: str, sent: bytes) -> dict[str, str]:
        nonce = uuid.uuid4().hex
        pairs = "".join(k + v for k, v in sorted(parse_qsl((sent if body is None else body).decode())))
        signed = f"{url}{path_qs}?{pairs}.{nonce}".encode()
        sigs = [base64.b64encode(hmac.new(t.encode(), signed, hashlib.sha256).digest()).decode()
                for t in (*also, token)]
        return {"X-Plivo-Signature-V3": ",".join(sigs), "X-Plivo-Signature-V3-Nonce": nonce}
    return sign


def vonage(secret: str = VONAGE_SECRET, *, age_s: float = 0, query: str | None = None,
           payload_hash: bool = True, algorithm: str = "HS256") -> Signer:
    """``Authorization: Bearer <JWT>``, HS256 with the signature secret; payload_hash over the query as JSON."""
    def sign(method: str, path_qs: str, sent: bytes) -> dict[str, str]:
        signed_query = urlsplit(path_qs).query if query is None else query
        payload = json.dumps(dict(parse_qsl(signed_query)), separators=(",", ":")).encode()
        claims = {"iat": int(time.time() - age_s), "jti": str(uuid.uuid4()), "iss": "Vonage",
                  "api_key": "abcd1234", "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"}
        if payload_hash:
            claims["payload_hash"] = hashlib.sha256(payload).hexdigest()
        token = jwt.encode(claims, secret if algorithm != "none" else None, algorithm=algorithm)
        return {"Authorization": f"Bearer {token}"}
    return sign


@asynccontextmanager
async def running(secrets: WebhookSecrets, carriers: tuple[str, ...] = tuple(CALL_IDS)) -> AsyncIterator[CarrierServer]:
    server = CarrierServer(lambda info: [TalkerBot([])], carriers=carriers, host="127.0.0.1", port=0,
                           public_url=PUBLIC_URL, webhook_secrets=secrets)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _token(carrier: str, answer: StreamAnswer) -> str | None:
    if carrier == "exotel":
        return dict(parse_qsl(urlsplit(answer.url).query)).get("token")
    return answer.params.get("voxwire_token")


async def _ask(server: CarrierServer, carrier: str, sign: Signer | None = None, *, call_id: str | None = None,
               credentials: tuple[str, str] | None = None, sent: list[str] | None = None) -> StreamAnswer:
    """Ask ``carrier``'s webhook; ``sent`` collects the signature header values put on the request."""
    def recording(method: str, path_qs: str, body: bytes) -> Mapping[str, str]:
        headers = sign(method, path_qs, body) if sign else {}
        if sent is not None:
            sent.extend(headers.values())
        return headers

    userinfo = f"{credentials[0]}:{credentials[1]}@" if credentials else ""  # as in the Exotel applet URL
    return await ask(f"http://{userinfo}127.0.0.1:{server.port}", carrier,
                     call_id=CALL_IDS[carrier] if call_id is None else call_id, sign=recording, From="+15550100")


GOOD: dict[str, dict[str, object]] = {
    "telnyx": {"sign": telnyx()}, "plivo": {"sign": plivo()}, "vonage": {"sign": vonage()},
    "exotel": {"credentials": (EXOTEL_USER, EXOTEL_PASSWORD)},
}


@pytest.mark.asyncio
@pytest.mark.parametrize("carrier", list(CALL_IDS))
async def test_a_request_signed_by_the_carrier_gets_the_stream_and_its_token(carrier: str) -> None:
    async with running(SECRETS) as server:
        answer = await _ask(server, carrier, **GOOD[carrier])  # type: ignore[arg-type]
    assert answer.status == 200, answer.body
    assert answer.url.startswith(f"wss://bot.example.com/{carrier}/media")
    token = _token(carrier, answer)
    assert token and server.tokens.check(token, carrier, CALL_IDS[carrier] if carrier != "telnyx" else "") is None


ORIGINAL = b"CallSid=v3%3Acc-1&From=%2B15550100"  # what Telnyx signed; the tampered request names another call
BAD: dict[str, dict[str, object]] = {
    "telnyx unsigned": {"sign": None, "reason": "header missing"},
    "telnyx forged": {"sign": telnyx(OTHER_KEY), "reason": "does not match"},
    "telnyx stale": {"sign": telnyx(age_s=301), "reason": "s old"},
    "telnyx body tampered": {"sign": telnyx(body=ORIGINAL), "call_id": "v3:cc-2", "reason": "does not match"},
    "plivo unsigned": {"sign": None, "reason": "header missing"},
    "plivo forged": {"sign": plivo("not-the-auth-token"), "reason": "does not match"},
    "plivo body tampered": {"sign": plivo(body=b"CallUUID=c-1&From=%2B15550100"), "call_id": "c-2",
                            "reason": "does not match"},
    "plivo for another URL": {"sign": plivo(url="https://attacker.example.net"), "reason": "does not match"},
    "vonage unsigned": {"sign": None, "reason": "Bearer"},
    "vonage forged": {"sign": vonage("an-attackers-guess-at-the-secret!!"), "reason": "does not match"},
    "vonage stale": {"sign": vonage(age_s=301), "reason": "s ago"},
    "vonage query tampered": {"sign": vonage(query="From=%2B15550100&uuid=call-uuid-1"), "call_id": "call-uuid-2",
                              "reason": "payload_hash does not match"},
    "vonage without payload_hash": {"sign": vonage(payload_hash=False), "reason": "no payload_hash"},
    "vonage alg none": {"sign": vonage(algorithm="none"), "reason": "JWT rejected"},
    "exotel no credentials": {"reason": "no HTTP Basic credentials"},
    "exotel wrong password": {"credentials": (EXOTEL_USER, "guess"), "reason": "do not match"},
    "exotel wrong user": {"credentials": ("admin", EXOTEL_PASSWORD), "reason": "do not match"},
}


@pytest.mark.asyncio
@pytest.mark.parametrize("case", list(BAD))
async def test_an_unsigned_forged_stale_or_tampered_request_gets_403_and_no_token(
        monkeypatch, caplog, case: str) -> None:  # type: ignore[no-untyped-def]
    carrier = case.split()[0]
    spec = dict(BAD[case])
    reason = str(spec.pop("reason"))
    sent: list[str] = []
    async with running(SECRETS) as server:
        handed_out: list[tuple[str, ...]] = []
        issue = server.tokens.issue

        def counting_issue(*args: str) -> str:
            handed_out.append(args)
            return issue(*args)

        monkeypatch.setattr(server.tokens, "issue", counting_issue)
        with caplog.at_level(logging.WARNING, logger="transports.telephony.server"):
            answer = await _ask(server, carrier, sent=sent, **spec)  # type: ignore[arg-type]
    assert answer.status == 403 and "token" not in answer.body and handed_out == []
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and refused[0].startswith(f"{carrier} webhook from") and reason in refused[0], refused
    signature_values = [value.removeprefix("Bearer ") for value in sent if len(value) > 20]
    for secret in (PLIVO_TOKEN, VONAGE_SECRET, EXOTEL_PASSWORD, *signature_values):
        assert secret not in caplog.text


@pytest.mark.asyncio
async def test_plivo_may_list_one_signature_per_active_auth_token() -> None:
    async with running(SECRETS) as server:
        answer = await _ask(server, "plivo", plivo(also=("the-rotated-out-token",)))
    assert answer.status == 200 and _token("plivo", answer)


@pytest.mark.asyncio
async def test_without_secrets_webhooks_stay_open_and_say_so_once(monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(server_module, "_WARNED_UNAUTHENTICATED", set())
    async with running(WebhookSecrets(), carriers=(*CALL_IDS, "twilio")) as server:
        with caplog.at_level(logging.WARNING, logger="transports.telephony.server"):
            for _ in range(2):
                for carrier in CALL_IDS:
                    answer = await _ask(server, carrier)
                    assert answer.status == 200 and _token(carrier, answer)
                assert (await ask(f"http://127.0.0.1:{server.port}", "twilio", call_id="CA9")).status == 200
    warnings = [r.getMessage() for r in caplog.records if "unauthenticated" in r.getMessage()]
    assert sorted(w.split()[0] for w in warnings) == sorted([*CALL_IDS, "twilio"])
    assert any("PLIVO_AUTH_TOKEN" in w for w in warnings) and any("TELNYX_PUBLIC_KEY" in w for w in warnings)


def test_plivo_sdk_test_vector() -> None:
    """Plivo's own SDK spec: GET https://answer.url, nonce 12345, auth token my_auth_token.

    An HTTP request for that URL asks for the root path, so the URL Plivo calls
    (and we rebuild) is ``https://answer.url/``.
    """
    url = "https://answer.url/?CallUUID=97ceeb52-58b6-11e1-86da-77300b68f8bb&Duration=300"
    expected = "pETJPPuss8j7tRO1V76pMhutvY1EbD905bph1xlJQhE="
    assert signatures.plivo_signature("my_auth_token", "GET", url, {}, "12345") == expected
    assert signatures.verify_plivo("my_auth_token", "GET", url, {}, "12345", expected) is None
    assert signatures.verify_plivo("my_auth_tokens", "GET", url, {}, "12345", expected) is not None


def test_vonage_sdk_test_vector() -> None:
    """The HS256 token and signature secret of Vonage's Python SDK tests (iat 1697634680)."""
    token = ("eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJPbmxpbmUgSldUIEJ1aWxkZXIiLCJpYXQiOjE2OTc2MzQ2ODAsImV4"
             "cCI6MzMyNTQ1NDA4MjgsImF1ZCI6IiIsInN1YiI6IiJ9.88vJc3I2HhuqEDixHXVhc9R30tA6U_HQHZTC29y6CGM")
    secret = "qwertyuiopasdfghjklzxcvbnm123456"

    def check(key: str, now: float) -> str | None:
        return signatures.verify_vonage(key, f"Bearer {token}", method="GET", query=[], body=b"", now=now)

    assert check(secret, now=1697634680 + 5) is None
    assert check("asdf" * 8, now=1697634680 + 5) == "JWT signature does not match the signature secret"
    assert "s ago" in (check(secret, now=1697634680 + 301) or "")


def test_secrets_come_from_the_documented_environment_variables() -> None:
    env = {"TELNYX_PUBLIC_KEY": _public_b64(TELNYX_KEY), "PLIVO_AUTH_TOKEN": "p", "VONAGE_SIGNATURE_SECRET": "v" * 32,
           "EXOTEL_WEBHOOK_USER": "u", "EXOTEL_WEBHOOK_PASSWORD": "w"}
    secrets = WebhookSecrets.from_env(env)
    assert all(secrets.configured(c) for c in CALL_IDS)
    assert not any(WebhookSecrets.from_env({}).configured(c) for c in CALL_IDS)
    with pytest.raises(ValueError, match="TELNYX_PUBLIC_KEY"):
        WebhookSecrets(telnyx_public_key="bm90IGEga2V5")  # base64, but not 32 bytes
