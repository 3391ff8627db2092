"""Voxtral stage overhead, against the protocol emulator running as its own process.

    python bench/voxtral.py [--json] [--dialect vllm-omni|mistral] [--ttfa-ms 70] [--runs 30]

1. framework-added latency: first audio byte received → first audio frame
   emitted by the node (target ≤ 5 ms p50), with the server's injected TTFA;
2. barge-in: interrupt reaching the node → every in-flight HTTP stream closed
   (target ≤ 20 ms), and when the server noticed;
3. float32 → int16 (the Mistral ``pcm`` wire format): vectorised vs a
   per-sample Python loop like the thin adapters use.

With ``--json`` the last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time

import httpx
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent import Node, Session  # noqa: E402
from agent.frames import Frame, InterruptFrame, OutputAudioFrame, SpeakFrame, TTSStoppedFrame  # noqa: E402
from tts.voxtral.node import VoxtralTTSNode  # noqa: E402
from tts.voxtral.protocol import PcmDecoder  # noqa: E402

VOICE = {"vllm-omni": "neutral_female", "mistral": "en_paul_neutral"}
SENTENCES = [
    "Your appointment is confirmed for Tuesday.",
    "I can help you with that right away.",
    "The clinic opens at eight in the morning.",
    "Please hold while I check your account.",
]
LONG = ("Let me read the full list of our opening hours for every clinic in the city. "
        "The downtown clinic opens at eight in the morning and closes at six in the evening.")  # fmt: skip


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if values else float("nan")


class Sink(Node):
    """Takes audio as fast as it comes (no real-time playout) and notes turn ends."""

    def __init__(self) -> None:
        super().__init__(name="sink")
        self.stopped: asyncio.Queue[int] = asyncio.Queue()
        self.first_frame: dict[int, float] = {}

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, OutputAudioFrame):
            self.first_frame.setdefault(frame.turn_id, time.monotonic())
        elif isinstance(frame, TTSStoppedFrame):
            self.stopped.put_nowait(frame.turn_id)


class Emulator:
    """``python -m tts.voxtral.emulator`` in a child process (its own CPU, like a real server)."""

    def __init__(self, dialect: str, ttfa_ms: float, rtf: float) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tts.voxtral.emulator", "--port", str(self.port), "--dialect", dialect,
             "--ttfa-ms", str(ttfa_ms), "--rtf", str(rtf), "--api-key", "bench"],
            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    async def ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                try:
                    if (await http.get(self.url + "/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if self.process.poll() is not None:
                    raise RuntimeError("the emulator exited; run it by hand to see why")
                await asyncio.sleep(0.2)
        raise TimeoutError("the emulator did not come up")

    async def set(self, **values: float) -> None:
        async with httpx.AsyncClient() as http:
            await http.post(self.url + "/_emulator/faults", json=values)

    async def requests(self) -> list[dict]:
        async with httpx.AsyncClient() as http:
            return (await http.get(self.url + "/_emulator/requests")).json()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


# ---------------------------------------------------------- 1. first audio frame


async def first_frame(emulator: Emulator, dialect: str, runs: int) -> dict[str, float]:
    node = VoxtralTTSNode(emulator.url, dialect, voice=VOICE[dialect], api_key="bench", max_ahead_s=None)
    sink = Sink()
    session = Session([node, sink], output_sample_rate=16000)
    task = asyncio.create_task(session.run())
    await asyncio.sleep(0.3)
    pushed: dict[int, float] = {}
    for turn in range(1, runs + 1):
        pushed[turn] = time.monotonic()
        await session.push(SpeakFrame(text=SENTENCES[turn % len(SENTENCES)], turn_id=turn))
        while await asyncio.wait_for(sink.stopped.get(), 30) != turn:
            pass
    await session.cancel()
    await task
    rows = [r for r in node.requests if r["framework_delay_ms"] is not None][2:]  # first two warm up
    delays = [r["framework_delay_ms"] for r in rows]
    text_to_audio = [(sink.first_frame[t] - pushed[t]) * 1000 for t in range(3, runs + 1) if t in sink.first_frame]
    return {
        "framework_p50_ms": pct(delays, 50),
        "framework_p99_ms": pct(delays, 99),
        "server_ttfa_p50_ms": pct([r["ttfa_ms"] for r in rows], 50),
        "text_to_first_frame_p50_ms": pct(text_to_audio, 50),
        "n": len(delays),
    }


# ------------------------------------------------------------------ 2. barge-in


async def barge_in(emulator: Emulator, dialect: str, runs: int) -> dict[str, float]:
    node = VoxtralTTSNode(emulator.url, dialect, voice=VOICE[dialect], api_key="bench", max_ahead_s=None)
    sink = Sink()
    session = Session([node, sink], output_sample_rate=16000)
    task = asyncio.create_task(session.run())
    await asyncio.sleep(0.3)
    server_ms: list[float] = []
    for turn in range(1, runs + 1):
        await session.push(SpeakFrame(text=LONG, turn_id=turn))
        while turn not in sink.first_frame or sum(not f.task.done() for f in node._fetches) < 2:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.1)
        interrupted = time.monotonic()
        await session.push(InterruptFrame(turn_id=turn))
        while len(node.interrupts) < turn:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.3)
        cut = [r for r in await emulator.requests() if r["client_disconnected"]]
        if cut:
            server_ms.append((max(r["t_finished"] for r in cut[-2:]) - interrupted) * 1000)
    await session.cancel()
    await task
    closed = [row["closed_ms"] for row in node.interrupts]
    return {
        "closed_p50_ms": pct(closed, 50),
        "closed_max_ms": round(max(closed), 3),
        "server_stopped_p50_ms": pct(server_ms, 50),
        "streams_per_interrupt": statistics.mean(row["streams"] for row in node.interrupts),
        "wasted_kb_p50": pct([row["wasted_bytes"] / 1024 for row in node.interrupts], 50),
        "n": len(closed),
    }


# --------------------------------------------------------------- 3. conversion


def per_sample_loop(data: bytes) -> bytes:
    """What a thin adapter does: unpack, clamp and repack one float at a time."""
    out = bytearray()
    for (value,) in struct.iter_unpack("<f", data[: len(data) - len(data) % 4]):
        out += struct.pack("<h", int(max(-1.0, min(1.0, value)) * 32767))
    return bytes(out)


def conversion(seconds: float = 10.0) -> dict[str, float]:
    data = np.random.default_rng(0).uniform(-1, 1, int(24000 * seconds)).astype("<f4").tobytes()
    start = time.perf_counter()
    loops = 0
    while time.perf_counter() - start < 0.5:
        PcmDecoder("<f4").feed(data)
        loops += 1
    vector_s = (time.perf_counter() - start) / loops
    start = time.perf_counter()
    per_sample_loop(data)
    loop_s = time.perf_counter() - start
    samples = len(data) / 4
    return {
        "vectorised_msamples_per_s": round(samples / vector_s / 1e6, 1),
        "loop_msamples_per_s": round(samples / loop_s / 1e6, 2),
        "ratio": round(loop_s / vector_s, 1),
        "vectorised_us_per_audio_s": round(vector_s / seconds * 1e6, 1),
    }


# ----------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> dict:
    emulator = Emulator(args.dialect, args.ttfa_ms, rtf=0.1)
    try:
        await emulator.ready()
        latency = await first_frame(emulator, args.dialect, args.runs)
        await emulator.set(ttfa_s=args.ttfa_ms / 1000)
        slow = Emulator(args.dialect, args.ttfa_ms, rtf=0.6)  # long streams, so two are in flight
        try:
            await slow.ready()
            interrupt = await barge_in(slow, args.dialect, max(5, args.runs // 3))
        finally:
            slow.stop()
    finally:
        emulator.stop()
    return {"dialect": args.dialect, "injected_ttfa_ms": args.ttfa_ms, "first_frame": latency,
            "interrupt": interrupt, "float32_to_int16": conversion()}  # fmt: skip


def table(result: dict) -> str:
    first, cut, conv = result["first_frame"], result["interrupt"], result["float32_to_int16"]
    rows = [
        ("framework delay, first byte → first frame p50", f"{first['framework_p50_ms']:.2f} ms", "≤ 5 ms"),
        ("framework delay p99", f"{first['framework_p99_ms']:.2f} ms", ""),
        ("server TTFA seen by the client p50", f"{first['server_ttfa_p50_ms']:.1f} ms",
         f"injected {result['injected_ttfa_ms']:.0f} ms"),
        ("text in → first frame out p50", f"{first['text_to_first_frame_p50_ms']:.1f} ms", ""),
        ("interrupt → all streams closed p50", f"{cut['closed_p50_ms']:.2f} ms", "≤ 20 ms"),
        ("interrupt → all streams closed max", f"{cut['closed_max_ms']:.2f} ms", ""),
        ("interrupt → server stopped p50", f"{cut['server_stopped_p50_ms']:.1f} ms", ""),
        ("streams open at each interrupt", f"{cut['streams_per_interrupt']:.1f}", ""),
        ("float32→int16 vectorised", f"{conv['vectorised_msamples_per_s']} Msamples/s", ""),
        ("float32→int16 per-sample loop", f"{conv['loop_msamples_per_s']} Msamples/s", ""),
        ("speed-up", f"{conv['ratio']}×", ""),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    lines = [f"Voxtral stage, {result['dialect']} dialect (emulator in its own process)"]
    lines += [f"  {name:<{width}}  {value:>18}  {target}" for name, value, target in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dialect", choices=list(VOICE), default="vllm-omni")
    parser.add_argument("--ttfa-ms", type=float, default=70.0, help="server TTFA the emulator injects")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(table(result))
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
