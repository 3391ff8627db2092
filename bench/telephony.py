"""Telephony benchmark: SIP calls per core, RTP jitter we add, barge-in on the wire.

The server (this process) runs the real SIP transport; each call's graph is
Silero VAD plus a bot that talks without pause, so every call is full duplex
(50 RTP packets/s each way, G.711 both ways, jitter buffer, resampling, VAD).
Models that would be remote (STT, LLM, TTS) are left out, as the issue asks.

The callers run in a *separate process* (a small SIP/RTP client farm) so their
CPU does not count against the server. Measured:

* calls per core: server process CPU while K calls stream, K / cores used,
  with real-time health (frames delivered to the graph, output lateness);
* RTP jitter added by the server: RFC 3550 interarrival jitter and p99 packet
  gap of the bot's RTP as the callers receive it;
* barge-in latency on the wire: the caller's first speech packet leaving the
  caller → the last bot RTP packet arriving at the caller (VAD onset → an
  ``InterruptFrame`` → the output drops its queue), 10 trials.

Run: ``python -m bench.telephony --calls 25 50 100 --seconds 10``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import soundfile

from agent.audio import resample, ulaw_encode
from agent.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InputAudioFrame,
    InterruptFrame,
    OutputAudioFrame,
    StartFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
)
from agent.node import UPSTREAM, Node
from agent.vad.node import VADNode
from transports.sip.transport import SipServer


def speech(text: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(wav), text], check=True)
        data, rate = soundfile.read(wav, dtype="float32")
    return np.clip(resample(data, rate, 8000) * 32767, -32768, 32767).astype(np.int16)


# ------------------------------------------------------------------ server side


class Talker(Node):
    """Talks continuously (re-speaks when done); optionally yields to the caller."""

    def __init__(self, clip: np.ndarray, *, barge_in: bool, counter: dict[str, int]) -> None:
        super().__init__(name="talker")
        self.clip, self.barge_in, self.counter = clip, barge_in, counter
        self.speaking = False

    async def process(self, frame: Frame, direction: int) -> None:
        if direction == UPSTREAM:
            if isinstance(frame, BotStartedSpeakingFrame):
                self.speaking = True
            elif isinstance(frame, BotStoppedSpeakingFrame):
                self.speaking = False
                if not frame.interrupted:
                    self.spawn(self._say())
            await self.emit(frame, direction)
            return
        if isinstance(frame, StartFrame):
            await self.emit(frame, direction)
            self.spawn(self._say())
            return
        if isinstance(frame, InputAudioFrame):
            self.counter["frames"] += 1
            return
        if isinstance(frame, UserStartedSpeakingFrame) and self.barge_in and self.speaking:
            await self.broadcast(InterruptFrame(turn_id=frame.turn_id))
            return
        await self.emit(frame, direction)

    async def _say(self) -> None:
        await self.emit(OutputAudioFrame(pcm=self.clip.tobytes(), sample_rate=8000, text="x", turn_id=1))
        await self.emit(TTSStoppedFrame(turn_id=1))


# ------------------------------------------------------------------ caller farm

OFFER = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         "m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n")


def _request(method: str, port: int, sip_port: int, call_id: str, cseq: int, to_tag: str = "", body: str = "") -> bytes:
    to = f"<sip:bot@127.0.0.1>{';tag=' + to_tag if to_tag else ''}"
    head = (f"{method} sip:bot@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{sip_port};branch=z9hG4bK-{call_id}-{cseq}-{method}\r\n"
            f"From: <sip:farm@127.0.0.1>;tag=f{call_id}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\nContact: <sip:farm@127.0.0.1:{sip_port}>\r\nMax-Forwards: 70\r\n")
    if body:
        head += "Content-Type: application/sdp\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.sip: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data[:3] == b"SIP":
            self.sip.put_nowait(data)
        elif len(data) >= 12 and data[0] >> 6 == 2 and data[1] & 0x7F == 0:
            self.arrivals.append(time.monotonic())


async def _one_call(port: int, index: int, caller: np.ndarray, seconds: float, barge_at: float | None,
                    out: dict[str, object]) -> None:
    try:
        await _call_body(port, index, caller, seconds, barge_at, out)
    except (TimeoutError, OSError, IndexError, ValueError) as exc:
        out[f"failed-{index}"] = {"error": repr(exc), "arrivals": [], "onset_sent": None, "start": 0.0}


async def _call_body(port: int, index: int, caller: np.ndarray, seconds: float, barge_at: float | None,
                     out: dict[str, object]) -> None:
    loop = asyncio.get_running_loop()
    sip_t, sip = await loop.create_datagram_endpoint(_Collector, local_addr=("127.0.0.1", 0))
    rtp_t, rtp = await loop.create_datagram_endpoint(_Collector, local_addr=("127.0.0.1", 0))
    sip_port, rtp_port = sip_t.get_extra_info("sockname")[1], rtp_t.get_extra_info("sockname")[1]
    call_id = f"farm-{index}-{random.getrandbits(32)}"
    sip_t.sendto(_request("INVITE", port, sip_port, call_id, 1, body=OFFER.format(port=rtp_port)), ("127.0.0.1", port))
    to_tag, remote = "", None
    while True:
        data = await asyncio.wait_for(sip.sip.get(), 10)
        if data.startswith(b"SIP/2.0 200"):
            text = data.decode()
            to_tag = text.split("\r\nTo:", 1)[1].split("\r\n", 1)[0].split("tag=")[1].split(";")[0]
            remote = int(text.split("m=audio ", 1)[1].split(" ", 1)[0])
            break
    sip_t.sendto(_request("ACK", port, sip_port, call_id, 1, to_tag), ("127.0.0.1", port))
    frames = len(caller) // 160
    silence = ulaw_encode(np.zeros(160, dtype=np.int16))
    start, seq, sent_onset, sent = time.monotonic(), 0, None, 0
    ticks = int(seconds / 0.02)
    for tick in range(ticks):
        if barge_at is None:
            payload = ulaw_encode(caller[(tick % frames) * 160 : (tick % frames + 1) * 160])
        else:  # silence, then the caller's speech from ``barge_at`` on
            k = tick - int(barge_at / 0.02)
            payload = ulaw_encode(caller[k * 160 : (k + 1) * 160]) if 0 <= k < frames else silence
            if k == 0:
                sent_onset = time.monotonic()
        header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, 0x1234 + index)
        rtp_t.sendto(header + payload, ("127.0.0.1", remote))
        seq += 1
        sent += 1
        await asyncio.sleep(max(0.0, start + (tick + 1) * 0.02 - time.monotonic()))
    sip_t.sendto(_request("BYE", port, sip_port, call_id, 2, to_tag), ("127.0.0.1", port))
    await asyncio.sleep(0.2)
    sip_t.close()
    rtp_t.close()
    out[call_id] = {"arrivals": rtp.arrivals, "onset_sent": sent_onset, "start": start, "sent": sent,
                    "expected": ticks}


def _farm(port: int, calls: int, seconds: float, barge_at: float | None, caller: np.ndarray,
          conn: mp.connection.Connection) -> None:
    async def main() -> dict[str, object]:
        out: dict[str, object] = {}
        tasks = []
        for i in range(calls):
            tasks.append(asyncio.create_task(_one_call(port, i, caller, seconds, barge_at, out)))
            await asyncio.sleep(0.01)  # 100 call setups per second
        await asyncio.gather(*tasks)
        return out

    conn.send(asyncio.run(main()))


# ------------------------------------------------------------------ measurement


def _jitter_ms(arrivals: list[float]) -> tuple[float, float]:
    """RFC 3550 interarrival jitter (every packet is 20 ms of media) and p99 gap, ms."""
    gaps = np.diff(arrivals)
    if not len(gaps):
        return float("nan"), float("nan")
    jitter = 0.0
    for gap in gaps:
        if gap < 0.25:  # skip the idle gap between utterances
            jitter += (abs(gap - 0.02) - jitter) / 16
    return 1000 * jitter, 1000 * float(np.percentile(gaps[gaps < 0.25], 99))


async def run_load(calls: int, seconds: float, clip: np.ndarray, caller: np.ndarray,
                   vad: bool = True) -> dict[str, float]:
    counter = {"frames": 0}
    server = SipServer(lambda info: [*([VADNode()] if vad else []), Talker(clip, barge_in=False, counter=counter)],
                       host="127.0.0.1", port=0)
    await server.start()
    here, there = mp.Pipe()
    farm = mp.get_context("spawn").Process(target=_farm, args=(server.port, calls, seconds, None, caller, there))
    me = psutil.Process()
    farm.start()
    await asyncio.sleep(calls * 0.01 + 1.0)  # all calls up
    logs = []
    for call in server.calls.values():
        call.rtp.send_log = []
        logs.append(call.rtp.send_log)
    cpu0, t0, frames0 = me.cpu_times(), time.monotonic(), counter["frames"]
    await asyncio.sleep(max(1.0, seconds - calls * 0.01 - 2.0))
    cpu1, t1, frames1 = me.cpu_times(), time.monotonic(), counter["frames"]
    send_jitter = [_jitter_ms(log) for log in logs if len(log) > 10] or [(np.nan, np.nan)]
    deadline = time.monotonic() + seconds + 60
    while not here.poll() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    results = here.recv() if here.poll() else {}
    farm.join(timeout=5)
    await server.stop()
    cores = ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / (t1 - t0)
    delivered = (frames1 - frames0) / ((t1 - t0) * 50 * calls)
    jitters = [_jitter_ms(r["arrivals"]) for r in results.values() if len(r["arrivals"]) > 10] or [(np.nan, np.nan)]
    farm_sent = sum(r.get("sent", 0) for r in results.values()) / max(1, sum(r.get("expected", 1) for r in results.values()))
    return {
        "calls": calls,
        "vad": vad,
        "server_cores_used": round(cores, 3),
        "calls_per_core": round(calls / cores, 1) if cores else float("inf"),
        "input_frames_delivered": round(delivered, 4),
        "farm_packets_sent_ratio": round(farm_sent, 4),
        "server_send_jitter_ms_median": round(float(np.median([j for j, _ in send_jitter])), 2),
        "server_send_gap_p99_ms_median": round(float(np.median([g for _, g in send_jitter])), 2),
        "farm_rx_jitter_ms_median": round(float(np.median([j for j, _ in jitters])), 2),
        "farm_rx_gap_p99_ms_worst": round(float(np.max([g for _, g in jitters])), 2),
        "calls_completed": sum(1 for k in results if not str(k).startswith("failed")),
    }


async def run_barge_in(trials: int, clip: np.ndarray, caller: np.ndarray) -> dict[str, float]:
    latencies = []
    counter = {"frames": 0}
    server = SipServer(lambda info: [VADNode(), Talker(clip, barge_in=True, counter=counter)],
                       host="127.0.0.1", port=0)
    await server.start()
    # True onset: the first 10 ms of the clip above -40 dBFS (earlier than any VAD decision).
    rms = np.sqrt(np.mean(caller[: len(caller) // 80 * 80].astype(np.float64).reshape(-1, 80) ** 2, axis=1))
    onset = int(np.argmax(rms > 328)) * 80 / 8000
    for _ in range(trials):
        here, there = mp.Pipe()
        farm = mp.get_context("spawn").Process(target=_farm, args=(server.port, 1, 4.0, 1.5, caller, there))
        farm.start()
        while not here.poll():
            await asyncio.sleep(0.05)
        result = next(iter(here.recv().values()))
        farm.join()
        speech_onset = result["onset_sent"] + onset
        before = [t for t in result["arrivals"] if t >= speech_onset - 0.02]
        # The last packet of the burst that was playing when the caller spoke.
        last = before[0] if before else speech_onset
        for t in before[1:]:
            if t - last > 0.1:
                break
            last = t
        latencies.append(1000 * (last - speech_onset))
    await server.stop()
    return {"barge_in_ms_p50": round(float(np.median(latencies)), 1),
            "barge_in_ms_min": round(min(latencies), 1), "barge_in_ms_max": round(max(latencies), 1),
            "trials": trials}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, nargs="*", default=[25, 50, 100])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--barge-trials", type=int, default=10)
    parser.add_argument("--no-vad", action="store_true", help="transport only (no Silero) to split the cost")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    clip = speech("Your appointment is confirmed for Tuesday at nine in the morning. Please arrive early.")
    caller = speech("Hello, I would like to change my appointment to Thursday afternoon please.")
    results: dict[str, object] = {"cpu_count": os.cpu_count(), "load": []}
    for calls in args.calls:
        row = await run_load(calls, args.seconds, clip, caller, vad=not args.no_vad)
        print(json.dumps(row), flush=True)
        results["load"].append(row)  # type: ignore[union-attr]
    if args.barge_trials:
        row = await run_barge_in(args.barge_trials, clip, caller)
        print(json.dumps(row), flush=True)
        results["barge_in"] = row
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    socket.setdefaulttimeout(10)
    asyncio.run(main())
