"""Caller speech over SIP/RTP or WebRTC through loss and jitter, transcribed by the bot: WER against a clean run.

    sudo python bench/impaired.py --loss 0.05 --delay-ms 40 --jitter-ms 10 --json
    sudo python bench/impaired.py --transport webrtc --json

The kernel here has no netem, so the network is impaired with NFQUEUE: every
UDP datagram on loopback goes to a small user-space worker that tells the kinds
apart by their first byte as a WebRTC endpoint does (RFC 7983: STUN 0-3, DTLS
20-63, RTP and RTCP 128-191, SRTP/SRTCP included since their headers are in
the clear). Media (RTP and RTCP) is dropped with probability ``loss`` or
released after ``delay ± jitter`` (Gaussian; packets can overtake each other,
as on a real path). Everything else passes at once: SIP signalling, and for
WebRTC the ICE checks and DTLS (which also carries the page's data channel),
so the call itself is not in question, only what the jitter buffers make of
the media. It all happens in a private network namespace (``unshare -n``), so
the iptables rule never touches the rest of the machine.

Each run places the same calls twice, clean and impaired, and scores the
transcripts with jiwer. SIP: sipp plays one sentence per call (piper speech at
8 kHz, PCMU) into the SIP transport with Silero VAD and tiny.en Whisper;
reported are RTP packets seen and dropped and the jitter buffer's concealment
counters. WebRTC (``--transport webrtc``, see ``bench/impaired_webrtc.py``):
one headless Chromium call speaks all sentences (Opus both ways) to the same
VAD and Whisper, the bot answers each with a fixed line that the page records
and Whisper transcribes back, and both ends' getStats() figures are reported
(aiortc's receiver; the browser's NetEQ concealment and NACKs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SENTENCES = [
    "I would like to book an appointment for next Tuesday morning.",
    "Could you tell me where the clinic is and whether there is parking?",
    "My daughter has a sore throat and a fever since yesterday evening.",
    "Please send the prescription to the pharmacy on Maple Street.",
    "I need to cancel my visit on Friday because I am travelling.",
    "Is the doctor available in the afternoon later this week?",
]
QUEUE = 1


# ------------------------------------------------------------- NFQUEUE worker


def classify(data: bytes) -> str:
    """What an IPv4 UDP datagram carries, by its first payload byte (RFC 7983 demultiplexing)."""
    offset = (data[0] & 0x0F) * 4 + 8  # IPv4 header, then the UDP header
    if len(data) <= offset:
        return "other"
    first = data[offset]
    if 128 <= first <= 191:  # version 2: RTP, or RTCP by its packet type (RFC 5761)
        return "rtcp" if len(data) > offset + 1 and 192 <= data[offset + 1] <= 223 else "rtp"
    if first <= 3:
        return "stun"
    if 20 <= first <= 63:
        return "dtls"
    return "other"


def nfq_worker(loss: float, delay_ms: float, jitter_ms: float, seed: int, stats_path: str) -> None:
    """Drop or delay every RTP and RTCP packet of queue 1; anything else passes at once."""
    from netfilterqueue import NetfilterQueue

    rng = random.Random(seed)
    loop = asyncio.new_event_loop()
    counts: dict[str, Any] = {"rtp": 0, "dropped": 0, "rtcp": 0, "rtcp_dropped": 0, "stun": 0, "dtls": 0,
                              "other": 0, "rtp_by_ssrc": {}}

    def decide(packet: Any) -> None:
        data = packet.get_payload()
        kind = classify(data)
        counts[kind] += 1
        if kind not in ("rtp", "rtcp"):
            packet.accept()
            return
        drop = rng.random() < loss
        if kind == "rtp":  # per stream, so that each direction's loss can be told apart
            offset = (data[0] & 0x0F) * 4 + 8
            stream = counts["rtp_by_ssrc"].setdefault(str(int.from_bytes(data[offset + 8:offset + 12], "big")), [0, 0])
            stream[0] += 1
            stream[1] += drop
        if drop:
            counts["dropped" if kind == "rtp" else "rtcp_dropped"] += 1
            packet.drop()
            return
        packet.retain()
        loop.call_later(max(0.0, rng.gauss(delay_ms, jitter_ms)) / 1000.0, packet.accept)

    queue = NetfilterQueue()
    queue.bind(QUEUE, decide)
    sock = socket.fromfd(queue.get_fd(), socket.AF_UNIX, socket.SOCK_STREAM)
    loop.add_reader(sock.fileno(), lambda: queue.run(block=False))

    def save() -> None:
        Path(stats_path).write_text(json.dumps(counts))
        loop.call_later(0.5, save)

    save()
    loop.add_signal_handler(signal.SIGTERM, loop.stop)  # stopped: the last counts are saved below
    try:
        loop.run_forever()
    finally:
        Path(stats_path).write_text(json.dumps(counts))
        queue.unbind()


def iptables(*args: str) -> None:
    subprocess.run(["iptables", *args], check=True)


# ----------------------------------------------------------------- the calls


async def run_calls(sentences: list[str], workdir: Path, label: str) -> dict[str, Any]:
    """One sipp call per sentence into a VAD → Whisper bot; returns the transcripts and RTP counters."""
    import numpy as np

    from agent.calls import CallInfo, CallManager
    from agent.frames import Frame, TranscriptionFrame
    from agent.node import Node
    from agent.vad import VADNode
    from stt.whisper import WhisperSTTNode
    from tests.reliability.helpers import speech
    from tests.telephony.helpers import run_sipp, write_rtp_pcap
    from transports.sip.transport import SipServer

    heard: dict[str, list[str]] = {}

    class Transcripts(Node):
        def __init__(self, call_id: str) -> None:
            super().__init__(name="transcripts")
            self.call_id = call_id

        async def process(self, frame: Frame, direction: int) -> None:
            if isinstance(frame, TranscriptionFrame) and frame.final:
                heard.setdefault(self.call_id, []).append(frame.text)
            await self.emit(frame, direction)

    def bot(info: CallInfo) -> list[Node]:
        return [VADNode(), WhisperSTTNode(interims="off"), Transcripts(info.session_id)]

    manager = CallManager(bot)
    server = SipServer(manager, host="127.0.0.1", port=0)
    await server.start()
    jitter: dict[str, dict[str, int]] = {}

    async def watch() -> None:
        while True:
            for call in server.calls.values():
                stats = call.rtp.jitter.stats
                jitter[call.info.session_id] = {"received": stats.received, "concealed": stats.concealed_frames,
                                                "late": stats.late, "skipped": stats.skipped_frames}
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    transcripts: list[str] = []
    try:
        for i, sentence in enumerate(sentences):
            pcm = speech(sentence, rate=8000)
            pcm = np.concatenate([np.zeros(2400, np.int16), pcm, np.zeros(4000, np.int16)])
            pcap = workdir / f"{label}-{i}.pcap"
            write_rtp_pcap(pcap, pcm)
            scenario = workdir / f"{label}-{i}.xml"
            scenario.write_text(_SCENARIO.format(pcap=pcap, pause_ms=len(pcm) * 1000 // 8000 + 1500))
            before = set(heard)
            code, out = await run_sipp([f"127.0.0.1:{server.port}", "-sf", str(scenario), "-i", "127.0.0.1",
                                        "-mi", "127.0.0.1", "-p", "0", "-m", "1", "-l", "1", "-nostdin",
                                        "-timeout", "40", "-timeout_error"], timeout=60, cwd=workdir)
            if code != 0:
                raise RuntimeError(f"sipp failed ({code}): {out[-800:]}")
            await asyncio.sleep(0.5)
            new = [k for k in heard if k not in before]
            transcripts.append(" ".join(" ".join(heard[k]) for k in new))
    finally:
        watcher.cancel()
        await server.stop()
        await manager.close()
    totals = {key: sum(j[key] for j in jitter.values()) for key in ("received", "concealed", "late", "skipped")}
    return {"transcripts": transcripts, "jitter_buffer": totals}


def wer(references: list[str], hypotheses: list[str]) -> float:
    import jiwer

    def norm(text: str) -> str:
        return " ".join(re.findall(r"[a-z']+", text.lower()))

    return float(jiwer.wer([norm(r) for r in references], [norm(h) or "<nothing>" for h in hypotheses]))


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    sentences = SENTENCES[: args.sentences]
    if args.transport == "webrtc":
        from impaired_webrtc import run_call as run
    else:
        run = run_calls
    started = time.monotonic()
    stats_path = tempfile.mktemp(prefix="nfq-stats-")
    with tempfile.TemporaryDirectory(prefix="impaired-") as tmp:
        workdir = Path(tmp)
        clean = await run(sentences, workdir, "clean")
        worker = subprocess.Popen([sys.executable, __file__, "--nfq-worker", "--loss", str(args.loss),
                                   "--delay-ms", str(args.delay_ms), "--jitter-ms", str(args.jitter_ms),
                                   "--seed", str(args.seed), "--stats", stats_path])
        time.sleep(0.5)
        iptables("-A", "INPUT", "-p", "udp", "-j", "NFQUEUE", "--queue-num", str(QUEUE), "--queue-bypass")
        try:
            impaired = await run(sentences, workdir, "impaired")
        finally:
            iptables("-F", "INPUT")
            worker.terminate()
            worker.wait(5)
    counts = json.loads(Path(stats_path).read_text()) if os.path.exists(stats_path) else {}
    Path(stats_path).unlink(missing_ok=True)
    report: dict[str, Any] = {
        "transport": args.transport, "sentences": len(sentences), "words": sum(len(s.split()) for s in sentences),
        "loss": args.loss, "delay_ms": args.delay_ms, "jitter_ms": args.jitter_ms,
        "rtp_packets_seen": counts.get("rtp"), "rtp_packets_dropped": counts.get("dropped"),
        "measured_loss": round(counts["dropped"] / counts["rtp"], 4) if counts.get("rtp") else None,
        "rtcp_packets_seen": counts.get("rtcp"), "rtcp_packets_dropped": counts.get("rtcp_dropped"),
        "passed_untouched": {k: counts.get(k) for k in ("stun", "dtls", "other")},
    }
    if args.transport == "webrtc":
        report |= webrtc_figures(sentences, clean, impaired, counts)
    else:
        clean_wer, impaired_wer = wer(sentences, clean["transcripts"]), wer(sentences, impaired["transcripts"])
        report |= {
            "wer_clean": round(clean_wer, 4), "wer_impaired": round(impaired_wer, 4),
            "wer_delta_points": round(100 * (impaired_wer - clean_wer), 2),
            "jitter_buffer_clean": clean["jitter_buffer"], "jitter_buffer_impaired": impaired["jitter_buffer"],
            "transcripts_clean": clean["transcripts"], "transcripts_impaired": impaired["transcripts"],
        }
    report["run_s"] = round(time.monotonic() - started, 1)
    return report


def webrtc_figures(sentences: list[str], clean: dict[str, Any], impaired: dict[str, Any],
                   counts: dict[str, Any]) -> dict[str, Any]:
    """Both directions' WER, clean and impaired, and each direction's packets seen and dropped."""
    said = " ".join(sentences)
    caller = {run: wer([said], [" ".join(result["transcripts"])]) for run, result in
              (("clean", clean), ("impaired", impaired))}
    bot = {run: wer([" ".join(result["bot_said"])], [result["bot_heard_by_caller"]]) if result["bot_said"] else 1.0
           for run, result in (("clean", clean), ("impaired", impaired))}
    by_ssrc = counts.get("rtp_by_ssrc", {})

    def stream(kind: str) -> dict[str, int]:
        seen, dropped = by_ssrc.get(str(impaired["browser"].get(kind, {}).get("ssrc")), [0, 0])
        return {"seen": seen, "dropped": dropped}

    return {
        "wer_clean": round(caller["clean"], 4), "wer_impaired": round(caller["impaired"], 4),
        "wer_delta_points": round(100 * (caller["impaired"] - caller["clean"]), 2),
        "bot_wer_clean": round(bot["clean"], 4), "bot_wer_impaired": round(bot["impaired"], 4),
        "rtp_caller_to_bot": stream("outbound-rtp"), "rtp_bot_to_caller": stream("inbound-rtp"),
        "transcripts_clean": clean["transcripts"], "transcripts_impaired": impaired["transcripts"],
        "clean": {k: v for k, v in clean.items() if k != "transcripts"},
        "impaired": {k: v for k, v in impaired.items() if k != "transcripts"},
    }


_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="impaired">
  <send retrans="500"><![CDATA[
      INVITE sip:bot@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: caller <sip:caller@[local_ip]:[local_port]>;tag=[pid]imp[call_number]
      To: <sip:bot@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:caller@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[local_ip_type] [local_ip]
      t=0 0
      m=audio [auto_media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[
      ACK sip:bot@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: caller <sip:caller@[local_ip]:[local_port]>;tag=[pid]imp[call_number]
      To: <sip:bot@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>
  <pause milliseconds="{pause_ms}"/>
  <send retrans="500"><![CDATA[
      BYE sip:bot@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: caller <sip:caller@[local_ip]:[local_port]>;tag=[pid]imp[call_number]
      To: <sip:bot@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <recv response="200" crlf="true"/>
</scenario>
"""


def requirements(transport: str) -> str | None:
    """Why this cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (a network namespace and iptables)"
    for tool in ("unshare", "iptables", "ip", "sipp" if transport == "sip" else "chromium"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        import netfilterqueue  # noqa: F401
    except ImportError:
        return "netfilterqueue is not installed (apt libnetfilter-queue-dev, pip netfilterqueue==1.1.0)"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transport", choices=("sip", "webrtc"), default="sip",
                        help="sipp calls over SIP/RTP, or one headless Chromium call over WebRTC")
    parser.add_argument("--loss", type=float, default=0.05)
    parser.add_argument("--delay-ms", type=float, default=40.0)
    parser.add_argument("--jitter-ms", type=float, default=10.0)
    parser.add_argument("--sentences", type=int, default=len(SENTENCES))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--nfq-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stats", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.nfq_worker:
        nfq_worker(args.loss, args.delay_ms, args.jitter_ms, args.seed, args.stats)
        return 0
    if not args.in_netns:
        problem = requirements(args.transport)
        if problem:
            print(json.dumps({"skipped": problem}))
            return 2
        return subprocess.call(["unshare", "-n", sys.executable, __file__, "--in-netns", *sys.argv[1:]])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    report = asyncio.run(measure(args))
    print(json.dumps(report, indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
