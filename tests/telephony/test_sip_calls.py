"""sipp calls the SIP transport: speech in, the bot's speech out on the wire, digits, load.

sipp (Debian ``sip-tester``) is the caller. The bot is a scripted node: it
records what it hears and answers with a known utterance, so each direction
can be checked sample-for-sample against what was sent.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import numpy as np
import pytest

from agent.calls import CallInfo
from tests.telephony import scenarios
from tests.telephony.helpers import (
    SIPP,
    TEST_SSRC,
    LoopbackCapture,
    RecordingBot,
    best_correlation,
    decode_pcmu_stream,
    is_root,
    run_sipp,
    speech_8k,
    windowed_match,
    write_rtp_pcap,
)
from transports.sip.transport import SipServer

pytestmark = [pytest.mark.skipif(SIPP is None, reason="sipp (apt sip-tester) not installed")]

DTMF_PCAPS = Path("/usr/share/sip-tester")


@pytest.fixture(scope="module")
def caller_speech() -> np.ndarray:
    return speech_8k("Hello, I would like to check my balance, please.")


@pytest.fixture(scope="module")
def bot_speech() -> np.ndarray:
    return speech_8k("Your balance is forty two dollars.")


async def _server(factory, **options) -> SipServer:  # type: ignore[no-untyped-def]
    server = SipServer(factory, host="127.0.0.1", port=0, **options)
    await server.start()
    return server


def _sipp_args(server: SipServer, scenario: Path, *extra: str) -> list[str]:
    return [f"127.0.0.1:{server.port}", "-sf", str(scenario), "-i", "127.0.0.1", "-mi", "127.0.0.1",
            "-p", "0", "-m", "1", "-l", "1", "-nostdin", "-timeout", "40", "-timeout_error", "-trace_err",
            *extra]


@pytest.mark.asyncio
@pytest.mark.skipif(not is_root(), reason="the RTP sniffer needs root (AF_PACKET)")
async def test_sipp_call_speech_both_ways_and_dtmf(tmp_path: Path, caller_speech: np.ndarray,
                                                   bot_speech: np.ndarray) -> None:
    bots: list[RecordingBot] = []
    infos: list[CallInfo] = []

    def factory(info: CallInfo) -> list[RecordingBot]:
        infos.append(info)
        bots.append(RecordingBot(bot_speech, "Your balance is forty two dollars."))
        return [bots[-1]]

    server = await _server(factory)
    pcap = tmp_path / "caller.pcap"
    write_rtp_pcap(pcap, caller_speech)
    seconds = len(caller_speech) / 8000
    digits = [(DTMF_PCAPS / f"dtmf_2833_{d}.pcap", 400) for d in ("4", "2", "pound")]
    scenario = tmp_path / "call.xml"
    scenario.write_text(scenarios.call_playing([(pcap, int(seconds * 1000) + 300), *digits], hold_ms=500))
    try:
        with LoopbackCapture() as capture:
            code, output = await run_sipp(_sipp_args(server, scenario, "-trace_msg"), timeout=60)
    finally:
        await server.stop()
    assert code == 0, output
    bot = bots[0]
    assert infos[0].metadata.get("X-Customer") == "42" and infos[0].codec == "PCMU"

    # Caller → bot: what the bot heard matches the pcap's speech.
    score = windowed_match(caller_speech, bot.heard_8k())
    assert score > 0.9, f"caller audio reached the bot distorted (correlation {score:.3f})"
    cadence = np.diff(bot.heard_at)
    assert np.median(cadence) == pytest.approx(0.02, abs=0.002) and np.percentile(cadence, 95) < 0.05

    # Bot → caller: the RTP on the wire decodes to exactly the bot's utterance.
    ours = [p for p in capture.packets if len(p[3]) > 12 and p[3][1] & 0x7F == 0
            and int.from_bytes(p[3][8:12], "big") != TEST_SSRC]
    assert ours, "no RTP from the bot seen on the wire"
    wire = decode_pcmu_stream([(t, payload) for t, _src, _dst, payload in ours])
    score, _ = best_correlation(bot_speech, wire)
    assert score > 0.99, f"bot audio on the wire does not match what it said ({score:.3f})"
    gaps = np.diff([t for t, *_ in ours])
    assert np.percentile(gaps, 50) == pytest.approx(0.02, abs=0.003)  # paced at 20 ms, not bursted

    # RFC 4733 digits from sipp's pcaps arrive as DTMF frames, each once.
    assert bot.digits == ["4", "2", "#"]


@pytest.mark.asyncio
async def test_fifty_concurrent_sipp_calls_in_one_process(tmp_path: Path, caller_speech: np.ndarray) -> None:
    bots: list[RecordingBot] = []

    def factory(info: CallInfo) -> list[RecordingBot]:
        bots.append(RecordingBot())
        return [bots[-1]]

    server = await _server(factory)
    pcap = tmp_path / "short.pcap"
    write_rtp_pcap(pcap, caller_speech[: 8000 * 2])
    scenario = tmp_path / "load.xml"
    scenario.write_text(scenarios.call_playing([(pcap, 2200)], name="load"))
    args = _sipp_args(server, scenario)
    args[args.index("-m") + 1] = "50"
    args[args.index("-l") + 1] = "50"
    try:
        code, output = await run_sipp([*args, "-r", "25"], timeout=60)
        await asyncio.sleep(0.2)
        assert code == 0, output
        assert len(bots) == 50 and not server.calls
    finally:
        await server.stop()
    heard = [np.concatenate(b.heard) for b in bots]
    energetic = [h for h in heard if np.abs(h).mean() > 200]
    assert len(energetic) == 50, "some calls got no caller audio through"


@pytest.mark.asyncio
async def test_cancel_before_answer_gets_487(tmp_path: Path) -> None:
    factory_calls: list[CallInfo] = []
    server = await _server(lambda info: factory_calls.append(info) or [RecordingBot()], ring_s=3.0)
    scenario = tmp_path / "cancel.xml"
    scenario.write_text(scenarios.cancelled_call())
    try:
        code, output = await run_sipp(_sipp_args(server, scenario), timeout=20)
    finally:
        await server.stop()
    assert code == 0, output
    assert not server.calls


@pytest.mark.asyncio
async def test_reinvite_hold_is_answered_recvonly(tmp_path: Path, caller_speech: np.ndarray) -> None:
    bots: list[RecordingBot] = []
    server = await _server(lambda info: bots.append(RecordingBot()) or [bots[-1]])
    pcap = tmp_path / "short.pcap"
    write_rtp_pcap(pcap, caller_speech[:4000])
    scenario = tmp_path / "hold.xml"
    scenario.write_text(scenarios.call_with_hold(pcap))
    try:
        code, output = await run_sipp(_sipp_args(server, scenario), timeout=20)
    finally:
        await server.stop()
    assert code == 0, output
    assert "hold" in bots[0].events


@pytest.mark.asyncio
async def test_malformed_sip_gets_400_or_is_dropped_and_calls_continue(
    tmp_path: Path, caller_speech: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    bots: list[RecordingBot] = []
    server = await _server(lambda info: bots.append(RecordingBot()) or [bots[-1]])
    pcap = tmp_path / "short.pcap"
    write_rtp_pcap(pcap, caller_speech[: 8000 * 2])
    scenario = tmp_path / "call.xml"
    scenario.write_text(scenarios.call_playing([(pcap, 2500)]))
    junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    junk.settimeout(2.0)
    caplog.set_level(logging.WARNING, logger="transports.sip.useragent")
    try:
        call = asyncio.create_task(run_sipp(_sipp_args(server, scenario), timeout=30))
        await asyncio.sleep(0.8)  # the sipp call is up and streaming
        bad_cseq = (
            "INVITE sip:bot@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-x\r\n"
            "From: <sip:a@b>;tag=1\r\nTo: <sip:bot@c>\r\nCall-ID: junk-1\r\nCSeq: abc INVITE\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        junk.sendto(bad_cseq, ("127.0.0.1", server.port))
        reply, _ = await asyncio.get_running_loop().run_in_executor(None, junk.recvfrom, 65535)
        assert reply.startswith(b"SIP/2.0 400 Bad Request (malformed CSeq")
        assert b"Call-ID: junk-1" in reply
        for garbage in (b"\x00\xff" * 300, b"GET / HTTP/1.1\r\n\r\n", b"INVITE\r\n\r\n", b"A" * 3000):
            junk.sendto(garbage, ("127.0.0.1", server.port))
        code, output = await call
    finally:
        junk.close()
        await server.stop()
    assert code == 0, output
    assert server.ua.malformed == 5
    assert any("malformed message" in r.message and "dropped" in r.message for r in caplog.records)
    assert np.abs(np.concatenate(bots[0].heard)).mean() > 200
