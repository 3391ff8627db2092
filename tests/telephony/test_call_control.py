"""Call control helpers: digest auth against a real registrar, carrier REST requests, webhooks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from agent.calls import CallInfo
from agent.frames import TransferFrame
from tests.telephony import scenarios
from tests.telephony.bots import TalkerBot
from tests.telephony.helpers import SIPP, free_udp_port, run_sipp
from tests.telephony.twilio_client import TwilioTestClient
from transports.sip.auth import Credentials, digest_response, parse_challenge
from transports.sip.useragent import UserAgent
from transports.telephony import carrier_api, webhooks
from transports.telephony.server import CarrierServer


def test_digest_matches_the_rfc_2617_example() -> None:
    challenge = parse_challenge('Digest realm="testrealm@host.com", qop="auth,auth-int", '
                                'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    header = digest_response(challenge, Credentials("Mufasa", "Circle Of Life"), method="GET",
                             uri="/dir/index.html", cnonce="0a4f113b")
    assert 'response="6629fae49393a05397450978507c4ef1"' in header and "nc=00000001" in header


@pytest.mark.asyncio
@pytest.mark.skipif(SIPP is None, reason="sipp not installed")
@pytest.mark.parametrize("password, status", [("s3cret", 200), ("wrong", 403)])
async def test_register_answers_a_digest_challenge_from_sipp(tmp_path: Path, password: str, status: int) -> None:
    scenario = tmp_path / "registrar.xml"
    scenario.write_text(scenarios.registrar("voxwire.test", "alice", "s3cret"))
    port = free_udp_port()
    registrar = asyncio.create_task(run_sipp(["-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port), "-m", "1",
                                              "-nostdin", "-timeout", "10"], timeout=15, cwd=tmp_path))
    ua = UserAgent(host="127.0.0.1", port=0)
    await ua.start()
    try:
        await asyncio.sleep(0.4)
        response = await ua.register(("127.0.0.1", port), user="alice", domain="voxwire.test",
                                     credentials=Credentials("alice", password))
        await registrar
    finally:
        ua.close()
    assert response.status == status


def test_carrier_rest_requests_are_built_offline() -> None:
    info = CallInfo(session_id="s1", transport="twilio", call_id="CA123")
    twilio = carrier_api.CallControl("twilio", carrier_api.CarrierCredentials(account_sid="AC1", auth_token="tok"))
    request = twilio.transfer_request(info, "+15550100")
    assert request.url == "https://api.twilio.com/2010-04-01/Accounts/AC1/Calls/CA123.json"
    assert webhooks.form_params(request.content.decode())["Twiml"] == "<Response><Dial>+15550100</Dial></Response>"
    assert request.headers["Authorization"].startswith("Basic ")
    hangup = twilio.hangup_request(info)
    assert webhooks.form_params(hangup.content.decode()) == {"Status": "completed"}
    telnyx = carrier_api.CallControl("telnyx", carrier_api.CarrierCredentials(api_key="KEY"))
    telnyx_call = CallInfo(session_id="s1", transport="telnyx", call_id="v3:abc")
    request = telnyx.transfer_request(telnyx_call, "sip:desk@pbx")
    assert request.url.path == "/v2/calls/v3:abc/actions/transfer" and json.loads(request.content) == {"to": "sip:desk@pbx"}
    vonage = carrier_api.CallControl("vonage", carrier_api.CarrierCredentials(jwt="J"))
    vonage_call = CallInfo(session_id="s1", transport="vonage", call_id="u1")
    body = json.loads(vonage.transfer_request(vonage_call, "+4470").content)
    assert body["action"] == "transfer" and body["destination"]["ncco"][0]["endpoint"][0]["number"] == "+4470"
    plivo = carrier_api.CallControl("plivo", carrier_api.CarrierCredentials(auth_id="MA1", auth_token="t",
                                                                           answer_url="https://x/dial"))
    assert plivo.hangup_request(CallInfo(session_id="s1", transport="plivo", call_id="c1")).method == "DELETE"


@pytest.mark.asyncio
async def test_transfer_frame_on_twilio_calls_the_rest_api_after_the_speech_is_heard() -> None:
    sent: list[httpx.Request] = []

    def carrier(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"sid": "CA0001"})

    client = httpx.AsyncClient(transport=httpx.MockTransport(carrier))
    control = carrier_api.CallControl("twilio", carrier_api.CarrierCredentials(account_sid="AC1", auth_token="t"),
                                      client)

    class Transferring(TalkerBot):
        async def _script(self) -> None:
            await super()._script()
            await self.emit(TransferFrame(target="+15550100"))

    tone = (3000 * np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000)).astype(np.int16)
    bots: list[Transferring] = []
    server = CarrierServer(lambda info: bots.append(Transferring([(tone, "one moment")], loudness=1e9)) or [bots[-1]],
                           carriers=["twilio"], host="127.0.0.1", port=0, call_control={"twilio": control})
    await server.start()
    try:
        async with TwilioTestClient(server.media_url("twilio")) as caller:
            await caller.silence(0.5)
            assert not sent, "transferred before the caller heard the hand-off message"
            await caller.silence(1.5)
            await caller.stop()
    finally:
        await server.stop()
        await client.aclose()
    assert len(sent) == 1 and sent[0].url.path.endswith("/Calls/CA0001.json")
    assert "transfer_accepted" in bots[0].events
