"""Telephony through ``voxwire serve`` and the CallManager: admission answers the network's way.

* ``voxwire serve --transport sip --max-sessions 1`` (a real process, a real
  sipp caller) answers one call and refuses a concurrent one with ``503``
  and ``Retry-After``; the refusal is counted in ``/metrics``.
* The SIP dialer places an outbound job's call through the same manager
  (admission first, then the INVITE).
* A busy carrier server turns calls away at the webhook (the carrier's own
  voice says the busy prompt, then hangs up) and at the media WebSocket
  (close 1013 "Try Again Later" with the reason).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from agent.calls import BUSY_PROMPT, CallManager, CallRejected
from agent.frames import EndFrame, Frame, StartFrame
from agent.node import Node
from agent.serving.jobs import CallJob
from tests.mqtt.broker import free_port
from tests.telephony import scenarios
from tests.telephony.helpers import SIPP, free_udp_port, run_sipp
from tests.telephony.twilio_client import TwilioTestClient
from tests.telephony.webhook_client import ask
from transports.sip.dialer import dial, route
from transports.telephony.serve import serve_sip
from transports.telephony.server import CarrierServer

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def quiet(info):  # type: ignore[no-untyped-def]
    return []


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()


async def _until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@pytest.mark.asyncio
@pytest.mark.skipif(SIPP is None, reason="sipp (apt sip-tester) not installed")
async def test_voxwire_serve_sip_answers_one_call_and_refuses_the_next_with_503(tmp_path: Path) -> None:
    sip_port, http_port = free_udp_port(), free_port()
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "agent.cli", "serve", "--transport", "sip", "--sip-port", str(sip_port),
           "--host", HOST, "--port", str(http_port), "--max-sessions", "1", "--cpu-budget", "0",
           "--agent", "tests.scale.bots:quiet", "--drain-deadline", "5"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://{HOST}:{http_port}"

    async def up() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            return (await _get(base + "/healthz"))[0] == 200
        except aiohttp.ClientError:
            return False

    async def busy() -> bool:
        return (await _get(base + "/readyz"))[0] == 503

    try:
        await _until(up, 30, "the worker to listen")
        sipp = [f"{HOST}:{sip_port}", "-i", HOST, "-mi", HOST, "-p", "0", "-m", "1", "-l", "1", "-nostdin",
                "-timeout", "20", "-timeout_error", "-trace_err"]
        answered = tmp_path / "answered.xml"
        answered.write_text(scenarios.call_playing([], hold_ms=2500))
        refused = tmp_path / "refused.xml"
        refused.write_text(scenarios.refused_call())
        first = asyncio.create_task(run_sipp([*sipp, "-sf", str(answered)], timeout=30))
        await _until(busy, 10, "the first call to fill the worker")
        code, output = await run_sipp([*sipp, "-sf", str(refused)], timeout=20)
        assert code == 0, f"the second call was not refused with 503 + Retry-After:\n{output}"
        code, output = await first
        assert code == 0, f"the first call did not complete:\n{output}"
        async def counted() -> bool:  # the call's end is recorded once its session has torn down
            return 'voxwire_calls_total{reason="caller_hangup"} 1.0' in (await _get(base + "/metrics"))[1]

        await _until(counted, 5, "the ended call to be counted")
        _, metrics = await _get(base + "/metrics")
        assert 'voxwire_calls_refused_total{reason="busy"} 1.0' in metrics
        assert (await _get(base + "/readyz"))[0] == 200, "the worker takes calls again"
    finally:
        proc.send_signal(signal.SIGTERM)
        exit_code = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 15)
    assert exit_code == 0, log.read_text()[-3000:]


@pytest.mark.asyncio
async def test_a_busy_carrier_server_refuses_at_the_webhook_and_at_the_stream() -> None:
    manager = CallManager(quiet, max_sessions=1)
    server = CarrierServer(manager, carriers=["twilio", "vonage", "exotel"], host=HOST, port=0)
    refusals: list[tuple[str, str]] = []
    manager.on_refusal(lambda transport, reason: refusals.append((transport, reason)))
    await server.start()
    base = f"http://{HOST}:{server.port}"
    try:
        answer = await ask(base, "twilio", call_id="CA1", From="+1555")
        assert "<Connect><Stream" in answer.body, "a free server connects the stream"
        async with TwilioTestClient(answer.url, call_sid="CA1", parameters=answer.params) as first:
            await first.silence(0.3)
            assert len(manager.sessions) == 1
            async with aiohttp.ClientSession() as http:
                async with http.post(base + "/twilio/voice", data={"From": "+1555", "CallSid": "CA2"}) as answer:
                    twiml = await answer.text()
                async with http.get(base + "/vonage/answer") as answer:
                    ncco = await answer.json(content_type=None)
                async with http.get(base + "/exotel/stream") as answer:
                    exotel_status, retry_after = answer.status, answer.headers.get("Retry-After")
            assert f"<Say>{BUSY_PROMPT}</Say><Hangup/>" in twiml and "<Stream" not in twiml
            assert ncco == [{"action": "talk", "text": BUSY_PROMPT}]
            assert (exotel_status, retry_after) == (503, "5")
            # The stream reaches this (full) worker anyway: closed with 1013 and the reason.
            async with TwilioTestClient(server.media_url("twilio", "CA3"), call_sid="CA3") as second:
                for _ in range(50):
                    if second.got.close_code is not None:
                        break
                    await asyncio.sleep(0.05)
            assert second.got.close_code == 1013 and "busy" in second.got.close_reason
            assert len(manager.sessions) == 1 and first.got.close_code is None, "the live call is untouched"
            await first.stop()
        assert refusals == [("twilio", "busy"), ("vonage", "busy"), ("exotel", "busy"), ("twilio", "busy")]
    finally:
        await server.close()
        await manager.close()


class HangsUp(Node):
    """Says nothing and hangs up after ``after_s``."""

    def __init__(self, after_s: float) -> None:
        super().__init__(name="hangs-up")
        self.after_s = after_s

    async def process(self, frame: Frame, direction: int) -> None:
        await self.emit(frame, direction)
        if isinstance(frame, StartFrame):
            self.spawn(self._later(), interruptible=False)

    async def _later(self) -> None:
        await asyncio.sleep(self.after_s)
        await self.emit(EndFrame(reason="bot_hangup"))


@pytest.mark.asyncio
@pytest.mark.skipif(SIPP is None, reason="sipp (apt sip-tester) not installed")
async def test_the_sip_dialer_places_job_calls_through_the_manager() -> None:
    manager = CallManager(lambda info: [HangsUp(1.0)], max_sessions=1)
    server = await serve_sip(manager, HOST, 0)
    port = free_udp_port()
    callee = asyncio.create_task(run_sipp(
        ["-sn", "uas", "-i", HOST, "-mi", HOST, "-p", str(port), "-mp", str(free_udp_port()), "-m", "1",
         "-nostdin", "-timeout", "20", "-timeout_error"], timeout=30))
    try:
        await asyncio.sleep(0.5)
        session = await dial(manager, CallJob(to=f"sip:patient@{HOST}:{port}", from_="+15550100",
                                              metadata={"campaign": "reminders"}))
        call = next(iter(server.calls.values()))
        assert session.session_id in manager.sessions and call.info.direction == "outbound"
        assert call.info.metadata["campaign"] == "reminders" and call.info.caller == "+15550100"
        with pytest.raises(CallRejected, match="busy"):  # refused before any INVITE is sent
            await dial(manager, CallJob(to=f"sip:other@{HOST}:{port}"))
        result = await asyncio.wait_for(manager.wait(session.session_id), 10)
        code, output = await callee
    finally:
        await server.close()
        await manager.close()
    assert result is not None and result.reason == "bot_hangup"
    assert code == 0, output  # sipp's UAS saw one INVITE, the ACK and our BYE
    with pytest.raises(ValueError, match="VOXWIRE_SIP_TRUNK"):
        route(CallJob(to="+15550100"))
    assert route(CallJob(to="+15550100", metadata={"proxy": "trunk.example.com:5080"})) == (
        "sip:+15550100@trunk.example.com", ("trunk.example.com", 5080))
