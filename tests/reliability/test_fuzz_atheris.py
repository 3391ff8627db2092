"""A short coverage-guided fuzzing run of every wire parser (atheris, via ``bench/fuzz.py``).

Each target runs in its own process, because libFuzzer ends the process on
the first crash. The default budget keeps ``make test`` short (SIP and SDP 6 s
each, the others 3 s); ``VOXWIRE_FUZZ_SECONDS=300`` runs every target that long.
A crash fails the test with the exception and the libFuzzer artifact to replay
(``python bench/fuzz.py sip out/reliability/fuzz/sip-crash-...``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LONG = os.environ.get("VOXWIRE_FUZZ_SECONDS")
BUDGET = {"sip": 6, "sdp": 6, "rtp": 3, "carrier": 3, "mqtt": 3}

pytestmark = pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                                reason="atheris is not installed (pip install atheris==3.0.0)")


@pytest.mark.parametrize("target", list(BUDGET))
def test_atheris_finds_no_crash(target: str, tally: Counter[str]) -> None:
    seconds = int(LONG) if LONG else BUDGET[target]
    code = (
        "import json, sys; sys.path.insert(0, 'bench'); import fuzz; "
        f"print(json.dumps(fuzz.run_all([{target!r}], {seconds})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=seconds + 120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["exit"] == 0, f"{target}: crash saved as {row['crash_file']}\n{row['error']}"
    assert row["executions"] and row["executions"] > 100 * seconds  # it really ran
    tally[f"atheris {target}"] += row["executions"]
