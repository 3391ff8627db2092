"""Access control and abuse limits: tokens, rate and connection limits, secrets in logs.

* bearer tokens on WebRTC signaling are compared in constant time;
* ``transports.ratelimit`` in front of real listeners: a flood from one source
  gets ``429`` with ``Retry-After`` while another source is still served; a
  source holding too many WebSockets gets ``503``; memory stays bounded under
  a spoofed-address flood;
* secrets (tokens, API keys, broker passwords) and raw audio never reach the
  log, even at DEBUG, including on the error paths that log the most;
* carrier media-stream WebSockets take only a stream that presents the token
  our webhook answer gave it (each carrier's way of passing it on), once, for
  that call, in time; a socket without a valid ``start`` is closed at the
  deadline;
* the built-in limits (``HttpLimits``, ``SipLimits``, ``voxwire serve``
  options) on real listeners: HTTP and SIP floods from one address are cut
  while another address is served.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import aiohttp
import pytest

from agent.calls import CallInfo, CallManager
from agent.frames import LLMTextFrame, LLMTurnEndFrame, UserTurnFrame
from agent.llm import LLMNode
from agent.openai_llm import OpenAICompatibleLLM
from agent.session import Session
from tests.llm.openai_emulator import ChatEmulator
from tests.reliability.contracts import CARRIER_STARTS
from tests.reliability.helpers import UdpPeer, sip_request
from tests.telephony.webhook_client import ask, start_with
from tests.webrtc.webrtc_client import PyCaller
from transports.local import RecordingOutput
from transports.mqtt.settings import parse_mqtt_url
from transports.ratelimit import ConcurrencyLimiter, HttpLimits, RateLimiter, SipLimits
from transports.sip.transport import SipServer
from transports.telephony.serializers import SERIALIZERS
from transports.telephony.server import CarrierServer
from transports.telephony.stream_auth import PARAMETER, StreamTokens
from transports.webrtc import WebRTCServer
from tts.voxtral.emulator import VoxtralEmulator
from tts.voxtral.node import VoxtralTTSNode

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKEN = "tok-7f3a9c-correct-horse"
API_KEY = "sk-secret-api-key-4242"
BROKER_PASSWORD = "broker-pass-9911"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ limiters


async def test_token_bucket_allows_bursts_then_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, burst=5, clock=clock)
    assert [limiter.allow("10.0.0.1") for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.allow("10.0.0.2")  # another source has its own bucket
    assert limiter.retry_after("10.0.0.1") == pytest.approx(0.5)
    clock.now += 1.0  # two tokens back
    assert [limiter.allow("10.0.0.1") for _ in range(3)] == [True, True, False]
    assert limiter.refused == 3


async def test_a_spoofed_address_flood_cannot_grow_the_limiter() -> None:
    limiter = RateLimiter(rate=1.0, burst=2, max_keys=1000)
    for i in range(100_000):
        limiter.allow(f"198.51.{i // 256 % 256}.{i % 256}-{i}")
    assert len(limiter) == 1000


async def test_concurrency_limiter_counts_per_source() -> None:
    limit = ConcurrencyLimiter(2)
    assert limit.try_acquire("a") and limit.try_acquire("a") and not limit.try_acquire("a")
    assert limit.try_acquire("b")
    limit.release("a")
    assert limit.try_acquire("a") and limit.open("a") == 2


async def test_rate_limit_in_front_of_the_webrtc_signaling_server(tally: Counter[str]) -> None:
    manager = CallManager(lambda info: [])
    server = WebRTCServer(manager, "127.0.0.1", 0, token=TOKEN, http_limits=HttpLimits(rate=1.0, burst=10))
    await server.start()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with aiohttp.ClientSession() as flooder:
            statuses = []
            for _ in range(30):
                async with flooder.get(server.url + "config", headers=headers) as response:
                    statuses.append(response.status)
                    retry_after = response.headers.get("Retry-After")
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))  # another source address
        async with aiohttp.ClientSession(connector=connector) as neighbour:
            async with neighbour.get(server.url + "config", headers=headers) as response:
                neighbour_status = response.status
    finally:
        await server.close()
        await manager.close()
    tally["rate-limited requests"] += 31
    assert statuses[:10] == [200] * 10 and set(statuses[12:]) == {429}
    assert retry_after is not None and int(retry_after) >= 1
    assert neighbour_status == 200


async def test_behind_a_trusted_proxy_each_client_has_its_own_limit(tally: Counter[str]) -> None:
    """127.0.0.2 plays the load balancer: its X-Forwarded-For names the client; 127.0.0.3 is a client."""
    manager = CallManager(lambda info: [])
    limits = HttpLimits(rate=0.5, burst=3, trusted_proxies=("127.0.0.2/32",))
    server = WebRTCServer(manager, "127.0.0.1", 0, token=TOKEN, http_limits=limits)
    await server.start()
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def statuses(local: str, forwarded: list[str | None]) -> list[int]:
        got = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(local, 0))) as http:
            for xff in forwarded:
                extra = {"X-Forwarded-For": xff} if xff is not None else {}
                async with http.get(server.url + "config", headers={**headers, **extra}) as response:
                    got.append(response.status)
        return got

    try:
        # Through the proxy: one client is cut after its burst, the next one is served; a
        # client-written hop left of the proxy's own entry does not buy a fresh bucket.
        flooder = await statuses("127.0.0.2", ["203.0.113.7"] * 4 + ["198.51.100.1, 203.0.113.7"])
        neighbour = await statuses("127.0.0.2", ["203.0.113.8"])
        # Not a trusted proxy: a forged header is ignored, the peer address is the key.
        direct = await statuses("127.0.0.3", [f"192.0.2.{i}" for i in range(5)])
        with pytest.raises(ValueError, match="trusted proxy"):
            HttpLimits(trusted_proxies=("10.0.0.300/8",))
    finally:
        await server.close()
        await manager.close()
    tally["rate-limited requests"] += 11
    assert flooder == [200, 200, 200, 429, 429]
    assert neighbour == [200]
    assert direct == [200, 200, 200, 429, 429]


async def test_carrier_webhooks_are_rate_and_size_limited_per_source(tally: Counter[str]) -> None:
    manager = CallManager(lambda info: [])
    server = CarrierServer(manager, carriers=["twilio"], host="127.0.0.1", port=0,
                           http_limits=HttpLimits(rate=1.0, burst=5, max_body_bytes=4096))
    await server.start()
    url = f"http://127.0.0.1:{server.port}/twilio/voice"
    try:
        async with aiohttp.ClientSession() as flooder:
            statuses = []
            for i in range(20):
                async with flooder.post(url, data={"CallSid": f"CA{i}"}) as response:
                    statuses.append(response.status)
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=connector) as neighbour:
            async with neighbour.post(url, data={"CallSid": "CAn"}) as response:
                neighbour_status, twiml = response.status, await response.text()
            async with neighbour.post(url, data={"CallSid": "CAbig", "Junk": "x" * 10_000}) as response:
                oversized = response.status, await response.text()
    finally:
        await server.stop()
        await manager.close()
    tally["rate-limited requests"] += 22
    assert statuses[:5] == [200] * 5 and set(statuses[6:]) == {429}
    assert neighbour_status == 200 and "<Stream" in twiml
    assert oversized[0] == 413 and "4096 bytes" in oversized[1]


async def test_connection_cap_in_front_of_carrier_media_sockets() -> None:
    manager = CallManager(lambda info: [])
    server = CarrierServer(manager, carriers=["twilio"], host="127.0.0.1", port=0, http_limits=HttpLimits(max_open=3))
    await server.start()
    url = server.stream_url("twilio")
    try:
        async with aiohttp.ClientSession() as http:
            sockets = [await http.ws_connect(url) for _ in range(3)]
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url)
            await sockets[0].close()
            await asyncio.sleep(0.1)
            again = await http.ws_connect(url)  # a slot was freed when one closed
            for ws in [*sockets[1:], again]:
                await ws.close()
    finally:
        await server.stop()
        await manager.close()
    assert refused.value.status == 503


async def test_a_sip_flood_from_one_address_is_cut_while_another_is_served(
    tally: Counter[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="transports.sip.useragent")
    server = SipServer(lambda info: [], host="127.0.0.1", port=0, rate_limits=SipLimits(rate=1.0, burst=5))
    await server.start()
    flooder, neighbour = await UdpPeer.open("127.0.0.1"), await UdpPeer.open("127.0.0.2")
    try:
        for i in range(40):
            flooder.send(sip_request("OPTIONS", f"flood-{i}"), server.port)
        answered = len(await flooder.wait_for(40, timeout=0.5))
        flooder.replies.clear()
        flooder.send(sip_request("INVITE", "flood-invite"), server.port)
        busy = await flooder.wait_for(1)
        neighbour.send(sip_request("OPTIONS", "neighbour"), server.port)
        served = await neighbour.wait_for(1)
    finally:
        flooder.close()
        neighbour.close()
        await server.stop()
    tally["rate-limited SIP datagrams"] += 42
    assert answered == 5, "only the burst is answered"
    assert [r.status for r in busy] == [503] and int(busy[0].get("Retry-After") or 0) >= 1
    assert [(r.status, r.call_id) for r in served] == [(200, "neighbour")]
    assert server.ua.rate_limited == 36
    warnings = [r.getMessage() for r in caplog.records if "over the rate limit" in r.getMessage()]
    assert len(warnings) == 1 and "127.0.0.1" in warnings[0], "one log line names the source, not one per datagram"


async def test_voxwire_serve_options_set_the_limits_and_probes_stay_open(tally: Counter[str]) -> None:
    from agent.cli import build_parser
    from agent.serving.cli import config_from
    from agent.serving.worker import run_worker
    from tests.mqtt.broker import free_port

    port = free_port()
    argv = ["serve", "--transport", "twilio", "--host", "127.0.0.1", "--port", str(port), "--cpu-budget", "0",
            "--agent", "tests.scale.bots:quiet", "--http-rate", "1", "--http-burst", "3", "--max-sessions", "7",
            "--stream-start-timeout", "4"]
    config = config_from(build_parser(argv).parse_args(argv))
    assert (config.http_limits.rate, config.http_limits.burst, config.max_sessions) == (1.0, 3, 7)
    assert config.stream_start_timeout_s == 4.0 and config.stream_secret and "stream_secret" not in repr(config)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(config, stop=stop))
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(base + "/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            webhooks = []
            for i in range(10):
                async with http.post(base + "/twilio/voice", data={"CallSid": f"CA{i}"}) as response:
                    webhooks.append(response.status)
            probes = []
            for _ in range(10):
                async with http.get(base + "/readyz") as response:
                    probes.append(response.status)
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=connector) as neighbour:
            async with neighbour.post(base + "/twilio/voice", data={"CallSid": "CAn"}) as response:
                neighbour_status = response.status
    finally:
        stop.set()
        assert await asyncio.wait_for(worker, 10) == 0
    tally["rate-limited requests"] += 11
    assert webhooks[:3] == [200] * 3 and set(webhooks[4:]) == {429}
    assert probes == [200] * 10, "health and readiness probes are never rate limited"
    assert neighbour_status == 200


# ------------------------------------------------------- carrier stream tokens


async def _carrier(**options):  # type: ignore[no-untyped-def]
    manager = CallManager(lambda info: [])
    started: list[CallInfo] = []
    manager.on_session(lambda session, info: started.append(info))
    server = CarrierServer(manager, carriers=list(SERIALIZERS), host="127.0.0.1", port=0, **options)
    await server.start()
    return server, manager, started


async def _stream(url: str, first: str, wait_s: float = 0.3) -> tuple[int | None, str]:
    """Connect, send ``first``, and report how the server closed the socket (None: still open)."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str(first)
        try:
            message = await ws.receive(timeout=wait_s)
        except asyncio.TimeoutError:
            return None, ""
        return (ws.close_code, str(message.extra or "")) if message.type == aiohttp.WSMsgType.CLOSE else (None, "")


async def test_carrier_media_stream_refuses_an_unauthenticated_client(caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, logger="transports.telephony.server")
    clock = FakeClock()
    tokens = StreamTokens(clock=clock)
    server, manager, started = await _carrier(stream_tokens=tokens)
    base, media = f"http://127.0.0.1:{server.port}", server.stream_url("twilio")
    start = CARRIER_STARTS["twilio"]  # callSid CA1

    def twilio_start(token: str) -> str:
        return start_with("twilio", start, {PARAMETER: token})

    try:
        for_ca1 = (await ask(base, "twilio", call_id="CA1")).params[PARAMETER]
        for_ca2 = (await ask(base, "twilio", call_id="CA2")).params[PARAMETER]
        for_plivo = tokens.issue("plivo", "CA1")
        expiring = tokens.issue("twilio", "CA1")
        forged = ".".join([*for_ca1.split(".")[:3], "A" * 43])
        outcomes = {
            "no token": await _stream(media, start),
            "forged": await _stream(media, twilio_start(forged)),
            "not a token": await _stream(media, twilio_start("hunter2")),
            "another call's": await _stream(media, twilio_start(for_ca2)),
            "another carrier's": await _stream(media, twilio_start(for_plivo)),
            "in the query, another call's": await _stream(server.media_url("twilio", "CA9"), start),
        }
        clock.now += tokens.ttl_s + 1
        outcomes["expired"] = await _stream(media, twilio_start(expiring))
        clock.now -= tokens.ttl_s + 1
        assert not started, "no session for any of them"
        first_use = await _stream(media, twilio_start(for_ca1))
        assert len(started) == 1 and PARAMETER not in started[0].metadata
        outcomes["replayed"] = await _stream(media, twilio_start(for_ca1))
    finally:
        await server.stop()
        await manager.close()
    assert first_use == (None, ""), "the genuine stream is taken"
    reasons = {"no token": "missing", "forged": "invalid", "not a token": "malformed",
               "another call's": "invalid for this call", "another carrier's": "invalid for this call",
               "in the query, another call's": "invalid for this call", "expired": "expired",
               "replayed": "already used"}
    for case, (code, reason) in outcomes.items():
        assert code == 1008 and f"stream token {reasons[case]}" in reason, (case, code, reason)
    assert len(started) == 1
    logged = [r.getMessage() for r in caplog.records if "stream token" in r.getMessage()]
    assert len(logged) == len(outcomes) and all("from 127.0.0.1" in line and "1008" in line for line in logged)
    assert not any(for_ca1 in line or for_ca2 in line for line in logged), "a token reached the log"


@pytest.mark.parametrize("carrier", list(SERIALIZERS))
async def test_each_carriers_webhook_answer_lets_its_stream_in(carrier: str) -> None:
    server, manager, started = await _carrier()
    try:
        call_id = {"telnyx": "", "twilio": "CA1", "vonage": "u1", "plivo": "c1", "exotel": "c1"}[carrier]
        answer = await ask(f"http://127.0.0.1:{server.port}", carrier, call_id=call_id)
        assert answer.status == 200 and answer.url.startswith(f"ws://127.0.0.1:{server.port}/{carrier}/media")
        closed = await _stream(answer.url, start_with(carrier, CARRIER_STARTS[carrier], answer.params))
        without = await _stream(server.stream_url(carrier), CARRIER_STARTS[carrier])
    finally:
        await server.stop()
        await manager.close()
    assert closed == (None, "") and len(started) == 1, f"{carrier}: the stream from our answer was refused"
    assert PARAMETER not in started[0].metadata, "the token leaked into the call's metadata"
    assert without[0] == 1008 and "stream token missing" in without[1]


async def test_a_socket_without_a_valid_start_is_closed_at_the_deadline(caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, logger="transports.telephony.server")
    server, manager, started = await _carrier(start_timeout_s=0.6)
    loop = asyncio.get_running_loop()

    async def silent() -> tuple[float, int | None, str]:
        async with aiohttp.ClientSession() as http, http.ws_connect(server.stream_url("twilio")) as ws:
            opened = loop.time()
            message = await ws.receive(timeout=5)
            return loop.time() - opened, ws.close_code, str(message.extra or "")

    async def chatty() -> tuple[float, int | None, str]:
        async with aiohttp.ClientSession() as http, http.ws_connect(server.stream_url("twilio")) as ws:
            opened = loop.time()
            while True:  # "connected" is valid chatter, but it is no start
                await ws.send_str('{"event": "connected", "protocol": "Call", "version": "1.0.0"}')
                try:
                    message = await ws.receive(timeout=0.1)
                except asyncio.TimeoutError:
                    continue
                return loop.time() - opened, ws.close_code, str(message.extra or "")

    try:
        (silent_s, silent_code, silent_reason), (chatty_s, chatty_code, _) = await asyncio.gather(silent(), chatty())
        genuine = await _stream(server.media_url("twilio", "CA1"), CARRIER_STARTS["twilio"], wait_s=1.2)
    finally:
        await server.stop()
        await manager.close()
    assert silent_code == 1008 and silent_reason == "no valid start within 0.6 s"
    assert 0.55 < silent_s < 1.0 and chatty_code == 1008 and 0.55 < chatty_s < 1.0
    assert genuine == (None, "") and len(started) == 1, "a started call outlives the deadline"
    assert sum("no valid start within 0.6 s" in r.getMessage() for r in caplog.records) == 2


async def test_stream_tokens_go_through_a_constant_time_compare(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import transports.telephony.stream_auth as stream_auth

    compared: list[tuple[bytes, bytes]] = []
    real = stream_auth.hmac.compare_digest

    def spy(a, b):  # type: ignore[no-untyped-def]
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(stream_auth.hmac, "compare_digest", spy)
    tokens = StreamTokens()
    good = tokens.issue("twilio", "CA1")
    tampered = good[:-1] + ("B" if good[-1] != "B" else "C")
    assert tokens.check(tampered, "twilio", "CA1") == "stream token invalid for this call"
    assert tokens.check(good, "twilio", "CA1") is None
    assert len(compared) == 2 and compared[1][0] == compared[1][1]
    # Tokens from one secret hold in every worker that shares it; a stranger's do not.
    shared = "s" * 32
    assert StreamTokens(shared).check(StreamTokens(shared).issue("vonage", "u1"), "vonage", "u1") is None
    assert StreamTokens(shared).check(StreamTokens().issue("vonage", "u1"), "vonage", "u1") is not None


# ------------------------------------------------------------------- tokens


async def test_webrtc_token_goes_through_a_constant_time_compare(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import transports.webrtc.server as server_module

    compared: list[tuple[bytes, bytes]] = []
    real = server_module.hmac.compare_digest

    def spy(a, b):  # type: ignore[no-untyped-def]
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(server_module.hmac, "compare_digest", spy)
    manager = CallManager(lambda info: [])
    server = WebRTCServer(manager, "127.0.0.1", 0, token=TOKEN)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            results = {}
            for supplied in ("", "tok", TOKEN[:-1] + "X", TOKEN + "extra", TOKEN):
                async with http.get(server.url + "config", headers={"Authorization": f"Bearer {supplied}"}) as r:
                    results[supplied] = r.status
            async with http.get(server.url + "config", headers={"Authorization": f"Basic {TOKEN}"}) as r:
                results["basic scheme"] = r.status
    finally:
        await server.close()
        await manager.close()
    assert results == {"": 401, "tok": 401, TOKEN[:-1] + "X": 401, TOKEN + "extra": 401, TOKEN: 200,
                       "basic scheme": 401}
    assert (TOKEN.encode(), TOKEN.encode()) in compared and len(compared) >= 4


# --------------------------------------------------------------------- logs


async def test_no_secret_or_raw_audio_in_the_logs_even_on_error_paths(caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    # WebRTC: refused and accepted offers with a token.
    manager = CallManager(lambda info: [])
    server = WebRTCServer(manager, "127.0.0.1", 0, token=TOKEN)
    await server.start()
    try:
        refused = PyCaller()
        await refused.call(server.url, TOKEN + "-wrong")
        await refused.close()
        caller = PyCaller()
        status, _ = await caller.call(server.url, TOKEN)
        await asyncio.sleep(0.3)
        await caller.close()
    finally:
        await server.close()
        await manager.close()
    assert status == 200
    # Voxtral with an API key the server refuses, then a server error.
    emulator = VoxtralEmulator("mistral", rtf=0.05, api_key="the-right-key")
    await emulator.start()
    try:
        for key in (API_KEY, "the-right-key"):
            emulator.faults.update({"refuse_status": 500} if key != API_KEY else {})
            node = VoxtralTTSNode(emulator.url, "mistral", voice="en_paul_neutral", api_key=key)
            session = Session([node, RecordingOutput()])
            task = asyncio.create_task(session.run())
            await session.started.wait() if not task.done() else None
            if not task.done():
                await session.push(LLMTextFrame(text="Hello there, this is a test.", turn_id=1))
                await session.push(LLMTurnEndFrame(turn_id=1))
                await asyncio.sleep(1.0)
                await session.cancel()
            await task
    finally:
        await emulator.close()
    # An LLM with an API key whose server fails.
    chat = ChatEmulator(lambda messages: [], fail_first=10)
    await chat.start()
    llm = OpenAICompatibleLLM(chat.url, "m", api_key=API_KEY, retries=1, timeout_s=2)
    session = Session([LLMNode(llm), RecordingOutput()])
    task = asyncio.create_task(session.run())
    await session.started.wait()
    await session.push(UserTurnFrame(text="hello", turn_id=1))
    await asyncio.sleep(1.0)
    await session.cancel()
    await task
    await llm.aclose()
    await chat.close()
    # The broker URL with a password, as the serve command would log it.
    settings = parse_mqtt_url(f"mqtts://worker:{BROKER_PASSWORD}@broker.example.com:8883/voxwire")
    logging.getLogger("voxwire.test").info("MQTT bus at %s with %r", settings.address, settings)

    assert len(caplog.records) > 10  # the error paths really logged
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        for secret in (TOKEN, API_KEY, BROKER_PASSWORD):
            assert secret not in text, f"{record.name} logged a secret: {text[:200]}"
        raw = [a for a in (record.args if isinstance(record.args, tuple) else ()) if isinstance(a, (bytes, bytearray))]
        assert not any(len(a) > 64 for a in raw), f"{record.name} logged raw bytes"
        assert len(text) < 5000, f"{record.name} logged {len(text)} characters"
