"""Shared pieces of the reliability suite: the tally of inputs tried, hypothesis settings.

Every bad-input test adds how many inputs it pushed through a parser to one
tally; the run ends by printing it and writing ``out/reliability/inputs.json``,
so the counts quoted in a report are the counts of the run that passed.

``VOXWIRE_FUZZ_EXAMPLES`` raises the hypothesis examples per property (the
default keeps ``make test`` short); ``VOXWIRE_FUZZ_SECONDS`` lengthens the
atheris runs.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "out" / "reliability"
TALLY: Counter[str] = Counter()

EXAMPLES = int(os.environ.get("VOXWIRE_FUZZ_EXAMPLES", "400"))

settings.register_profile(
    "reliability",
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def fuzz_settings(scale: float = 1.0) -> settings:
    """The suite's profile with ``scale`` times the examples (cheap targets get more)."""
    return settings(settings.get_profile("reliability"), max_examples=max(10, int(EXAMPLES * scale)))


@pytest.fixture
def tally() -> Counter[str]:
    return TALLY


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if not TALLY:
        return
    terminalreporter.write_sep("-", "reliability: inputs tried")
    for name, count in sorted(TALLY.items()):
        terminalreporter.write_line(f"{name:<40} {count:>9}")
    terminalreporter.write_line(f"{'total':<40} {sum(TALLY.values()):>9}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "inputs.json").write_text(json.dumps(dict(sorted(TALLY.items())), indent=1) + "\n")
