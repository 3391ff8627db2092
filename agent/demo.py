"""``voxwire demo``: an offline phone call to the embedded clinic bot.

A scripted caller (speech synthesized locally, sent as 8 kHz μ-law like a
phone line, with a mid-sentence pause, a backchannel during an answer and a
real barge-in) talks to ``agent.clinic``. The demo prints the live transcript,
a per-turn latency table and the barge-ins, writes a stereo recording (caller
left, bot right) and a PNG timeline, the headline figures of the last
turn-taking bench (``bench/turns.py``), and with ``--json`` prints one JSON
object as its last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from agent.audio import resample, ulaw_decode, ulaw_encode
from agent.caller import ScriptedCaller, Step
from agent.frames import ErrorFrame, EventFrame, Frame, PlayoutProgressFrame, TranscriptionFrame
from agent.session import Session
from agent.timeline import activity, draw_timeline, place, write_stereo

RATE = 8000  # a phone line

SCRIPT: list[tuple[str, dict[str, Any]]] = [
    ("Hi, what are your opening hours?", {}),
    ("Mm-hmm.", {"during_bot_s": 1.6, "kind": "backchannel"}),
    ("I'd like to book an appointment for | next Tuesday, please.", {}),
    ("Actually, wait. Make it Wednesday instead.", {"during_bot_s": 1.2, "kind": "barge_in"}),
    ("Where are you located?", {"after_bot_s": 0.8}),
    ("Great, thank you. Goodbye.", {}),
]
PAUSE_S = 0.5  # the "|" in a line: a natural mid-sentence pause
BENCH_JSON = "out/bench/turns.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--out", default="out/demo", help="folder for the recording and the timeline")
    parser.add_argument("--bench", default=BENCH_JSON, metavar="PATH",
                        help="the turn-taking bench's JSON (python -m bench.turns) whose headline figures to print")
    parser.add_argument("--caller-audio", metavar="PATH",
                        help="a WAV file, or a folder of WAVs played in name order, as the caller's turns")


def phone_line(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resample to 8 kHz and pass through G.711 μ-law, as a real call would."""
    narrow = resample(samples.astype(np.int16), rate, RATE).astype(np.int16)
    return np.frombuffer(ulaw_decode(ulaw_encode(narrow)), dtype=np.int16)


def trim(samples: np.ndarray, threshold: int = 300) -> np.ndarray:
    loud = np.flatnonzero(np.abs(samples) > threshold)
    return samples[loud[0] : loud[-1] + 1] if len(loud) else samples


def scripted_steps() -> list[Step]:
    from tts.piper import load_voice, synthesize_blocking

    voice = load_voice()
    rate = voice.config.sample_rate
    steps = []
    for text, options in SCRIPT:
        parts = [trim(phone_line(synthesize_blocking(voice, part.strip(), volume=0.5), rate))
                 for part in text.split("|")]
        gap = np.zeros(int(PAUSE_S * RATE), dtype=np.int16)
        pcm = parts[0]
        for part in parts[1:]:
            pcm = np.concatenate([pcm, gap, part])
        steps.append(Step(text=text.replace(" |", ","), pcm=pcm, **options))
    return steps


def recorded_steps(path: str) -> list[Step]:
    import soundfile

    files = sorted(Path(path).glob("*.wav")) if os.path.isdir(path) else [Path(path)]
    if not files:
        raise SystemExit(f"no WAV files in {path}")
    steps = []
    for file in files:
        data, rate = soundfile.read(str(file), dtype="int16", always_2d=True)
        steps.append(Step(text=f"({file.name})", pcm=phone_line(data.mean(axis=1).astype(np.int16), rate)))
    return steps


def load_models() -> None:
    """Load every model once, with progress, before the call starts."""
    from agent.vad.silero import find_silero_model
    from stt.models import load_model, resolve_model
    from tts.piper import load_voice

    from stt.whisper import transcribe
    from tts.piper import synthesize_blocking

    def whisper() -> None:  # load, then one run: the first inference pays one-off costs
        transcribe(load_model(resolve_model(None)), np.zeros(16000, dtype=np.int16), language="en")

    def piper() -> None:
        synthesize_blocking(load_voice(), "Hello.")

    for label, load in (
        ("Silero VAD", find_silero_model),
        ("Whisper tiny.en (STT)", whisper),
        ("piper joe (TTS)", piper),
    ):
        began = time.monotonic()
        print(f"  loading {label} …", end="", flush=True, file=sys.stderr)
        load()
        print(f" {time.monotonic() - began:.2f} s", file=sys.stderr)


async def call(steps: list[Step]) -> dict[str, Any]:
    from agent.clinic import clinic_bot
    from agent.llm import LLMNode
    from agent.turns import TurnTaker
    from transports.local import RecordingOutput

    caller = ScriptedCaller(steps, sample_rate=RATE)
    bot = clinic_bot()
    speaker = RecordingOutput(sample_rate=RATE)
    session = Session([caller, *bot, speaker], input_sample_rate=RATE, output_sample_rate=RATE,
                      max_duration_s=180)
    llm = next(n for n in bot if isinstance(n, LLMNode))
    turn_taker = next(n for n in bot if isinstance(n, TurnTaker))

    def show(frame: Frame, direction: int) -> None:
        if isinstance(frame, TranscriptionFrame) and frame.final and frame.text:
            print(f"  caller: {frame.text}", file=sys.stderr)
        elif isinstance(frame, PlayoutProgressFrame) and frame.text_heard:
            pass
        elif isinstance(frame, EventFrame) and frame.kind == "barge_in":
            outcome = "resumed" if frame.data.get("resumed") else "interrupted"
            print(f"  (caller talked over the bot: {outcome})", file=sys.stderr)
        elif isinstance(frame, ErrorFrame):
            print(f"  error:  {frame.node}: {frame.message}", file=sys.stderr)

    session.subscribe(show)
    result = await session.run()
    return {"session": session, "result": result, "caller": caller, "speaker": speaker, "llm": llm,
            "turn_taker": turn_taker, "bot_text": llm.generated}


def bot_stop_after(played: list[float], onset: float) -> float | None:
    """When bot audio stopped after ``onset``: the first gap in the 20 ms chunk stream."""
    after = [t for t in played if t >= onset - 0.02]
    if not after:
        return None
    for previous, current in zip(after, after[1:]):
        if current - previous > 0.03:
            return previous + 0.02
    return after[-1] + 0.02


def analyse(run: dict[str, Any], out_dir: str) -> dict[str, Any]:
    caller, speaker, session = run["caller"], run["speaker"], run["session"]
    played = [c.t for c in speaker.played]
    marks = session.turns.turns
    messages = run["llm"].conversation.messages
    turns = []
    answered = {m.turn_id for m in messages if m.role == "user"}  # a reopened turn's id is replaced
    for spoken in caller.spoken:
        if spoken.step.kind != "turn":
            continue
        eos = spoken.end_t
        first_audio = next((t for t in played if t > eos), None)
        turn_id = min(  # turns the turn-taker handed over (a reopened turn's replacement ends nearest)
            (tid for tid, m in marks.items() if "user_speech_end" in m and tid in answered),
            key=lambda tid: abs(marks[tid]["user_speech_end"] - eos), default=None,
        )
        row = next((r for r in session.turns.summary() if r["turn_id"] == turn_id), {})
        user = next((m.content for m in messages if m.role == "user" and m.turn_id == turn_id), "")
        heard = next((m.content for m in messages if m.role == "assistant" and m.turn_id == turn_id), "")
        turns.append({
            "user_text": user,
            "bot_text": run["bot_text"].get(turn_id, "").strip(),
            "bot_text_heard": heard,
            "eos_to_first_audio_ms": round((first_audio - eos) * 1000) if first_audio else None,
            "vad_tail_ms": row.get("vad_tail_ms"),
            "stt_ms": row.get("stt_ms"),
            "llm_first_token_ms": row.get("llm_first_token_ms"),
            "tts_first_audio_ms": row.get("tts_first_audio_ms"),
        })
    barge_ins = []
    decisions = list(run["turn_taker"].barge_ins)
    for spoken in caller.spoken:
        if spoken.step.kind == "turn":
            continue
        stop = bot_stop_after(played, spoken.start_t)
        decision = min(decisions, key=lambda d: abs(d["t"] - spoken.start_t), default=None)
        barge_ins.append({
            "latency_ms": round((stop - spoken.start_t) * 1000) if stop else None,
            "resumed": bool(decision and decision["resumed"]),
            "kind": spoken.step.kind,
            "detected_as": decision["kind"] if decision else "missed",
        })
    os.makedirs(out_dir, exist_ok=True)
    t0 = caller.sent[0][0] if caller.sent else 0.0
    length = max((speaker.played[-1].t if speaker.played else t0), caller.sent[-1][0]) - t0 + 0.5
    left = place(caller.sent, t0, RATE, length)
    right = place([(c.t, c.pcm) for c in speaker.played], t0, RATE, length)
    recording = os.path.join(out_dir, "call.wav")
    write_stereo(recording, left, right, RATE)
    labels = [(s.start_t - t0, "caller", s.step.kind) for s in caller.spoken if s.step.kind != "turn"]
    timeline = os.path.join(out_dir, "timeline.png")
    draw_timeline(timeline, {"caller": activity(left, RATE), "bot": activity(right, RATE)}, labels, length)
    return {"turns": turns, "barge_ins": barge_ins, "recording": recording, "timeline_png": timeline,
            "end_reason": run["result"].reason, "error": run["result"].error}


def print_report(report: dict[str, Any]) -> None:
    print("\nper turn: end of caller speech → first bot audio (ms)")
    header = f"{'#':>2} {'total':>6} {'vad':>5} {'stt':>5} {'llm':>5} {'tts':>5}  caller → bot (heard)"
    print(header)
    for i, t in enumerate(report["turns"], 1):
        def cell(key: str) -> str:
            return "-" if t[key] is None else f"{t[key]:.0f}"
        heard = t["bot_text_heard"] if t["bot_text_heard"] != t["bot_text"] else "(all)"
        print(f"{i:>2} {cell('eos_to_first_audio_ms'):>6} {cell('vad_tail_ms'):>5} {cell('stt_ms'):>5} "
              f"{cell('llm_first_token_ms'):>5} {cell('tts_first_audio_ms'):>5}  "
              f"{t['user_text']!r} → {t['bot_text'][:50]!r} {heard[:40]!r}")
    totals = [t["eos_to_first_audio_ms"] for t in report["turns"] if t["eos_to_first_audio_ms"] is not None]
    if totals:
        print(f"median {statistics.median(totals):.0f} ms over {len(totals)} turns")
    print("\nbarge-ins: caller speech onset → bot audio stops")
    for b in report["barge_ins"]:
        outcome = "resumed" if b["resumed"] else "interrupted"
        print(f"  {b['kind']:<12} {b['latency_ms']} ms, {outcome} (detected as {b['detected_as']})")
    print(f"\nrecording: {report['recording']} (caller left, bot right)\ntimeline:  {report['timeline_png']}")


def bench_headline(path: str) -> dict[str, Any] | None:
    """The headline figures of the last ``bench/turns.py`` run, if there is one."""
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file).get("headline")
    except (OSError, ValueError):
        return None


def print_bench(headline: dict[str, Any] | None, path: str) -> None:
    if headline is None:
        print(f"\nturn-taking bench: no results at {path} (run `python -m bench.turns`)")
        return
    h = headline
    print(f"\nturn-taking bench ({path}, load average {h['load']}):")
    print(f"  end of speech → first bot audio: p50 {h['eos_to_first_audio_p50_ms']} ms, "
          f"p90 {h['eos_to_first_audio_p90_ms']} ms (naive loop p50 {h['naive_p50_ms']} ms, "
          f"{h['speedup_p50']}× faster); premature cut-offs {h['cutoff_rate']:.1%}; STT WER {h['wer']:.3f}")
    print(f"  barge-in: onset → bot silent p50 {h['barge_in_p50_ms']} ms; false interruptions: "
          f"backchannels {h['false_interruptions_backchannel']}, noise {h['false_interruptions_noise']}; "
          f"resumed exactly {h['resumed_exactly']}")
    print(f"  echo (-10 dB, 80 ms): false interruptions {h['echo_false_interruptions']}, "
          f"real barge-ins {h['echo_barge_in']} (p50 {h['echo_barge_in_p50_ms']} ms)")


def run(args: argparse.Namespace) -> int:
    import logging

    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    print("voxwire demo: a simulated phone call to Maple Street Clinic (offline)", file=sys.stderr)
    load_models()
    steps = recorded_steps(args.caller_audio) if args.caller_audio else scripted_steps()
    began = time.monotonic()
    outcome = asyncio.run(call(steps))
    report = analyse(outcome, args.out)
    report["call_s"] = round(time.monotonic() - began, 1)
    print_report(report)
    report["bench"] = bench_headline(args.bench)
    print_bench(report["bench"], args.bench)
    if args.json:
        print(json.dumps(report))
    return 0 if report["error"] is None else 1
