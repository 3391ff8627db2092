"""bench/capacity.py: the capacity plan follows from the measured costs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("capacity", ROOT / "bench" / "capacity.py")
assert spec is not None and spec.loader is not None
capacity = importlib.util.module_from_spec(spec)
sys.modules["capacity"] = capacity
spec.loader.exec_module(capacity)

OVERHEAD = {  # the shape bench/overhead.py --json prints
    "sessions": [{"k": 1, "cpu_pct_per_session": 1.0, "rss_mb_per_session": 0.0},
                 {"k": 100, "cpu_pct_per_session": 0.2, "rss_mb_per_session": 0.1},
                 {"k": 400, "cpu_pct_per_session": 0.25, "rss_mb_per_session": 0.12}],
    "falls_behind_at": 800,
}
SPEECH = {"vad_us_per_32ms_window": {"call": {"silero_us": 300.0, "gated_us": 96.0, "gated_share": 0.6}},
          "stt_ms_per_utterance": {"median": 300.0, "max": 400.0, "median_audio_s": 3.0}}
TELEPHONY = {"load": [{"calls": 50, "server_cores_used": 0.5, "calls_per_core": 100.0, "input_frames_delivered": 1.0},
                      {"calls": 100, "server_cores_used": 1.4, "calls_per_core": 71.4, "input_frames_delivered": 0.9}]}


def test_costs_come_from_the_benchmarks() -> None:
    costs = capacity.load_costs(OVERHEAD, SPEECH, TELEPHONY)
    assert costs.session_rss_mb == 0.12 and costs.sessions_per_loop == 400
    assert costs.stt_core_s_per_audio_s == pytest.approx(0.1)
    # the whole SIP call (0.01 cores, at the largest load that kept real time) beats graph + VAD (0.0055)
    assert costs.session_cores == pytest.approx(0.01)
    assert "bench/telephony.py" in costs.sources["telephony"] and "µs" in costs.sources["vad"]
    bare = capacity.load_costs(OVERHEAD, None, None)
    assert bare.session_cores == pytest.approx(0.0025 + 0.004) and "assumed" in bare.sources["stt"]


def test_the_simulated_demand_matches_the_arithmetic() -> None:
    costs = capacity.load_costs(OVERHEAD, SPEECH, None)
    gpu, talk = capacity.GpuFigures(), capacity.Conversation()
    demand = capacity.simulate(costs, gpu, talk, calls=2000, seconds=200)
    stt_per_turn = costs.stt_core_s_per_audio_s * talk.user_turn_s * np.exp(0.125)  # mean of a log-normal
    cycle_s = (talk.user_turn_s * np.exp(0.125) + talk.end_of_turn_wait_s + stt_per_turn + gpu.llm_ttft_s
               + gpu.tts_ttfa_s + talk.answer_chars * np.exp(0.08) / talk.speaking_chars_per_s
               + talk.pause_s * np.exp(0.045))
    expected = 2000 * stt_per_turn / cycle_s
    assert np.mean(demand["stt_cores"]) == pytest.approx(expected, rel=0.05)
    assert np.all(demand["tts_streams"] >= 0) and np.percentile(demand["tts_streams"], 99) > 0


def test_the_plan_scales_with_the_calls_and_sizes_every_pool() -> None:
    costs = capacity.load_costs(OVERHEAD, SPEECH, TELEPHONY)
    gpu, talk = capacity.GpuFigures(), capacity.Conversation()
    small = capacity.plan(costs, gpu, talk, capacity.Fleet(calls=5000), seconds=120)
    big = capacity.plan(costs, gpu, talk, capacity.Fleet(calls=10_000), seconds=120)
    for key in ("workers", "tts_gpus", "llm_gpus", "bus_msgs_per_s_mean"):
        assert big[key] == pytest.approx(2 * small[key], rel=0.12), key
    assert big["workers"] * 0.85 >= big["worker_cores_p99"]
    assert big["calls_per_worker"] <= costs.sessions_per_loop
    assert big["tts_gpus"] * gpu.tts_streams_per_gpu >= big["tts_streams_p99"]
    assert big["pods"] == -(-big["workers"] // 4)


def test_the_command_line_prints_the_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    overhead = tmp_path / "overhead.txt"
    overhead.write_text("some report text\n" + json.dumps(OVERHEAD) + "\n")
    speech = tmp_path / "speech.txt"
    speech.write_text(json.dumps(SPEECH) + "\n")
    result = capacity.main(["--overhead", str(overhead), "--speech", str(speech), "--calls", "10000",
                            "--seconds", "60", "--json"])
    out = capsys.readouterr().out
    assert "| worker processes (one core each, 85 % budget) |" in out and "Voxtral TTS GPUs" in out
    assert json.loads(out.strip().splitlines()[-1])["workers"] == result["workers"] > 0
