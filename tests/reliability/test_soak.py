"""A short soak over SIP with sipp as the caller and the local bot's models in-process.

6 calls one after another, then 8 at once (under a minute). The full soak —
1 000 sequential calls, then 100 concurrent for 10 minutes — is
``python bench/soak.py --json``, or this test with ``VOXWIRE_SOAK=full``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter

import pytest

from tests.reliability.conftest import OUT

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (apt sip-tester) not installed"),
]

FULL = os.environ.get("VOXWIRE_SOAK") == "full"


async def test_soak_over_sip(tally: Counter[str]) -> None:
    from bench.soak import soak

    if FULL:
        report = await soak(1000, 100, 600)
    else:
        report = await soak(6, 8, settle_s=3.0)  # keeps the suite near 3 min; the trend figures need the full run
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / ("soak_full.json" if FULL else "soak_quick.json")).write_text(json.dumps(report, indent=1) + "\n")
    tally["soak calls"] += report["calls_ended"]

    assert report["warmup_ok"] and report["sequential_phase"]["sipp_exit"] == 0, report["sequential_phase"]
    assert report["concurrent_phase"]["sipp_exit"] == 0, report["concurrent_phase"]
    # Every call placed either ran to its end or was refused by admission with a 503 (the worker's
    # STT queue or CPU budget full); one at a time, none is refused.
    refused = sum(report["refused_calls"].values())
    assert report["calls_ended"] + refused == report["sequential"] + report["concurrent_phase"]["calls"], report
    assert report["sequential_calls_ended"] == report["sequential"], report["refused_calls"]
    # Nothing crashed, nothing escaped to the event loop, nothing was logged as an error.
    assert report["crashed_sessions"] == 0, report["crash_reasons"]
    assert not report["loop_exceptions"] and report["error_log_count"] == 0, report["error_log_lines"]
    # One call at a time, the bot answers every call (one miss allowed) before the caller hangs up
    # (2.2 s after asking).
    sequential = report["turn_latency_sequential"]
    assert sequential["all"]["n"] >= report["sequential"] - 1, sequential
    # Nothing of the calls is left behind once they end: tasks and descriptors back to idle; the
    # worker pools may have grown to their size (one thread per core per pool), no more.
    assert report["tasks_idle"][-1] <= report["tasks_idle"][0]
    assert report["fds_idle"][-1] <= report["fds_idle"][0] + 2
    assert report["threads_idle"][-1] <= report["threads_idle"][0] + 4 * (report["cpu_count"] or 1)
    assert sequential["last"]["p99_ms"] < max(2.0 * sequential["first"]["p99_ms"], 1500.0), sequential
