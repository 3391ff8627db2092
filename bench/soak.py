"""Soak: many short SIP calls through the local bot, one after another and then all at once.

    python bench/soak.py --quick                      # 10 sequential + 8 concurrent (~1 min; make test)
    python bench/soak.py --sequential 1000 --concurrent 100 --concurrent-minutes 10 --json   # the full soak

The server is this process: the real SIP transport and CallManager, and the
clinic bot's listening and speaking nodes with their models in-process
(Silero VAD, tiny.en Whisper, the turn-taker, the rule-based desk, piper).
The callers are sipp: each call says "What are your opening hours?" and
listens for a couple of seconds, then hangs up; the bot must have started to
answer by then.

The server admits calls as a ``voxwire serve`` worker does (CPU budget, STT
queue wait); a refused caller gets a SIP 503, which the sipp scenario accepts.

Reported: calls placed and failed (sipp), calls refused by reason, crashed sessions (reason ``error``
or anything that reached the event loop's exception handler or an ERROR log
line), RSS slope in MB per 1 000 calls after warm-up, live asyncio tasks,
threads and file descriptors at idle before, 1 s and 30 s after, and turn latency
(user's end of speech to the bot's first audio out) p50/p99 for the first
and the last minute of calls (first and last third on runs under 3 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.calls import CallInfo, CallManager  # noqa: E402
from agent.frames import EventFrame, Frame  # noqa: E402
from agent.node import Node  # noqa: E402
from agent.serving.admission import attach_admission  # noqa: E402
from agent.session import Session, SessionResult  # noqa: E402
from tests.telephony.helpers import run_sipp, speech_8k, write_rtp_pcap  # noqa: E402
from transports.sip.transport import SipServer  # noqa: E402

QUESTION = "What are your opening hours?"
LISTEN_MS = 2200
#: Seconds after the last call before the idle counts are taken for the last time.
IDLE_SETTLE_S = 30.0

_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="soak">
  <send retrans="500"><![CDATA[
      INVITE sip:bot@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: soak <sip:soak@[local_ip]:[local_port]>;tag=[pid]soak[call_number]
      To: <sip:bot@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:soak@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=soak 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[local_ip_type] [local_ip]
      t=0 0
      m=audio [auto_media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="503" optional="true" next="1"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[
      ACK sip:bot@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: soak <sip:soak@[local_ip]:[local_port]>;tag=[pid]soak[call_number]
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
      From: soak <sip:soak@[local_ip]:[local_port]>;tag=[pid]soak[call_number]
      To: <sip:bot@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <recv response="200" crlf="true" next="2"/>
  <label id="1"/>
  <send><![CDATA[
      ACK sip:bot@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: soak <sip:soak@[local_ip]:[local_port]>;tag=[pid]soak[call_number]
      To: <sip:bot@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <label id="2"/>
</scenario>
"""


def soak_bot(info: CallInfo) -> list[Node]:
    """The clinic bot without its greeting (a soak call asks at once) and without the echo canceller."""
    from agent.clinic import ClinicDesk, listening_nodes, speaking_node
    from agent.llm import LLMNode

    return [*listening_nodes(echo=False), LLMNode(ClinicDesk()), speaking_node()]


@dataclass(frozen=True, slots=True)
class Ended:
    """One ended call, kept small: the soak measures the server's memory, not its own."""

    at: float
    reason: str
    error: str | None
    latency_ms: float | None  # the first turn's end of speech -> first bot audio


@dataclass
class Tally:
    """What the server saw: one row per ended call, refusals, and escapes to the loop and the log."""

    ended: list[Ended] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)
    loop_errors: list[str] = field(default_factory=list)
    error_logs: list[str] = field(default_factory=list)

    def hook(self, session: Session, info: CallInfo) -> None:
        def observe(frame: Frame, direction: int) -> None:
            if isinstance(frame, EventFrame) and frame.kind == "call_ended" and session.result is not None:
                self.ended.append(_ended(session.result))
        session.subscribe(observe)

    def refusal(self, transport: str, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


def _ended(result: SessionResult) -> Ended:
    latencies = [turn["eos_to_first_audio_ms"] for turn in result.turns if "eos_to_first_audio_ms" in turn]
    return Ended(time.monotonic(), result.reason, result.error,
                 float(latencies[0]) if latencies and latencies[0] is not None else None)


class _ErrorLog(logging.Handler):
    def __init__(self, tally: Tally) -> None:
        super().__init__(logging.ERROR)
        self.tally = tally

    def emit(self, record: logging.LogRecord) -> None:
        self.tally.error_logs.append(f"{record.name}: {record.getMessage()}"[:300])


def snapshot() -> dict[str, float]:
    process = psutil.Process()
    gc.collect()
    return {"rss_mb": process.memory_info().rss / 2**20, "tasks": len(asyncio.all_tasks()),
            "threads": threading.active_count(), "fds": process.num_fds()}


async def _sipp(server: SipServer, scenario: Path, calls: int, concurrent: int, rate: float, workdir: Path,
                timeout: float) -> tuple[int, str]:
    args = [f"127.0.0.1:{server.port}", "-sf", str(scenario), "-i", "127.0.0.1", "-mi", "127.0.0.1",
            "-p", "0", "-m", str(calls), "-l", str(concurrent), "-r", str(rate), "-nostdin",
            "-timeout", str(int(timeout)), "-timeout_error", "-recv_timeout", "20000", "-max_recv_loops", "10000"]
    return await run_sipp(args, timeout=timeout + 30, cwd=workdir)


def _failed_calls(output: str) -> int | None:
    for line in output.splitlines():
        if line.strip().startswith("Failed call"):
            parts = line.split("|")
            try:
                return int(parts[-2].split()[0]) if len(parts) > 2 else None
            except (ValueError, IndexError):
                return None
    return None


def _latencies(rows: list[Ended]) -> list[float]:
    return [row.latency_ms for row in rows if row.latency_ms is not None]


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None}
    return {"n": len(values), "p50_ms": round(float(np.percentile(values, 50)), 1),
            "p99_ms": round(float(np.percentile(values, 99)), 1)}


async def soak(sequential: int, concurrent: int, concurrent_s: float | None = None,
               warmup: int = 1, settle_s: float = IDLE_SETTLE_S) -> dict[str, Any]:
    """Run the soak in this event loop; returns the figures (see the module docstring)."""
    tally = Tally()
    handler = _ErrorLog(tally)
    logging.getLogger().addHandler(handler)
    loop = asyncio.get_running_loop()
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _l, ctx: tally.loop_errors.append(str(ctx.get("message"))[:300]))
    manager = CallManager(soak_bot)
    budget = await attach_admission(manager)  # what `voxwire serve` gives one worker
    manager.on_session(tally.hook)
    manager.on_refusal(tally.refusal)
    server = SipServer(manager, host="127.0.0.1", port=0)
    await server.start()
    samples: list[tuple[float, int, float]] = []  # (t, calls ended, RSS MB)
    stop = asyncio.Event()

    async def sampler() -> None:
        process = psutil.Process()
        while not stop.is_set():
            samples.append((time.monotonic(), len(tally.ended), process.memory_info().rss / 2**20))
            await asyncio.sleep(0.5)

    report: dict[str, Any] = {"sequential": sequential, "concurrent": concurrent}
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        workdir = Path(tmp)
        speech = speech_8k(QUESTION)
        pcap = workdir / "question.pcap"
        write_rtp_pcap(pcap, speech)
        call_ms = len(speech) * 1000 // 8000 + LISTEN_MS
        scenario = workdir / "soak.xml"
        scenario.write_text(_SCENARIO.format(pcap=pcap, pause_ms=call_ms))
        try:
            code, out = await _sipp(server, scenario, warmup, 1, 10, workdir, 60)
            report["warmup_ok"] = code == 0
            await asyncio.sleep(0.5)
            idle_before = snapshot()
            sampling = asyncio.create_task(sampler())
            started = time.monotonic()
            code, out = await _sipp(server, scenario, sequential, 1, 10, workdir, 30 + sequential * 15)
            report["sequential_phase"] = {"sipp_exit": code, "failed_calls": _failed_calls(out),
                                          "seconds": round(time.monotonic() - started, 1)}
            seq_ended = len(tally.ended)
            seq_done_at = time.monotonic()
            if concurrent:
                per_call_s = call_ms / 1000 + 0.5
                total = concurrent if not concurrent_s else max(concurrent, int(concurrent * concurrent_s / per_call_s))
                phase_started = time.monotonic()
                code, out = await _sipp(server, scenario, total, concurrent, max(1.0, concurrent / per_call_s),
                                        workdir, 60 + (concurrent_s or 0) * 2 + total)
                report["concurrent_phase"] = {"calls": total, "sipp_exit": code, "failed_calls": _failed_calls(out),
                                              "seconds": round(time.monotonic() - phase_started, 1)}
            stop.set()
            await sampling
            await asyncio.sleep(1.0)
            idle_after_1s = snapshot()
            await asyncio.sleep(max(0.0, settle_s - 1.0))  # late teardown, sockets closing
            idle_after = snapshot()
        finally:
            await server.stop()
            await manager.close()
            if budget is not None:
                await budget.close()
            loop.set_exception_handler(previous_handler)
            logging.getLogger().removeHandler(handler)

    rows = tally.ended[warmup:]
    sequential_rows, concurrent_rows = tally.ended[warmup:seq_ended], tally.ended[seq_ended:]
    crashed = [r for r in rows if r.reason == "error" or r.error]
    sequential_samples = [s for s in samples if s[0] <= seq_done_at]
    concurrent_samples = [s for s in samples if s[0] > seq_done_at]
    report.update({
        "calls_ended": len(rows),
        "sequential_calls_ended": len(sequential_rows),
        "crashed_sessions": len(crashed),
        "crash_reasons": sorted({f"{r.reason}: {r.error}" for r in crashed})[:10],
        "end_reasons": dict(sorted(_count(r.reason for r in rows).items())),
        "answered_calls": len(_latencies(rows)),
        "refused_calls": dict(sorted(tally.refused.items())),
        "loop_exceptions": tally.loop_errors[:10],
        "error_log_lines": tally.error_logs[:10],
        "error_log_count": len(tally.error_logs),
        # RSS growth per 1 000 calls, fitted after the first third of each phase (allocator warm-up).
        "rss_mb_per_1000_calls_sequential": _slope(sequential_samples),
        "rss_mb_per_1000_calls_concurrent": _slope(concurrent_samples),
        "rss_mb": [round(idle_before["rss_mb"], 1), round(idle_after["rss_mb"], 1)],
        "rss_samples": [(round(t - samples[0][0], 1), n, round(m, 1)) for t, n, m in samples[:: max(1, len(samples) // 40)]]
        if samples else [],
        # At idle: before the calls, 1 s after the last one, and IDLE_SETTLE_S after it.
        "tasks_idle": [idle_before["tasks"], idle_after_1s["tasks"], idle_after["tasks"]],
        "threads_idle": [idle_before["threads"], idle_after_1s["threads"], idle_after["threads"]],
        "fds_idle": [idle_before["fds"], idle_after_1s["fds"], idle_after["fds"]],
        "turn_latency_sequential": _first_last(sequential_rows),
        "turn_latency_concurrent": _first_last(concurrent_rows),
        "cpu_count": os.cpu_count(),
    })
    return report


def _slope(samples: list[tuple[float, int, float]]) -> float | None:
    """MB per 1 000 calls over the last two thirds of a phase's (time, calls ended, RSS) samples."""
    tail = samples[len(samples) // 3 :]
    calls = np.array([s[1] for s in tail], float)
    if len(set(calls.tolist())) < 3:
        return None
    return round(float(np.polyfit(calls, np.array([s[2] for s in tail]), 1)[0]) * 1000, 1)


def _first_last(rows: list[Ended]) -> dict[str, Any]:
    """Turn latency of the first and last minute of a phase (thirds of it when shorter than 3 min)."""
    if not rows:
        return {}
    if rows[-1].at - rows[0].at > 180:
        window = "first/last 60 s"
        first = [r for r in rows if r.at - rows[0].at <= 60]
        last = [r for r in rows if rows[-1].at - r.at <= 60]
    else:
        window, third = "first/last third of calls", max(1, len(rows) // 3)
        first, last = rows[:third], rows[-third:]
    return {"window": window, "all": _percentiles(_latencies(rows)), "first": _percentiles(_latencies(first)),
            "last": _percentiles(_latencies(last))}


def _count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 sequential + 8 concurrent calls")
    parser.add_argument("--sequential", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, default=100)
    parser.add_argument("--concurrent-minutes", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.quick:
        report = asyncio.run(soak(10, 8))
    else:
        report = asyncio.run(soak(args.sequential, args.concurrent, args.concurrent_minutes * 60))
    print(json.dumps(report, indent=None if args.json else 1))
    return 0 if report["crashed_sessions"] == 0 and not report["loop_exceptions"] else 1


if __name__ == "__main__":
    sys.exit(main())
