"""The MQTT bus sees telephony calls: a sipp SIP call and a Twilio stream, through one CallManager.

SIP and carrier servers start their calls through the process's manager, so
the bus (a session hook) publishes ``call_started``/``call_ended`` for them
like for any call, with the transport, the caller and the callee, and takes
commands for them: an operator's ``hangup`` ends a live Twilio call.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from agent.calls import CallManager
from tests.mqtt.broker import Broker
from tests.mqtt.helpers import Watcher, publish
from tests.telephony import scenarios
from tests.telephony.helpers import SIPP, run_sipp
from tests.telephony.twilio_client import TwilioTestClient
from transports.mqtt import start_bus
from transports.telephony.serve import serve_carriers, serve_sip

HOST = "127.0.0.1"


def quiet(info):  # type: ignore[no-untyped-def]
    return []


@pytest.mark.asyncio
@pytest.mark.skipif(SIPP is None, reason="sipp (apt sip-tester) not installed")
async def test_sip_and_twilio_calls_are_published_and_commanded_on_the_bus(tmp_path: Path, broker: Broker) -> None:
    prefix = f"tel{uuid.uuid4().hex[:6]}"
    manager = CallManager(quiet)
    bus = await start_bus(manager, broker.url(prefix=prefix), "w1")
    sip = await serve_sip(manager, HOST, 0)
    carriers = await serve_carriers(manager, ["twilio"], HOST, 0)
    scenario = tmp_path / "call.xml"
    scenario.write_text(scenarios.call_playing([], hold_ms=1000))
    try:
        async with Watcher(HOST, broker.plain_port, f"{prefix}/#") as watch:
            code, output = await run_sipp([f"{HOST}:{sip.port}", "-sf", str(scenario), "-i", HOST, "-mi", HOST,
                                           "-p", "0", "-m", "1", "-l", "1", "-nostdin", "-timeout", "20",
                                           "-timeout_error", "-trace_err"], timeout=30)
            assert code == 0, output
            started = await watch.event("call_started", transport="sip")
            ended = await watch.event("call_ended", session=started["session"])
            assert (started["direction"], started["caller"], started["callee"]) == ("inbound", "sipp", "bot")
            assert ended["reason"] == "caller_hangup" and 0.8 < ended["duration_s"] < 5

            url = carriers.media_url("twilio")
            async with TwilioTestClient(url, call_sid="CA42", parameters={"From": "+15550100", "To": "+15550199"}) \
                    as caller:
                await caller.silence(0.2)
                started = await watch.event("call_started", transport="twilio")
                assert (started["caller"], started["callee"]) == ("+15550100", "+15550199")
                topic = f"{prefix}/w1/{started['session']}/commands"
                await publish(HOST, broker.plain_port, topic, json.dumps({"v": 1, "command": "hangup", "id": "h1"}))
                ended = await watch.event("call_ended", session=started["session"])
                for _ in range(40):
                    if caller.got.close_code is not None:
                        break
                    await asyncio.sleep(0.05)
            assert ended["reason"] == "hangup"
            assert caller.got.close_code == 1000, "the operator's hang-up closed the carrier stream"
    finally:
        await carriers.close()
        await sip.close()
        await manager.close()
        await bus.close()
