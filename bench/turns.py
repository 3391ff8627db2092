"""Turn-taking bench: how fast the bot answers, whether it cuts callers off, how it yields.

Real models throughout (Silero, tiny.en, piper), real-time calls through the
whole graph, an instant LLM hook. Three parts, run in one process:

1. **End of turn** over the caller corpus (``bench/turns_corpus.py``: 40
   utterances, piper and espeak-ng voices, 24 mid-sentence pauses of
   300-600 ms, numbers, every fifth over an 8 kHz μ-law line with -35 dBFS
   noise), once with voxwire's turn-taking and once with the naive loop (500 ms
   hangover, 30 s-window Whisper, answer at once). Per utterance: true end of
   speech → first bot audio, whether bot audio played while the caller was
   still talking (a premature cut-off), and the transcript the LLM got (WER).
2. **Barge-in**: the bot reads a long answer; the caller interrupts, says a
   backchannel, or makes a -25 dBFS noise burst at 0.8-1.8 s. True onset →
   last bot audio frame out; false-interruption rates; whether playback
   resumed exactly where it paused (played bytes = synthesized bytes).
3. **Echo**: the same over a phone line where the bot's own audio comes back
   at -10 dB and 80 ms (speakerphone): echo alone must not interrupt, a real
   barge-in over it must.

``python -m bench.turns [--json] [--limit N] [--skip-naive] [--out DIR]``;
with ``--json`` the last line is one JSON object (also written to
``DIR/turns.json``, which ``voxwire demo --bench`` prints).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.caller import Step
from agent.frames import Frame, UserTurnFrame
from agent.llm import LLMNode
from agent.node import Node
from agent.session import Session
from agent.turns import TurnTaker
from bench.turns_corpus import (
    BACKCHANNELS,
    INTERRUPTIONS,
    PHONE_RATE,
    RATE,
    Utterance,
    build_corpus,
    noise_burst,
    piper_speech,
    trim,
    wer,
)
from bench.turns_line import EchoPath, LineCaller, SpeakerOutput

SHORT_ANSWER = "Sure, let me check that for you."
LONG_ANSWER = ("We offer checkups, vaccinations and blood tests, and there is a pharmacy "
               "right next door that stays open late on weekdays.")
TRIGGER = "Tell me about your services."


# ------------------------------------------------------------------- plumbing


class TurnLog(Node):
    """Notes when each user turn reached the LLM, and with what text."""

    def __init__(self) -> None:
        super().__init__(name="turn-log")
        self.turns: list[tuple[float, int, str]] = []

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, UserTurnFrame):
            self.turns.append((time.monotonic(), frame.turn_id, frame.text))
        await self.emit(frame, direction)


def instant_hook(answer_for: Any) -> Any:
    async def hook(conversation: Any, user: Any) -> Any:
        for word in answer_for(user.text).split(" "):
            yield word + " "
    return hook


def listening(config: str) -> list[Node]:
    """The front end for a configuration: "voxwire", "naive", or "voxwire-noecho"."""
    from agent.clinic import listening_nodes, naive_listening_nodes

    if config == "naive":
        return naive_listening_nodes()
    return listening_nodes(echo=config != "voxwire-noecho")


def speaking(config: str) -> Node:
    """voxwire's piper (one-word first clause) or the naive one (whole first sentence)."""
    from agent.clinic import speaking_node
    from tts.piper import PiperTTSNode

    return PiperTTSNode() if config == "naive" else speaking_node()


@dataclass
class CallRun:
    caller: LineCaller
    speaker: SpeakerOutput
    log: TurnLog
    turn_taker: TurnTaker
    llm: LLMNode
    stt: Any
    echo: Any
    result: Any


async def run_call(steps: list[Step], *, rate: int, config: str, answer_for: Any, line: bool = False,
                   echo_db: float | None = None, echo_ms: float = 80.0) -> CallRun:
    path = EchoPath(rate, gain_db=echo_db, delay_ms=echo_ms) if echo_db is not None else None
    caller = LineCaller(steps, sample_rate=rate, noise_dbfs=-35.0 if line else None, ulaw=line, echo=path,
                        first_wait_s=0.3)
    speaker = SpeakerOutput(sample_rate=rate, echo=path)
    log = TurnLog()
    front = listening(config)
    llm = LLMNode(instant_hook(answer_for))
    nodes = [caller, *front, log, llm, speaking(config), speaker]
    session = Session(nodes, input_sample_rate=rate, output_sample_rate=rate, max_duration_s=900)
    result = await session.run()
    turn_taker = next(n for n in front if isinstance(n, TurnTaker))
    stt = next((n for n in front if type(n).__name__ == "WhisperSTTNode"), None)
    echo = next((n for n in front if type(n).__name__ == "EchoCanceller"), None)
    return CallRun(caller, speaker, log, turn_taker, llm, stt, echo, result)


def to_rate(pcm: np.ndarray, rate: int, target: int) -> np.ndarray:
    import soxr

    return pcm if rate == target else np.asarray(soxr.resample(pcm, rate, target), dtype=np.int16)


# --------------------------------------------------------------- end of turn


@dataclass
class TurnResult:
    text: str
    heard: str
    latency_ms: float | None
    cut: bool
    boundary_pause: bool
    pauses: int
    phone: bool
    handed: int  # how many times a turn went to the LLM for this utterance


def measure_turns(run: CallRun, corpus: list[Utterance]) -> list[TurnResult]:
    spoken = run.caller.spoken
    played = [c.t for c in run.speaker.played]
    results = []
    for i, (utt, said) in enumerate(zip(corpus, spoken)):
        window_end = spoken[i + 1].start_t if i + 1 < len(spoken) else float("inf")
        first = next((t for t in played if t >= said.end_t), None)
        if first is not None and first >= window_end:
            first = None
        cut = any(said.start_t + 0.05 < t < said.end_t - 0.02 for t in played)
        handed = [text for t, _, text in run.log.turns if said.start_t < t < window_end]
        results.append(TurnResult(
            text=utt.text, heard=handed[-1] if handed else "", pauses=len(utt.pauses_ms), phone=utt.phone,
            latency_ms=None if first is None else (first - said.end_t) * 1000.0, cut=cut,
            boundary_pause=utt.boundary_pause, handed=len(handed),
        ))
    return results


async def end_of_turn(corpus: list[Utterance], config: str) -> tuple[list[TurnResult], dict[str, Any]]:
    results: list[TurnResult] = []
    stats: dict[str, Any] = {"speculations": {"started": 0, "used": 0, "dropped": 0}, "reopened": 0}
    for phone in (False, True):
        part = [u for u in corpus if u.phone == phone]
        if not part:
            continue
        rate = PHONE_RATE if phone else RATE
        steps = [Step(text=u.text, pcm=to_rate(u.pcm, u.rate, rate), after_bot_s=0.5) for u in part]
        run = await run_call(steps, rate=rate, config=config, answer_for=lambda _: SHORT_ANSWER, line=phone)
        if run.result.error:
            raise RuntimeError(f"{config} call failed: {run.result.error}")
        results += measure_turns(run, part)
        stats.setdefault("holds", []).extend(run.turn_taker.holds)
        if run.stt is not None:
            for key, value in run.stt.speculations.items():
                stats["speculations"][key] += value
        stats["reopened"] += run.turn_taker.reopened
    return results, stats


def summarise_turns(results: list[TurnResult]) -> dict[str, Any]:
    latencies = [r.latency_ms for r in results if r.latency_ms is not None]
    boundary = [r for r in results if r.boundary_pause]
    return {
        "n": len(results),
        "p50_ms": round(float(np.percentile(latencies, 50))) if latencies else None,
        "p90_ms": round(float(np.percentile(latencies, 90))) if latencies else None,
        "unanswered": sum(r.latency_ms is None for r in results),
        "cutoffs": sum(r.cut for r in results),
        "cutoff_rate": round(sum(r.cut for r in results) / max(1, len(results)), 3),
        "cutoffs_open_pauses": sum(r.cut for r in results if r.pauses and not r.boundary_pause),
        "cutoffs_boundary_pauses": f"{sum(r.cut for r in boundary)}/{len(boundary)}",
        "with_pauses": sum(1 for r in results if r.pauses),
        "wer": round(wer([r.text for r in results], [r.heard for r in results]), 3),
    }


# ------------------------------------------------------------------ barge-in


def barge_steps(line_rate: int, *, echo: bool) -> list[Step]:
    """Trigger turns, each answered at length, and what the caller does during the answer."""
    def say(text: str) -> np.ndarray:
        return to_rate(trim(piper_speech(text)), RATE, line_rate)

    trigger = say(TRIGGER)
    steps: list[Step] = [Step(text=TRIGGER, pcm=trigger, after_bot_s=0.5)]
    plan: list[tuple[str, str, np.ndarray]] = []
    if echo:
        plan += [("echo_only", "", np.zeros(0, dtype=np.int16))] * 3
        plan += [("interruption", t, say(t)) for t in INTERRUPTIONS[:4]]
        plan += [("backchannel", t, say(t)) for t in BACKCHANNELS[:3]]
    else:
        plan += [("interruption", t, say(t)) for t in INTERRUPTIONS]
        plan += [("backchannel", t, say(t)) for t in BACKCHANNELS]
        plan += [("noise", f"white {ms} ms", noise_burst(ms / 1000, line_rate, -25.0, seed=ms)) for ms in (300, 500, 700)]
        plan += [("noise", f"rumble {ms} ms", noise_burst(ms / 1000, line_rate, -25.0, seed=ms, kind="rumble"))
                 for ms in (250, 450, 650)]
    for i, (kind, text, pcm) in enumerate(plan):
        at = 0.8 + (i % 6) * 0.2
        if kind == "echo_only":
            steps.append(Step(text=TRIGGER, pcm=trigger, after_bot_s=0.5))
            continue
        steps.append(Step(text=text, pcm=pcm, during_bot_s=at, kind=kind))
        if kind != "interruption":  # the bot finishes this answer: ask again
            steps.append(Step(text=TRIGGER, pcm=trigger, after_bot_s=0.5))
    return steps


def long_answer(text: str) -> str:
    return LONG_ANSWER


def measure_barge_ins(run: CallRun) -> list[dict[str, Any]]:
    decisions = list(run.turn_taker.barge_ins)
    out = []
    for said in run.caller.spoken:
        kind = said.step.kind
        if kind == "turn":
            continue
        decision = next((d for d in decisions if -0.1 < d["t"] - said.start_t < 0.6), None)
        stop = run.speaker.stop_after(said.start_t)
        out.append({
            "kind": kind, "text": said.step.text,
            "paused": decision is not None,
            "interrupted": decision is not None and not decision["resumed"],
            "decided_as": decision["kind"] if decision else "no pause",
            "heard": decision.get("heard", "") if decision else "",
            # Below zero would mean the bot was already silent (between clauses) at the onset.
            "latency_ms": max(0, round((stop - said.start_t) * 1000)) if stop is not None else None,
        })
    return out


def echo_only_answers(run: CallRun) -> dict[str, int]:
    """Answers played over the echo with no caller speech: pauses and interruptions they caused."""
    turns = [s for s in run.caller.spoken if s.step.kind == "turn"]
    events = {"answers": 0, "false_pauses": 0, "false_interruptions": 0}
    spoken_barges = [s for s in run.caller.spoken if s.step.kind != "turn"]
    for i, said in enumerate(turns):
        end = turns[i + 1].start_t if i + 1 < len(turns) else float("inf")
        if any(said.end_t < b.start_t < end for b in spoken_barges):
            continue  # this answer had a real barge-in in it
        events["answers"] += 1
        own = [d for d in run.turn_taker.barge_ins if said.end_t < d["t"] < end]
        events["false_pauses"] += len(own)
        events["false_interruptions"] += sum(not d["resumed"] for d in own)
    return events


def resume_exact(run: CallRun) -> tuple[int, int]:
    """(answers resumed after a pause, of which played byte-for-byte as synthesized)."""
    resumed_turns = run.speaker.turns_with_pause_resume()
    exact = sum(run.speaker.played_exactly(turn) for turn in resumed_turns)
    return len(resumed_turns), exact


async def barge_in(echo: bool) -> dict[str, Any]:
    rate = PHONE_RATE if echo else RATE
    steps = barge_steps(rate, echo=echo)
    run = await run_call(steps, rate=rate, config="voxwire", answer_for=long_answer, line=echo,
                         echo_db=-10.0 if echo else None)
    if run.result.error:
        raise RuntimeError(f"barge-in call failed: {run.result.error}")
    trials = measure_barge_ins(run)
    resumed, exact = resume_exact(run)
    summary: dict[str, Any] = {"trials": trials, "resumed": resumed, "resumed_exactly": exact}
    real = [t for t in trials if t["kind"] == "interruption"]
    lat = [t["latency_ms"] for t in real if t["latency_ms"] is not None]
    summary["interruptions"] = f"{sum(t['interrupted'] for t in real)}/{len(real)}"
    summary["latency_p50_ms"] = round(statistics.median(lat)) if lat else None
    summary["latency_max_ms"] = max(lat) if lat else None
    for kind in ("backchannel", "noise"):
        group = [t for t in trials if t["kind"] == kind]
        if group:
            summary[f"false_interruptions_{kind}"] = f"{sum(t['interrupted'] for t in group)}/{len(group)}"
            summary[f"pauses_{kind}"] = f"{sum(t['paused'] for t in group)}/{len(group)}"
    if echo:
        summary["echo_only"] = echo_only_answers(run)
        summary["canceller"] = dict(run.echo.stats) if run.echo is not None else {}
    return summary


# ------------------------------------------------------------- STT windows


def stt_windows(corpus: list[Utterance]) -> dict[str, Any]:
    """Whisper alone over the corpus: the 30 s window against the shortened one."""
    from stt.models import load_model
    from stt.whisper import transcribe, transcribe_clip

    model = load_model()
    clips = [np.concatenate([np.zeros(RATE // 4, dtype=np.int16), to_rate(u.pcm, u.rate, RATE),
                             np.zeros(RATE // 8, dtype=np.int16)]) for u in corpus]
    out: dict[str, Any] = {}
    for name, run in (("full_30s", lambda a: transcribe(model, a)[0]), ("short_window", lambda a: transcribe_clip(model, a).text)):
        texts, times = [], []
        for clip in clips:
            began = time.perf_counter()
            texts.append(run(clip))
            times.append(time.perf_counter() - began)
        out[name] = {"wer": round(wer([u.text for u in corpus], texts), 3),
                     "p50_ms": round(1000 * statistics.median(times)), "p90_ms": round(1000 * float(np.percentile(times, 90)))}
    return out


# -------------------------------------------------------------------- report


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def warm_up(sample: np.ndarray) -> None:
    """Load every model and run each once: first inferences pay one-off costs."""
    from agent.vad.silero import shared_session
    from stt.models import load_model
    from stt.whisper import transcribe, transcribe_clip

    shared_session()
    model = load_model()
    transcribe_clip(model, sample)
    transcribe(model, sample)
    piper_speech("Sure, let me check that for you.")


async def bench(limit: int | None, skip_naive: bool) -> dict[str, Any]:
    print("synthesizing the caller corpus …", file=sys.stderr)
    corpus = build_corpus(limit)
    warm_up(to_rate(corpus[0].pcm, corpus[0].rate, RATE))
    report: dict[str, Any] = {"cpus": os.cpu_count(), "load_before": load_average(), "utterances": len(corpus)}
    configs = ["voxwire"] if skip_naive else ["voxwire", "naive"]
    for config in configs:
        began = time.monotonic()
        print(f"end of turn, {config}: {len(corpus)} utterances in real time …", file=sys.stderr)
        results, stats = await end_of_turn(corpus, config)
        report[config] = {**summarise_turns(results), **stats, "load": load_average(),
                          "rows": [r.__dict__ for r in results], "wall_s": round(time.monotonic() - began)}
    if not skip_naive and report["voxwire"]["p50_ms"] and report["naive"]["p50_ms"]:
        report["speedup_p50"] = round(report["naive"]["p50_ms"] / report["voxwire"]["p50_ms"], 2)
    print("barge-in: interruptions, backchannels, noise bursts …", file=sys.stderr)
    report["barge_in"] = await barge_in(echo=False)
    print("echo: speakerphone at -10 dB / 80 ms over a phone line …", file=sys.stderr)
    report["echo"] = await barge_in(echo=True)
    print("STT alone: 30 s window against the short window …", file=sys.stderr)
    report["stt"] = stt_windows(corpus)
    report["load_after"] = load_average()
    return report


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The figures ``voxwire demo --bench`` prints."""
    v, n, b, e = report["voxwire"], report.get("naive", {}), report["barge_in"], report["echo"]
    return {
        "eos_to_first_audio_p50_ms": v["p50_ms"], "eos_to_first_audio_p90_ms": v["p90_ms"],
        "naive_p50_ms": n.get("p50_ms"), "speedup_p50": report.get("speedup_p50"),
        "cutoff_rate": v["cutoff_rate"], "wer": v["wer"],
        "barge_in_p50_ms": b["latency_p50_ms"],
        "false_interruptions_backchannel": b.get("false_interruptions_backchannel"),
        "false_interruptions_noise": b.get("false_interruptions_noise"),
        "resumed_exactly": f"{b['resumed_exactly']}/{b['resumed']}",
        "echo_false_interruptions": f"{e['echo_only']['false_interruptions']}/{e['echo_only']['answers']}",
        "echo_barge_in": e["interruptions"], "echo_barge_in_p50_ms": e["latency_p50_ms"],
        "load": report["load_before"],
    }


def print_report(report: dict[str, Any]) -> None:
    print(f"\nturn-taking bench — {report['utterances']} utterances, {report['cpus']} CPUs, "
          f"load average {report['load_before']} → {report['load_after']}")
    print("\nend of speech → first bot audio (instant LLM hook)")
    print(f"{'config':<9} {'p50':>6} {'p90':>6} {'cut-offs':>9} {'open/boundary':>14} {'WER':>6} {'unanswered':>10}")
    for config in ("voxwire", "naive"):
        if config not in report:
            continue
        r = report[config]
        print(f"{config:<9} {r['p50_ms']:>6} {r['p90_ms']:>6} {r['cutoffs']:>4}/{r['n']:<4} "
              f"{r['cutoffs_open_pauses']:>6} {r['cutoffs_boundary_pauses']:>7} {r['wer']:>6.3f} {r['unanswered']:>10}")
    if "speedup_p50" in report:
        print(f"naive p50 / voxwire p50 = {report['speedup_p50']}×")
    spec = report["voxwire"]["speculations"]
    print(f"speculative transcripts: {spec['started']} started, {spec['used']} became the final, "
          f"{spec['dropped']} dropped (caller went on); turns reopened: {report['voxwire']['reopened']}")
    slow = sorted((r for r in report["voxwire"]["rows"] if r["latency_ms"]), key=lambda r: -r["latency_ms"])[:3]
    for r in slow:
        print(f"  slowest: {r['latency_ms']:.0f} ms  {r['text']!r}")
    for r in report["voxwire"]["rows"]:
        if r["cut"]:
            print(f"  cut off: {r['text']!r} (heard {r['heard']!r})")
    stt = report["stt"]
    print(f"STT alone (no call): 30 s window WER {stt['full_30s']['wer']:.3f}, p50 {stt['full_30s']['p50_ms']} ms; "
          f"short window WER {stt['short_window']['wer']:.3f}, p50 {stt['short_window']['p50_ms']} ms")
    for title, key in (("barge-in (clean line)", "barge_in"), ("barge-in over echo (-10 dB, 80 ms, μ-law)", "echo")):
        b = report[key]
        print(f"\n{title}: onset → last bot audio p50 {b['latency_p50_ms']} ms (max {b['latency_max_ms']}), "
              f"interrupted {b['interruptions']}; resumed {b['resumed']}, exactly {b['resumed_exactly']}")
        for kind in ("backchannel", "noise"):
            if f"false_interruptions_{kind}" in b:
                print(f"  {kind}: false interruptions {b[f'false_interruptions_{kind}']}, "
                      f"paused {b[f'pauses_{kind}']}")
        if "echo_only" in b:
            e = b["echo_only"]
            print(f"  echo alone: {e['answers']} answers, {e['false_pauses']} false pauses, "
                  f"{e['false_interruptions']} false interruptions; canceller {b['canceller']}")
        for t in b["trials"]:
            print(f"    {t['kind']:<12} {t['text']!r:<38} {t['decided_as']:<12} "
                  f"{'-' if t['latency_ms'] is None else t['latency_ms']:>5} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--limit", type=int, help="use only the first N corpus utterances")
    parser.add_argument("--skip-naive", action="store_true", help="do not run the naive baseline")
    parser.add_argument("--out", default="out/bench", help="folder for turns.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("faster_whisper").setLevel(logging.ERROR)
    report = asyncio.run(bench(args.limit, args.skip_naive))
    report["headline"] = headline(report)
    print_report(report)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "turns.json").write_text(json.dumps(report, indent=1))
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
