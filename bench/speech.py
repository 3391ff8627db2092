"""Local speech costs on this machine: VAD per window, STT per utterance, piper time to first audio.

    python bench/speech.py [--json] [--repeats N]

All audio is piper speech (synthetic), so STT accuracy here is optimistic;
the timings are what matter. With ``--json`` the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

import numpy as np
import soxr

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent import Session  # noqa: E402
from agent.frames import LLMTextFrame, OutputAudioFrame  # noqa: E402
from agent.vad import SpeechDetector, VADParams  # noqa: E402
from agent.vad.webrtc_gate import WebRTCGate  # noqa: E402
from stt.models import load_model  # noqa: E402
from stt.whisper import transcribe  # noqa: E402
from tts.piper import PiperTTSNode, load_voice, synthesize_blocking  # noqa: E402

RATE = 16000
UTTERANCES = [
    "Hello, I would like to book an appointment for next Tuesday, please.",
    "Can you tell me what time the clinic opens on Saturday?",
    "Yes.",
    "I need to cancel my visit. Something came up at work.",
    "My date of birth is January third, nineteen eighty five.",
]
FIRST_CLAUSE = "Sure, let me check that for you."


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


def speech_16k(voice, text: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    native = synthesize_blocking(voice, text, volume=0.5)
    return np.asarray(soxr.resample(native, voice.config.sample_rate, RATE), dtype=np.int16)


def vad_cost(stream: np.ndarray, gate: bool, repeats: int) -> tuple[float, float]:
    """Median µs per 32 ms window over ``repeats`` passes, and the share of windows gated."""
    costs, gated = [], 0.0
    for _ in range(repeats):
        detector = SpeechDetector(RATE, VADParams(use_gate=gate))
        started = time.perf_counter()
        for i in range(0, len(stream), 320):
            detector.process(stream[i : i + 320])
        costs.append((time.perf_counter() - started) / detector.windows_total * 1e6)
        gated = detector.windows_gated / detector.windows_total
    return statistics.median(costs), gated


def gate_cost(stream: np.ndarray) -> float:
    gate = WebRTCGate(RATE)
    windows = [stream[i : i + 512] for i in range(0, len(stream) - 511, 512)]
    started = time.perf_counter()
    for window in windows:
        gate.might_be_speech(window)
    return (time.perf_counter() - started) / len(windows) * 1e6


async def node_ttfa(repeats: int) -> list[float]:
    """Time from the first clause's delta entering PiperTTSNode to its first 20 ms frame leaving."""
    node = PiperTTSNode(sample_rate=8000)
    session = Session([node], output_sample_rate=8000)
    first_frame = asyncio.Event()
    session.subscribe(lambda f, d: first_frame.set() if isinstance(f, OutputAudioFrame) else None)
    running = asyncio.create_task(session.run())
    await session.started.wait()
    results = []
    for turn in range(1, repeats + 1):
        first_frame.clear()
        started = time.perf_counter()
        await session.push(LLMTextFrame(text=FIRST_CLAUSE, turn_id=turn))
        await first_frame.wait()
        results.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.3)  # let the clause finish so turns do not overlap
    await session.end()
    await running
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    report: dict[str, object] = {}

    voice, report["piper_load_s"] = timed(load_voice)
    model, report["whisper_load_s"] = timed(load_model)
    clips = [speech_16k(voice, text) for text in UTTERANCES]

    # ---- VAD: a call-like stream (1.5 s silence around each utterance), pure silence, noise.
    gap = np.zeros(int(1.5 * RATE), dtype=np.int16)
    call_stream = np.concatenate([part for clip in clips for part in (gap, clip)] + [gap])
    silence = np.zeros(10 * RATE, dtype=np.int16)
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(10 * RATE) * 32768 * 10 ** (-35 / 20)).astype(np.int16)
    vad: dict[str, dict[str, float]] = {}
    for name, stream in (("call", call_stream), ("silence", silence), ("noise_-35dBFS", noise)):
        silero_us, _ = vad_cost(stream, gate=False, repeats=args.repeats)
        gated_us, share = vad_cost(stream, gate=True, repeats=args.repeats)
        vad[name] = {"silero_us": round(silero_us, 1), "gated_us": round(gated_us, 1), "gated_share": round(share, 3)}
    report["vad_us_per_32ms_window"] = vad
    report["webrtc_gate_us_per_window"] = round(gate_cost(call_stream), 2)

    # ---- STT: tiny.en int8, beam 1, no timestamps.
    transcribe(model, clips[0])  # warm-up
    stt_ms = []
    for clip in clips:
        for _ in range(max(1, args.repeats // 2)):
            _, seconds = timed(transcribe, model, clip)
            stt_ms.append(seconds * 1000)
    report["stt_ms_per_utterance"] = {
        "median": round(statistics.median(stt_ms), 1),
        "max": round(max(stt_ms), 1),
        "median_audio_s": round(statistics.median(len(c) / RATE for c in clips), 2),
    }

    # ---- Piper: raw synthesis of a first clause, and first frame out of the node.
    synthesize_blocking(voice, FIRST_CLAUSE)  # warm-up
    raw = [timed(synthesize_blocking, voice, FIRST_CLAUSE)[1] * 1000 for _ in range(args.repeats)]
    node = asyncio.run(node_ttfa(args.repeats))
    report["piper_ttfa_ms"] = {
        "synthesis_median": round(statistics.median(raw), 1),
        "node_first_frame_median": round(statistics.median(node), 1),
        "node_first_frame_max": round(max(node), 1),
        "clause": FIRST_CLAUSE,
    }

    print(f"models: piper load {report['piper_load_s']:.2f} s, whisper tiny.en load {report['whisper_load_s']:.2f} s")
    print("VAD µs per 32 ms window (Silero alone vs behind the webrtcvad gate):")
    for name, row in vad.items():
        print(f"  {name:14s} silero {row['silero_us']:7.1f}   gated {row['gated_us']:7.1f}   ({row['gated_share']:.0%} of windows skipped)")
    print(f"  webrtcvad gate alone: {report['webrtc_gate_us_per_window']} µs per window")
    stt = report["stt_ms_per_utterance"]
    print(f"STT tiny.en int8 beam 1: median {stt['median']} ms per utterance (max {stt['max']}), median clip {stt['median_audio_s']} s")
    ttfa = report["piper_ttfa_ms"]
    print(f"piper '{FIRST_CLAUSE}': synthesis {ttfa['synthesis_median']} ms, first 20 ms frame out of the node {ttfa['node_first_frame_median']} ms (max {ttfa['node_first_frame_max']})")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
