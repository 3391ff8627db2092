"""The clinic line on real networks: one SIP call (sipp, RFC 4733 keys) and one Twilio
Media Streams call (a client written from Twilio's docs), at the same time, into the
servers ``python -m examples.ivr`` starts — one CallManager for both.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from agent.audio import ulaw_decode
from agent.calls import CallManager
from agent.frames import EventFrame, Frame, TransferFrame
from examples.ivr.bot import ClinicConfig, make_ivr_bot, warm_up
from examples.ivr.serve import serve_clinic_line
from tests.examples.conftest import heard
from tests.telephony import scenarios
from tests.telephony.helpers import SIPP, LoopbackCapture, is_root, run_sipp, write_rtp_pcap
from tests.telephony.twilio_client import TwilioTestClient

DTMF = Path("/usr/share/sip-tester")
pytestmark = [
    pytest.mark.skipif(SIPP is None or not (DTMF / "dtmf_2833_1.pcap").exists(), reason="sipp and its DTMF pcaps"),
    pytest.mark.skipif(not is_root(), reason="the RTP sniffer needs root (AF_PACKET)"),
]


def silence_pcap(path: Path, seconds: float) -> tuple[Path, int]:
    write_rtp_pcap(path, np.zeros(int(seconds * 8000), dtype=np.int16))
    return path, int(seconds * 1000)


async def sip_call(port: int, folder: Path) -> tuple[int, str]:
    """sipp: listen through the greeting, press 1 (book), then 2 (Tuesday), listen, hang up."""
    steps = [silence_pcap(folder / "s1.pcap", 7.0), (DTMF / "dtmf_2833_1.pcap", 400),
             silence_pcap(folder / "s2.pcap", 3.0), (DTMF / "dtmf_2833_2.pcap", 400),
             silence_pcap(folder / "s3.pcap", 5.5)]
    scenario = folder / "ivr.xml"
    scenario.write_text(scenarios.call_playing(steps))
    return await run_sipp([f"127.0.0.1:{port}", "-sf", str(scenario), "-i", "127.0.0.1", "-mi", "127.0.0.1",
                           "-p", "0", "-m", "1", "-l", "1", "-nostdin", "-timeout", "40", "-timeout_error"],
                          timeout=60, cwd=folder)


async def twilio_call(url: str) -> TwilioTestClient:
    """Twilio: listen through the greeting, press 0 (front desk), hear the hand-off, hang up."""
    async with TwilioTestClient(url, call_sid="CA00IVR", parameters={"From": "+15550142"}) as client:
        await client.silence(6.5)
        await client.dtmf("0")
        await client.silence(5.0)
        await client.stop()
        await asyncio.sleep(0.3)
    return client


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("lines")
    config = ClinicConfig(db_path=folder / "clinic.sqlite3", recordings=folder / "vm",
                          front_desk="+15550100", now=lambda: datetime(2026, 3, 3, 10, 0))
    seen: dict[str, list[tuple[float, Frame]]] = {}
    rtp_ports: set[int] = set()

    async def run() -> dict[str, object]:
        await asyncio.to_thread(warm_up)  # as the server does before it answers
        manager = CallManager(make_ivr_bot(config))
        manager.on_session(lambda session, info: session.subscribe(
            lambda f, _d, log=seen.setdefault(info.transport, []): log.append((time.monotonic(), f))))
        line = await serve_clinic_line(manager, host="127.0.0.1", sip_port=0, http_port=0)

        async def note_rtp_ports() -> None:  # to pick the bot's packets out of everything on lo
            while True:
                rtp_ports.update(call.rtp.local_port for call in line.sip.calls.values())
                await asyncio.sleep(0.2)

        watcher = asyncio.create_task(note_rtp_ports())
        try:
            with LoopbackCapture() as capture:
                (code, output), client = await asyncio.gather(sip_call(line.sip.port, folder),
                                                              twilio_call(line.twilio.media_url("twilio", "CA00IVR")))
                await asyncio.sleep(0.5)
        finally:
            watcher.cancel()
            await line.close()
        return {"sipp": (code, output), "twilio": client, "capture": capture, "sip_port": line.sip.port,
                "results": list(manager.results)}

    out = asyncio.run(run())
    out.update(config=config, seen=seen, rtp_ports=rtp_ports)
    return out


def test_both_calls_were_answered_by_one_manager(lines) -> None:  # type: ignore[no-untyped-def]
    code, output = lines["sipp"]
    assert code == 0, output[-2000:]
    assert sorted(lines["seen"]) == ["sip", "twilio"]
    assert len(lines["results"]) == 2 and all(r.error is None for r in lines["results"])


def test_sip_caller_books_with_rfc4733_keys(lines, whisper) -> None:  # type: ignore[no-untyped-def]
    with sqlite3.connect(lines["config"].db_path) as db:
        rows = db.execute("SELECT caller, day, slot FROM appointments").fetchall()
    assert rows == [("sipp", "2026-03-10", "09:00")]
    assert len(lines["rtp_ports"]) == 1
    bot_rtp = [(t, p) for t, src, _dst, p in lines["capture"].packets
               if src in lines["rtp_ports"] and len(p) > 12 and p[0] >> 6 == 2 and p[1] & 0x7F == 0]
    bot_rtp.sort(key=lambda packet: packet[0])  # arrival order (sequence numbers may wrap)
    audio = np.frombuffer(ulaw_decode(b"".join(p[12:] for _, p in bot_rtp)), dtype=np.int16)
    words = heard(whisper, audio, 8000)
    assert "may be recorded" in words and "which day" in words and "tuesday" in words, words


def test_twilio_caller_hears_the_notice_and_is_handed_to_the_front_desk(lines, whisper) -> None:  # type: ignore[no-untyped-def]
    client: TwilioTestClient = lines["twilio"]
    words = heard(whisper, client.heard(), 8000)
    assert "may be recorded" in words and "front desk" in words, words
    assert "press two" not in words  # the key press cut the menu
    frames = lines["seen"]["twilio"]
    transfer = [t for t, f in frames if isinstance(f, TransferFrame) and f.target == "+15550100"]
    requested = [f for _, f in frames if isinstance(f, EventFrame) and f.kind == "transfer_requested"]
    assert transfer and requested and requested[0].data["target"] == "+15550100"
