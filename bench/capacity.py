"""Capacity plan: worker processes, pods and GPUs for N concurrent calls.

    python bench/capacity.py [--overhead overhead.json] [--speech speech.json]
                             [--telephony telephony.json] [--calls 10000] [--json]

Per-call costs come from this repository's benchmarks, measured on this machine:
``bench/overhead.py --json`` (graph CPU and RSS per session, where one event
loop falls behind), optionally ``bench/speech.py --json`` (Silero VAD per
window, faster-whisper STT per utterance) and ``bench/telephony.py --json``
(whole SIP/RTP calls per core). Without ``--overhead`` the quick overhead
benchmark is run first. GPU throughput cannot be measured here (no GPU); it
comes from published figures, named in ``GpuFigures`` and overridable.

The simulation places N calls, each a loop of user turn → end-of-turn wait →
STT (a CPU burst in the worker) → LLM request → TTS request → bot speech →
pause, with random lengths and phases, on a 100 ms timeline. Demand at the
99th percentile of that timeline sizes each pool, with the admission headroom
the workers use.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


@dataclass
class CallCosts:
    """What one live call costs a worker, as measured (``sources`` says where from)."""

    session_cores: float                 # between turns: transport, graph, VAD
    session_rss_mb: float
    stt_core_s_per_audio_s: float        # STT burst at each end of turn (one thread)
    sessions_per_loop: int               # calls one event loop carries in real time, with headroom
    sources: dict[str, str] = field(default_factory=dict)


@dataclass
class GpuFigures:
    """Published serving figures (not measured here: no GPU on this machine)."""

    # Voxtral-4B-TTS on vLLM-Omni, H200, concurrency 16: 879 chars/s per GPU at 331 ms
    # time to first audio (model card, see shared/docs/voxtral-protocols.md §1.7).
    tts_streams_per_gpu: int = 16
    tts_chars_per_s_per_gpu: float = 879.0
    tts_ttfa_s: float = 0.331
    # An 8B instruct model on vLLM, one H100: 64 concurrent streams at ~45 tokens/s
    # each with prefix caching (a conservative reading of vLLM's published benchmarks).
    llm_streams_per_gpu: int = 64
    llm_tokens_per_s_per_stream: float = 45.0
    llm_ttft_s: float = 0.2


@dataclass
class Conversation:
    """The shape of a call (medians; lengths are log-normal around them)."""

    user_turn_s: float = 2.5
    end_of_turn_wait_s: float = 0.6      # VAD hangover + tail, measured budget in offline-stack.md
    answer_chars: float = 90.0
    answer_tokens: float = 30.0
    speaking_chars_per_s: float = 15.0   # 150 words per minute
    pause_s: float = 0.8
    events_per_turn: float = 9.0         # bus events besides one per heard word


@dataclass
class Fleet:
    calls: int = 10_000
    cores_per_worker: float = 0.85       # the admission budget of one worker process (one core)
    workers_per_pod: int = 4
    worker_base_rss_mb: float = 450.0    # models + runtime per worker process
    broker_msgs_per_s: float = 4000.0    # QoS 1, measured in real-peers.md §4 (pub+sub+broker on 2 cores)


def _last_json_line(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def load_costs(overhead: dict, speech: dict | None, telephony: dict | None) -> CallCosts:
    """Per-call worker costs from the benchmarks' JSON."""
    rows = sorted(overhead["sessions"], key=lambda r: r["k"])
    big = [r for r in rows if r["k"] >= 50] or rows
    graph_cores = max(r["cpu_pct_per_session"] for r in big) / 100.0  # the dearest of the large runs
    measured_rss = max(r["rss_mb_per_session"] for r in big)
    rss = max(measured_rss, 0.05)  # buffers of a real call (jitter, playout, VAD) that the bench does not hold
    falls = overhead.get("falls_behind_at") or 2 * max(r["k"] for r in rows)
    behind = overhead.get("falls_behind_at") or f"> {falls // 2}"
    sources = {"graph": f"bench/overhead.py: {graph_cores * 100:.3f} % of a core, {measured_rss:.3f} MB per session "
                        f"({rss:.2f} MB counted)",
               "loop": f"bench/overhead.py: one loop falls behind at {behind} sessions"}
    vad_cores = 0.004
    sources["vad"] = "assumed 0.4 % of a core for Silero (pipecat's figure on this machine, anchors.md)"
    stt = 0.11
    sources["stt"] = "assumed 0.11 core-s per audio second (offline-stack.md: 336 ms for a 3 s clip, 1 thread)"
    if speech:
        vad = speech["vad_us_per_32ms_window"]["call"]
        vad_cores = vad["gated_us"] / 32000.0
        sources["vad"] = f"bench/speech.py: Silero behind the webrtcvad gate {vad['gated_us']} µs per 32 ms window"
        row = speech["stt_ms_per_utterance"]
        stt = row["median"] / 1000.0 / row["median_audio_s"]
        sources["stt"] = f"bench/speech.py: tiny.en {row['median']} ms for a {row['median_audio_s']} s utterance"
    session_cores = graph_cores + vad_cores
    if telephony:
        healthy = [r for r in telephony["load"] if r["input_frames_delivered"] >= 0.99]
        if healthy:
            row = max(healthy, key=lambda r: r["calls"])
            session_cores = max(session_cores, row["server_cores_used"] / row["calls"])
            sources["telephony"] = (f"bench/telephony.py: {row['calls_per_core']} SIP calls per core "
                                    f"(RTP, G.711, jitter buffer, VAD) at {row['calls']} calls")
    return CallCosts(session_cores=session_cores, session_rss_mb=rss, stt_core_s_per_audio_s=stt,
                     sessions_per_loop=max(1, int(falls * 0.5)), sources=sources)


def measure_models(utterances: int = 3) -> dict[str, float]:
    """This machine's worker baseline: RSS with the models loaded, STT CPU per audio second.

    CPU time (not wall time) of the transcriptions is counted, so a busy
    shared machine inflates the figure less; piper makes the test speech.
    """
    import time

    import psutil
    import soxr

    sys.path.insert(0, str(HERE.parent))
    from agent.vad import SpeechDetector
    from stt.models import load_model
    from stt.whisper import transcribe
    from tts.piper import load_voice, synthesize_blocking

    process = psutil.Process()
    voice = load_voice()
    texts = ["Hello, I would like to book an appointment for next Tuesday, please.",
             "Can you tell me what time the clinic opens on Saturday?",
             "I need to cancel my visit because something came up at work."][:utterances]
    clips = [np.asarray(soxr.resample(synthesize_blocking(voice, t, volume=0.5), voice.config.sample_rate, 16000),
                        dtype=np.int16) for t in texts]
    del voice
    import gc

    gc.collect()
    before = process.memory_info().rss
    model = load_model()
    SpeechDetector(16000).process(clips[0][:512])
    transcribe(model, clips[0])  # warm-up
    rss = process.memory_info().rss
    cpu0, audio_s = time.process_time(), 0.0
    for clip in clips:
        transcribe(model, clip)
        audio_s += len(clip) / 16000
    return {"stt_core_s_per_audio_s": round((time.process_time() - cpu0) / audio_s, 4),
            "models_rss_mb": round((rss - before) / 1e6, 1), "process_rss_mb": round(rss / 1e6, 1)}


def simulate(costs: CallCosts, gpu: GpuFigures, talk: Conversation, calls: int,
             seconds: float = 300.0, step_s: float = 0.1, seed: int = 7) -> dict[str, np.ndarray]:
    """Demand over time: STT cores, TTS and LLM streams in flight, bus messages."""
    rng = np.random.default_rng(seed)
    n = int(seconds / step_s)
    demand = {name: np.zeros(n + 1) for name in ("stt_cores", "tts_streams", "llm_streams", "bus_msgs")}

    def lognormal(median: float, size: int, sigma: float = 0.5) -> np.ndarray:
        return median * rng.lognormal(0.0, sigma, size)

    def add(name: str, start: np.ndarray, end: np.ndarray, amount: float | np.ndarray = 1.0) -> None:
        a = np.clip((start / step_s).astype(int), 0, n)
        b = np.clip((end / step_s).astype(int), 0, n)
        keep = b > a
        values = np.broadcast_to(amount, start.shape)[keep]
        np.add.at(demand[name], a[keep], values)
        np.add.at(demand[name], b[keep], -values)

    cycle = talk.user_turn_s + talk.end_of_turn_wait_s + talk.answer_chars / talk.speaking_chars_per_s + talk.pause_s
    t = rng.uniform(-cycle, 0.0, calls)  # calls are at random points of their conversation
    tts_rate = gpu.tts_chars_per_s_per_gpu / gpu.tts_streams_per_gpu
    while (t < seconds).any():
        user = lognormal(talk.user_turn_s, calls)
        stt_start = t + user + talk.end_of_turn_wait_s
        stt_end = stt_start + costs.stt_core_s_per_audio_s * user  # one thread, so wall ≈ core-seconds
        add("stt_cores", stt_start, stt_end)
        tokens = lognormal(talk.answer_tokens, calls, 0.4)
        add("llm_streams", stt_end, stt_end + gpu.llm_ttft_s + tokens / gpu.llm_tokens_per_s_per_stream)
        chars = lognormal(talk.answer_chars, calls, 0.4)
        tts_start = stt_end + gpu.llm_ttft_s
        add("tts_streams", tts_start, tts_start + chars / tts_rate)
        speech_start = tts_start + gpu.tts_ttfa_s
        speech_end = speech_start + chars / talk.speaking_chars_per_s
        words = chars / 5.5
        add("bus_msgs", stt_start, speech_end, (talk.events_per_turn + words) / (speech_end - stt_start))
        t = speech_end + lognormal(talk.pause_s, calls, 0.3)
    warm = int(cycle * 2 / step_s)  # skip the start, where phases are not yet mixed
    return {name: np.cumsum(values)[warm:n] for name, values in demand.items()}


def plan(costs: CallCosts, gpu: GpuFigures, talk: Conversation, fleet: Fleet, seconds: float = 300.0) -> dict:
    demand = simulate(costs, gpu, talk, fleet.calls, seconds)
    p99 = {name: float(np.percentile(values, 99)) for name, values in demand.items()}
    mean = {name: float(np.mean(values)) for name, values in demand.items()}
    steady_cores = fleet.calls * costs.session_cores
    cores = steady_cores + p99["stt_cores"]
    workers = max(math.ceil(cores / fleet.cores_per_worker), math.ceil(fleet.calls / costs.sessions_per_loop))
    pods = math.ceil(workers / fleet.workers_per_pod)
    # the same fleet if STT moved off the workers to GPU servers (its GPU count is not planned here)
    workers_no_stt = max(math.ceil(steady_cores / fleet.cores_per_worker),
                         math.ceil(fleet.calls / costs.sessions_per_loop))
    return {
        "calls": fleet.calls,
        "worker_cores_p99": round(cores, 1),
        "of_which_stt_p99": round(p99["stt_cores"], 1),
        "steady_cores": round(steady_cores, 1),
        "workers": workers,
        "calls_per_worker": math.ceil(fleet.calls / workers),
        "pods": pods,
        "workers_if_stt_on_gpu": workers_no_stt,
        "pod_shape": f"{fleet.workers_per_pod} workers / {fleet.workers_per_pod} cores",
        "worker_base_rss_mb": fleet.worker_base_rss_mb,
        "worker_memory_gb": round((workers * fleet.worker_base_rss_mb + fleet.calls * costs.session_rss_mb) / 1024, 1),
        "tts_streams_p99": round(p99["tts_streams"], 1),
        "tts_gpus": math.ceil(p99["tts_streams"] / gpu.tts_streams_per_gpu),
        "llm_streams_p99": round(p99["llm_streams"], 1),
        "llm_gpus": math.ceil(p99["llm_streams"] / gpu.llm_streams_per_gpu),
        "bus_msgs_per_s_mean": round(mean["bus_msgs"]),
        "bus_msgs_per_s_p99": round(p99["bus_msgs"]),
        "brokers": math.ceil(p99["bus_msgs"] / fleet.broker_msgs_per_s),
        "costs": asdict(costs),
        "gpu_figures": asdict(gpu),
        "conversation": asdict(talk),
    }


def table(result: dict) -> str:
    rows = [
        ("concurrent calls", f"{result['calls']:,}"),
        ("worker CPU at p99 (of which STT bursts)",
         f"{result['worker_cores_p99']} cores ({result['of_which_stt_p99']})"),
        ("worker processes (one core each, 85 % budget)",
         f"{result['workers']} (≈ {result['calls_per_worker']} calls each)"),
        ("worker pods", f"{result['pods']} × {result['pod_shape']}"),
        ("worker memory", f"{result['worker_memory_gb']} GB"),
        ("worker processes if STT ran on GPU servers instead", f"{result['workers_if_stt_on_gpu']}"),
        ("Voxtral TTS GPUs (p99 streams)", f"{result['tts_gpus']} ({result['tts_streams_p99']} streams)"),
        ("LLM GPUs (p99 streams)", f"{result['llm_gpus']} ({result['llm_streams_p99']} streams)"),
        ("MQTT bus messages/s (mean / p99)", f"{result['bus_msgs_per_s_mean']:,} / {result['bus_msgs_per_s_p99']:,}"),
        ("MQTT brokers (or broker cores)", f"{result['brokers']}"),
    ]
    lines = ["| | |", "|---|---|"] + [f"| {name} | {value} |" for name, value in rows]
    lines.append("")
    lines += [f"- {key}: {text}" for key, text in result["costs"]["sources"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--overhead", type=Path, help="JSON from bench/overhead.py --json (last line)")
    parser.add_argument("--speech", type=Path, help="JSON from bench/speech.py --json (last line)")
    parser.add_argument("--telephony", type=Path, help="JSON file from bench/telephony.py --json FILE")
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=300.0, help="simulated time")
    parser.add_argument("--workers-per-pod", type=int, default=4)
    parser.add_argument("--tts-streams-per-gpu", type=int, default=GpuFigures.tts_streams_per_gpu)
    parser.add_argument("--llm-streams-per-gpu", type=int, default=GpuFigures.llm_streams_per_gpu)
    parser.add_argument("--measure-models", action="store_true",
                        help="load whisper + Silero here to measure STT CPU and worker RSS")
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object last")
    args = parser.parse_args(argv)
    if args.overhead:
        overhead = _last_json_line(args.overhead.read_text())
    else:
        run = subprocess.run([sys.executable, str(HERE / "overhead.py"), "--quick", "--json"],
                             capture_output=True, text=True, check=True, cwd=HERE.parent)
        overhead = _last_json_line(run.stdout)
    speech = _last_json_line(args.speech.read_text()) if args.speech else None
    telephony = json.loads(args.telephony.read_text()) if args.telephony else None
    costs = load_costs(overhead, speech, telephony)
    fleet = Fleet(calls=args.calls, workers_per_pod=args.workers_per_pod)
    if args.measure_models:
        measured = measure_models()
        costs.stt_core_s_per_audio_s = measured["stt_core_s_per_audio_s"]
        costs.sources["stt"] = (f"measured here: faster-whisper tiny.en int8, {measured['stt_core_s_per_audio_s']} "
                                "CPU-seconds per second of speech (all threads)")
        fleet.worker_base_rss_mb = measured["process_rss_mb"] + 100  # + aiohttp, aiomqtt, transports
        costs.sources["rss"] = (f"measured here: a process with whisper tiny.en and Silero loaded is "
                                f"{measured['process_rss_mb']} MB (+100 MB allowed for servers)")
    gpu = GpuFigures(tts_streams_per_gpu=args.tts_streams_per_gpu, llm_streams_per_gpu=args.llm_streams_per_gpu)
    result = plan(costs, gpu, Conversation(), fleet, args.seconds)
    print(f"capacity plan for {args.calls:,} concurrent calls (cpu_count here: {os.cpu_count()})\n")
    print(table(result))
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
