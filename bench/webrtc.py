"""WebRTC transport, measured from a real browser (headless Chromium).

    python bench/webrtc.py [--runs N] [--quick] [--json]

1. Connect time: the page's call start → ``connected`` (with its parts:
   getUserMedia, ICE gathering, the offer/answer request, ICE + DTLS), and on
   the server, offer received → connected.
2. Mouth-to-ear round trip through the server with an echo graph: the page
   records what its microphone sent and what it played; the lag of the best
   cross-correlation between the two is the round trip (Opus both ways, the
   server's resampling and playout buffer, the browser's jitter buffer).
3. Barge-in latency as the caller hears it: the caller talks over the demo
   bot's answer (``agent.clinic``: VAD → Whisper → turn-taking → desk →
   piper); from the onset of the caller's speech in the mic channel to the
   bot's audio going silent in the browser's recording.

Each run is one browser call, in a loopback-only network namespace when
``unshare -n`` works here. Prints medians; with ``--json`` the last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "webrtc"))  # the browser call runner and the test bots

from webrtc_audio import active_fraction, caller_wav, delay_s, quiet_from, segments  # noqa: E402
from webrtc_scenario import run_scenario  # noqa: E402

ECHO_SPEECH = "One, two, three. Testing the voice agent: four, five, six."
QUESTION = "Hi, what can you help me with?"  # the demo bot's longest answer: room to cut in
INTERRUPTION = "Sorry, wait a moment please."


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def connect_figures(marks: dict[str, float], server_ms: dict[str, float]) -> dict[str, float]:
    return {
        "page_to_connected_ms": marks["connected"] - marks["call_start"],
        "get_user_media_ms": marks["media"] - marks["call_start"],
        "ice_gathering_ms": marks["gathered"] - marks["media"],
        "offer_answer_http_ms": marks["answer"] - marks["gathered"],
        "answer_to_connected_ms": marks["connected"] - marks["answer"],
        "server_offer_to_connected_ms": server_ms.get("connected", float("nan")),
    }


def echo_run(tmp: Path) -> dict[str, Any]:
    tmp.mkdir(parents=True, exist_ok=True)
    wav = tmp / "echo.wav"
    spans = caller_wav(wav, [(ECHO_SPEECH, 1.2), (None, 1.0)])
    result = run_scenario("echo", wav, record_s=round(spans[-1][1] + 0.5, 1), out=tmp / "echo")
    page = result.page
    if page.error:
        raise RuntimeError(page.error)
    start, end = segments(page.mic, page.sample_rate)[0]
    rate = page.sample_rate
    window = slice(int(max(0.0, start - 0.2) * rate), int((end + 0.6) * rate))
    lag, corr = delay_s(page.mic[window], page.bot[window], rate)
    figures = connect_figures(page.marks, result.server["timings_ms"])
    inbound = page.stat("inbound-rtp")
    jitter_buffer_ms = (
        1000.0 * inbound["jitterBufferDelay"] / inbound["jitterBufferEmittedCount"]
        if inbound.get("jitterBufferEmittedCount") else float("nan")
    )
    return {**figures, "round_trip_ms": float(lag * 1000.0), "round_trip_corr": corr,
            "jitter_buffer_ms": jitter_buffer_ms, "namespace": result.namespace}


def barge_in_run(tmp: Path) -> dict[str, Any]:
    tmp.mkdir(parents=True, exist_ok=True)
    wav = tmp / "barge.wav"
    spans = caller_wav(wav, [(QUESTION, 7.0), (INTERRUPTION, 4.5), (None, 2.0)])
    result = run_scenario("clinic", wav, record_s=round(spans[-1][1] + 1.5, 1), out=tmp / "barge")
    page, rate = result.page, result.page.sample_rate
    if page.error:
        raise RuntimeError(page.error)
    spoken = segments(page.mic, rate)
    onset = spoken[1][0]
    if active_fraction(page.bot, rate, onset - 0.5, onset) < 0.3:
        return {"barge_in_ms": None, "note": "the bot was not speaking when the caller cut in"}
    stopped = quiet_from(page.bot, rate, onset, hold_s=1.0)
    server_turns = {t["turn_id"]: t for t in result.server["turns"]}
    first_answer = next((t.get("eos_to_first_audio_ms") for t in server_turns.values() if "eos_to_first_audio_ms" in t), None)
    if stopped is None:
        return {"barge_in_ms": None, "note": "the bot kept talking over the caller"}
    return {"barge_in_ms": float((stopped - onset) * 1000.0), "eos_to_first_audio_ms": first_answer}


def run(args: argparse.Namespace) -> dict[str, Any]:
    runs = 1 if args.quick else args.runs
    echo: list[dict[str, Any]] = []
    barge: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="voxwire-bench-webrtc-") as tmp_dir:
        tmp = Path(tmp_dir)
        for i in range(runs):
            echo.append(echo_run(tmp / f"run{i}"))
            print(f"echo run {i + 1}/{runs}: connected in {echo[-1]['page_to_connected_ms']:.0f} ms, "
                  f"round trip {echo[-1]['round_trip_ms']:.0f} ms", file=sys.stderr)
        for i in range(runs):
            barge.append(barge_in_run(tmp / f"run{i}"))
            ms = barge[-1]["barge_in_ms"]
            print(f"barge-in run {i + 1}/{runs}: " + (f"{ms:.0f} ms" if ms is not None else barge[-1]["note"]),
                  file=sys.stderr)

    def med(rows: list[dict[str, Any]], key: str) -> float | None:
        return median([r[key] for r in rows if isinstance(r.get(key), (int, float))])

    connect_keys = ("page_to_connected_ms", "get_user_media_ms", "ice_gathering_ms", "offer_answer_http_ms",
                    "answer_to_connected_ms", "server_offer_to_connected_ms")
    return {
        "runs": runs,
        "namespace": bool(echo and echo[0]["namespace"]),
        "connect": {key: med(echo, key) for key in connect_keys},
        "round_trip_ms": {"p50": med(echo, "round_trip_ms"), "corr_p50": med(echo, "round_trip_corr"),
                          "jitter_buffer_ms_p50": med(echo, "jitter_buffer_ms"),
                          "runs": [round(r["round_trip_ms"], 1) for r in echo]},
        "barge_in_ms": {"p50": med(barge, "barge_in_ms"),
                        "runs": [None if r["barge_in_ms"] is None else round(r["barge_in_ms"], 1) for r in barge]},
        "eos_to_first_audio_ms_p50": med(barge, "eos_to_first_audio_ms"),
    }


def report(result: dict[str, Any]) -> None:
    where = "loopback-only namespace" if result["namespace"] else "host namespace"
    print(f"\nWebRTC transport, headless Chromium ↔ aiortc, {result['runs']} run(s), {where} (medians)")
    print(f"{'connect: page call start → connected':44s} {result['connect']['page_to_connected_ms']} ms")
    for key, label in (("get_user_media_ms", "getUserMedia"), ("ice_gathering_ms", "ICE gathering"),
                       ("offer_answer_http_ms", "POST /offer → answer"), ("answer_to_connected_ms", "answer → connected (ICE+DTLS)")):
        print(f"{'  ' + label:44s} {result['connect'][key]} ms")
    print(f"{'connect: server offer → connected':44s} {result['connect']['server_offer_to_connected_ms']} ms")
    rt = result["round_trip_ms"]
    print(f"{'mouth-to-ear round trip (echo graph)':44s} {rt['p50']} ms  (corr {rt['corr_p50']}, "
          f"browser jitter buffer {rt['jitter_buffer_ms_p50']} ms; runs {rt['runs']})")
    print(f"{'barge-in: caller onset → bot silent (browser)':44s} {result['barge_in_ms']['p50']} ms  "
          f"(runs {result['barge_in_ms']['runs']})")
    print(f"{'end of speech → first bot audio (server)':44s} {result['eos_to_first_audio_ms_p50']} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="browser calls per measurement (default 3)")
    parser.add_argument("--quick", action="store_true", help="one run of each")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    result = run(args)
    report(result)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
