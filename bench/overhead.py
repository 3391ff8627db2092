"""Framework overhead: per-frame latency, sessions per process, interrupt propagation.

    python bench/overhead.py [--json] [--quick]

Scenarios match the Pipecat figures in ../shared/docs/anchors.md (measured on
the same machine) so the ratios printed at the end compare like with like.
With ``--json`` the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time

import numpy as np
import psutil
import webrtcvad

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent import Node, Session  # noqa: E402
from agent.frames import Frame, InputAudioFrame, InterruptFrame, OutputAudioFrame  # noqa: E402
from transports.local import RecordingOutput  # noqa: E402

RATE = 16000
FRAME = RATE // 50  # 20 ms
PCM = (np.sin(np.arange(FRAME) / 7) * 3000).astype(np.int16).tobytes()
PIPECAT = {"per_frame_p50_us": {1: 42, 3: 80, 10: 204}, "cpu_pct_per_session": 2.9, "rss_mb_per_session": 11.0,
           "falls_behind_at": 45, "interrupt_ms": 267}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# ----------------------------------------------------------------- 1. per frame


class Stamp(Node):
    """Sink: records when each frame arrived."""

    def __init__(self) -> None:
        super().__init__(name="stamp")
        self.t = 0.0
        self.count = 0

    async def process(self, frame: Frame, direction: int) -> None:
        self.t = time.perf_counter()
        self.count += 1


async def per_frame(n_nodes: int, frames: int) -> dict[str, float]:
    sink = Stamp()
    session = Session([*[Node(name=f"pass{i}") for i in range(n_nodes)], sink])
    task = asyncio.create_task(session.run())
    await session.started.wait()
    latencies = []
    for i in range(frames):
        frame = InputAudioFrame(pcm=PCM, sample_rate=RATE, pts=i * 0.02)
        t0 = time.perf_counter()
        await session.push(frame)
        latencies.append((sink.t - t0) * 1e6)
    gc.collect()
    began, sent = time.perf_counter(), 0
    while time.perf_counter() - began < 1.0:
        for _ in range(100):
            await session.push(InputAudioFrame(pcm=PCM, sample_rate=RATE))
        sent += 100
    fps = sent / (time.perf_counter() - began)
    await session.cancel()
    await task
    lat = latencies[len(latencies) // 10 :]  # drop warm-up
    return {"p50_us": round(pct(lat, 50), 2), "p99_us": round(pct(lat, 99), 2), "fps": round(fps)}


# ------------------------------------------------------------------ 2. sessions


class WebRtcVad(Node):
    """webrtcvad on every 20 ms frame (the cheap pre-gate of the real VAD)."""

    def __init__(self) -> None:
        super().__init__(name="webrtcvad")
        self.vad = webrtcvad.Vad(2)

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, InputAudioFrame):
            self.vad.is_speech(frame.pcm, frame.sample_rate)
        await self.emit(frame, direction)


class Lateness(Node):
    """Sink: how late each frame arrives against its real-time schedule."""

    def __init__(self, clock_start: list[float], late: list[float]) -> None:
        super().__init__(name="lateness")
        self.clock_start = clock_start
        self.late = late

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, InputAudioFrame):
            self.late.append(time.monotonic() - (self.clock_start[0] + frame.pts))


async def paced_source(session: Session, clock_start: list[float], duration: float, offset: float) -> None:
    await asyncio.sleep(offset)
    clock_start[0] = start = time.monotonic()
    for i in range(int(duration / 0.02)):
        await session.push(InputAudioFrame(pcm=PCM, sample_rate=RATE, pts=i * 0.02))
        delay = start + (i + 1) * 0.02 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def sessions(k: int, duration: float) -> dict[str, float]:
    proc = psutil.Process()
    gc.collect()
    rss0 = proc.memory_info().rss
    late: list[float] = []
    runs = []
    for _ in range(k):
        clock = [0.0]
        session = Session([WebRtcVad(), Node(), Lateness(clock, late)])
        runs.append((session, clock, asyncio.create_task(session.run())))
    for session, _, _ in runs:
        await session.started.wait()
    cpu0, wall0 = proc.cpu_times(), time.monotonic()
    sources = [asyncio.create_task(paced_source(s, c, duration, (i % 50) * 0.0004)) for i, (s, c, _) in enumerate(runs)]
    await asyncio.gather(*sources)
    cpu1, wall1 = proc.cpu_times(), time.monotonic()
    rss1 = proc.memory_info().rss  # sessions alive and warm, before teardown
    for session, _, task in runs:
        await session.cancel()
        await task
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (wall1 - wall0) * 100
    steady = late[len(late) // 5 :]
    return {"k": k, "cpu_pct": round(cpu, 1), "cpu_pct_per_session": round(cpu / k, 3),
            "rss_mb": round((rss1 - rss0) / 1e6, 2), "rss_mb_per_session": round((rss1 - rss0) / 1e6 / k, 3),
            "late_p99_ms": round(pct(steady, 99) * 1000, 2)}


# ----------------------------------------------------------------- 3. interrupt


class TimedOutput(RecordingOutput):
    """Records when the interrupt reached the speaker."""

    interrupted_at = 0.0

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, InterruptFrame):
            self.interrupted_at = time.monotonic()
        await super().process(frame, direction)


async def interrupt_once() -> float:
    out = TimedOutput(max_buffer_s=3.5)
    session = Session([Node(), Node(), out], output_sample_rate=RATE)
    task = asyncio.create_task(session.run())
    await session.started.wait()
    for i in range(150):  # 3 s of bot audio, queued behind the real-time speaker
        await session.push(OutputAudioFrame(pcm=PCM, sample_rate=RATE, text=f"w{i} "))
    await asyncio.sleep(0.2 + np.random.uniform(0, 0.02))
    t_int = time.monotonic()
    await session.push(InterruptFrame())
    await asyncio.sleep(0.1)
    after = [c.t for c in out.played if c.t >= t_int]
    end = max([out.interrupted_at, *after])
    await session.cancel()
    await task
    return (end - t_int) * 1000


async def main(args: argparse.Namespace) -> dict:
    result: dict = {"per_frame": {}, "sessions": [], "interrupt_ms": {}}
    n = 2000 if args.quick else 10000
    for nodes in (1, 3, 10):
        result["per_frame"][str(nodes)] = await per_frame(nodes, n)
    duration = 2.0 if args.quick else 5.0
    ks = [1, 10, 50] if args.quick else [1, 10, 50, 100, 200]
    for k in ks:
        result["sessions"].append(await sessions(k, duration))
    if not args.quick:
        k = 200
        while result["sessions"][-1]["late_p99_ms"] <= 20 and k < 1600:
            k *= 2
            result["sessions"].append(await sessions(k, duration))
    fell = [row["k"] for row in result["sessions"] if row["late_p99_ms"] > 20]
    result["falls_behind_at"] = fell[0] if fell else None
    trials = [await interrupt_once() for _ in range(5 if args.quick else 10)]
    result["interrupt_ms"] = {"p50": round(statistics.median(trials), 3), "max": round(max(trials), 3)}
    return result


def report(result: dict) -> None:
    print("per-frame latency through N pass-through nodes (20 ms 16 kHz frames)")
    print(f"{'nodes':>6} {'p50 µs':>9} {'p99 µs':>9} {'frames/s':>10} {'pipecat p50':>12} {'ratio':>7}")
    for nodes, row in result["per_frame"].items():
        ref = PIPECAT["per_frame_p50_us"][int(nodes)]
        print(f"{nodes:>6} {row['p50_us']:>9.1f} {row['p99_us']:>9.1f} {row['fps']:>10} {ref:>12} {row['p50_us'] / ref:>7.3f}")
    print("\nsessions in one process: paced source → webrtcvad → pass → sink")
    print(f"{'K':>6} {'CPU %':>8} {'CPU %/sess':>11} {'RSS MB':>8} {'MB/sess':>8} {'late p99 ms':>12}")
    for row in result["sessions"]:
        print(f"{row['k']:>6} {row['cpu_pct']:>8} {row['cpu_pct_per_session']:>11} {row['rss_mb']:>8} "
              f"{row['rss_mb_per_session']:>8} {row['late_p99_ms']:>12}")
    print(f"falls behind real time at K = {result['falls_behind_at'] or '> max tested'} (pipecat: {PIPECAT['falls_behind_at']})")
    ir = result["interrupt_ms"]
    print(f"\ninterrupt → no more bot audio at the sink: p50 {ir['p50']} ms, max {ir['max']} ms "
          f"(3 s queued; pipecat end-to-end barge-in {PIPECAT['interrupt_ms']} ms, of which 3-5 ms framework)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--quick", action="store_true", help="shorter run (CI smoke)")
    args = parser.parse_args()
    result = asyncio.run(main(args))
    report(result)
    if args.json:
        print(json.dumps(result))
