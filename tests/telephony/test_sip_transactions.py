"""SIP transaction behaviour on the wire: 200 OK retransmission, OPTIONS, call-backs (UAC)."""

from __future__ import annotations

import asyncio
import socket
import time

import numpy as np
import pytest

from agent.frames import EndFrame, Frame, OutputAudioFrame, StartFrame, TransferFrame
from agent.node import Node
from tests.telephony.helpers import SIPP, RecordingBot, free_udp_port, run_sipp, speech_8k, windowed_match
from transports.sip import message as sipmsg
from transports.sip.transport import SipServer
from transports.sip.useragent import CallFailed

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
)


def _invite(port: int, media_port: int, call_id: str) -> bytes:
    body = OFFER.format(port=media_port)
    return (
        f"INVITE sip:bot@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{media_port - 2};branch=z9hG4bK-{call_id}\r\n"
        f"From: <sip:tester@127.0.0.1>;tag=t1\r\nTo: <sip:bot@127.0.0.1>\r\nCall-ID: {call_id}\r\n"
        f"CSeq: 1 INVITE\r\nContact: <sip:tester@127.0.0.1:{media_port - 2}>\r\nMax-Forwards: 70\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def _recv_all(sock: socket.socket, seconds: float) -> list[tuple[float, sipmsg.SipMessage]]:
    got, end = [], time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            break
        got.append((time.monotonic(), sipmsg.parse(data)))
    return got


@pytest.mark.asyncio
async def test_200_ok_is_retransmitted_until_ack() -> None:
    server = SipServer(lambda info: [RecordingBot()], host="127.0.0.1", port=0)
    await server.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    loop = asyncio.get_running_loop()
    try:
        sock.sendto(_invite(server.port, sock.getsockname()[1] + 2, "rtx-1"), ("127.0.0.1", server.port))
        got = await loop.run_in_executor(None, _recv_all, sock, 2.3)
        oks = [(t, m) for t, m in got if m.status == 200]
        assert [m.status for _, m in got][:2] == [100, 180]
        # Timer G: 200 at 0, then ~0.5, ~1.5 s (doubling) while no ACK comes.
        assert len(oks) == 3, [m.status for _, m in got]
        gaps = np.diff([t for t, _ in oks])
        assert gaps[0] == pytest.approx(0.5, abs=0.15) and gaps[1] == pytest.approx(1.0, abs=0.2)
        ok = oks[0][1]
        ack = (
            f"ACK sip:bot@127.0.0.1:{server.port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-ack\r\n"
            f"From: <sip:tester@127.0.0.1>;tag=t1\r\nTo: {ok.get('To')}\r\nCall-ID: rtx-1\r\nCSeq: 1 ACK\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        sock.sendto(ack, ("127.0.0.1", server.port))
        later = await loop.run_in_executor(None, _recv_all, sock, 2.5)
        assert not [m for _, m in later if m.status == 200], "200 OK kept coming after the ACK"
        assert server.calls["rtx-1"].dialog.confirmed
    finally:
        sock.close()
        await server.stop()


@pytest.mark.asyncio
async def test_options_and_unknown_requests() -> None:
    server = SipServer(lambda info: [RecordingBot()], host="127.0.0.1", port=0)
    await server.start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    try:
        for method, status in (("OPTIONS", 200), ("BYE", 481), ("PUBLISH", 501)):
            request = (
                f"{method} sip:bot@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-{method}\r\n"
                f"From: <sip:a@b>;tag=1\r\nTo: <sip:bot@c>\r\nCall-ID: opt-{method}\r\nCSeq: 7 {method}\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
            sock.sendto(request, ("127.0.0.1", server.port))
            data, _ = await asyncio.get_running_loop().run_in_executor(None, sock.recvfrom, 65535)
            reply = sipmsg.parse(data)
            assert reply.status == status and reply.cseq == (7, method)
            if method == "OPTIONS":
                assert "INVITE" in (reply.get("Allow") or "") and reply.get("Accept") == "application/sdp"
    finally:
        sock.close()
        await server.stop()


class GreeterBot(RecordingBot):
    """Speaks first (an outbound call), then hangs up."""

    def __init__(self, greeting: np.ndarray, hang_up_after_s: float) -> None:
        super().__init__()
        self.greeting, self.hang_up_after_s = greeting, hang_up_after_s

    async def process(self, frame: Frame, direction: int) -> None:
        await super().process(frame, direction)
        if isinstance(frame, StartFrame):
            self.spawn(self._script(), interruptible=False)

    async def _script(self) -> None:
        await asyncio.sleep(0.2)
        await self.emit(OutputAudioFrame(pcm=self.greeting.tobytes(), sample_rate=8000, text="hi", turn_id=1))
        await asyncio.sleep(self.hang_up_after_s)
        await self.emit(EndFrame(reason="bot_hangup"))


@pytest.mark.asyncio
@pytest.mark.skipif(SIPP is None, reason="sipp not installed")
async def test_outbound_call_to_sipp_uas_with_rtp_echo() -> None:
    greeting = speech_8k("This is your appointment reminder.")
    bots: list[GreeterBot] = []
    server = SipServer(lambda info: bots.append(GreeterBot(greeting, len(greeting) / 8000 + 0.8)) or [bots[-1]],
                       host="127.0.0.1", port=0)
    await server.start()
    port = free_udp_port()
    callee = asyncio.create_task(run_sipp(
        ["-sn", "uas", "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(port), "-mp", str(free_udp_port()),
         "-rtp_echo", "-m", "1", "-nostdin", "-timeout", "30", "-timeout_error"], timeout=40))
    try:
        await asyncio.sleep(0.5)
        call = await server.call(f"sip:patient@127.0.0.1:{port}", ("127.0.0.1", port))
        assert call.info.direction == "outbound" and call.info.codec == "PCMU"
        await asyncio.wait_for(call.ended.wait(), 15)
        code, output = await callee
    finally:
        await server.stop()
    assert code == 0, output  # sipp saw INVITE, ACK and our BYE
    assert call.result is not None and call.result.reason == "bot_hangup"
    score = windowed_match(greeting, bots[0].heard_8k())
    assert score > 0.9, f"the echoed greeting came back distorted ({score:.3f})"


@pytest.mark.asyncio
async def test_outbound_call_to_nobody_times_out_cleanly() -> None:
    server = SipServer(lambda info: [Node()], host="127.0.0.1", port=0)
    await server.start()
    try:
        with pytest.raises((CallFailed, TimeoutError)):
            await server.call("sip:x@127.0.0.1:9", ("127.0.0.1", free_udp_port()), timeout=1.5)
        assert not server.calls
    finally:
        await server.stop()


class TransferBot(GreeterBot):
    async def _script(self) -> None:
        await asyncio.sleep(0.2)
        await self.emit(OutputAudioFrame(pcm=self.greeting.tobytes(), sample_rate=8000, text="transferring",
                                         turn_id=1))
        await self.emit(TransferFrame(target="sip:agent@example.com"))


@pytest.mark.asyncio
@pytest.mark.skipif(SIPP is None, reason="sipp not installed")
async def test_transfer_frame_becomes_refer_after_the_speech_is_played(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.telephony import scenarios

    greeting = speech_8k("Let me transfer you.")
    bots: list[TransferBot] = []
    server = SipServer(lambda info: bots.append(TransferBot(greeting, 0)) or [bots[-1]], host="127.0.0.1", port=0)
    await server.start()
    scenario = tmp_path / "refer.xml"
    scenario.write_text(scenarios.uas_accepting_transfer("sip:agent@example.com"))
    port = free_udp_port()
    callee = asyncio.create_task(run_sipp(
        ["-sf", str(scenario), "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(port), "-mp", str(free_udp_port()),
         "-m", "1", "-nostdin", "-timeout", "20", "-timeout_error"], timeout=30, cwd=tmp_path))
    try:
        await asyncio.sleep(0.5)
        started = time.monotonic()
        call = await server.call(f"sip:desk@127.0.0.1:{port}", ("127.0.0.1", port))
        await asyncio.wait_for(call.ended.wait(), 15)
        ended = time.monotonic()
        code, output = await callee
    finally:
        await server.stop()
    assert code == 0, output  # sipp checked the Refer-To and got our 200 to its NOTIFY and our BYE
    assert call.result is not None and call.result.reason == "transferred"
    assert ended - started > len(greeting) / 8000  # the REFER waited for the speech to be played
