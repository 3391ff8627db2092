"""Prometheus metrics for a worker: sessions, turn latency, barge-ins, errors.

With ``--workers N`` every worker answers ``/metrics`` on the shared port, so
whichever one a scrape reaches must report for all of them: the supervisor
sets ``PROMETHEUS_MULTIPROC_DIR`` before starting workers, and the exposition
then merges every worker's values (prometheus_client's multiprocess mode).
Label values are kept to small fixed sets so series cannot explode.
"""

from __future__ import annotations

import os
import re

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from agent import metrics
from agent.calls import CallInfo, CallManager
from agent.frames import ErrorFrame, EventFrame, Frame, MetricsFrame
from agent.session import Session

_LABEL = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_STAGES = {name: name.removesuffix("_ms") for name, _, _ in metrics.DERIVED if name != "barge_in_ms"}

SESSIONS = Gauge("voxwire_sessions", "Live calls.", multiprocess_mode="livesum")
CALLS = Counter("voxwire_calls_total", "Calls that ended, by reason.", ["reason"])
REFUSED = Counter("voxwire_calls_refused_total", "Calls refused by admission, by reason.", ["reason"])
TURN_LATENCY = Histogram(
    "voxwire_turn_latency_seconds", "Per-turn latency by stage (eos_to_first_audio is what callers feel).",
    ["stage"], buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0))
BARGE_INS = Counter("voxwire_barge_ins_total", "Bot speech cut short by the caller or an operator.")
BARGE_IN_STOP = Histogram("voxwire_barge_in_stop_seconds", "Caller speech onset to bot silence.",
                          buckets=(0.02, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0))
ERRORS = Counter("voxwire_errors_total", "Errors reported by calls, by fatality.", ["fatal"])
CPU_CORES = Gauge("voxwire_worker_cpu_cores", "Smoothed CPU used by a worker, in cores.", multiprocess_mode="liveall")
DRAINING = Gauge("voxwire_draining", "1 while workers drain before exit.", multiprocess_mode="livemax")


def label(value: str | None) -> str:
    """A free-text reason as a bounded label value."""
    return value if value and _LABEL.match(value) else "other"


def count_refusal(reason: str) -> None:
    """Transports call this when they turn a call away (SIP 503, HTTP 503, busy prompt)."""
    REFUSED.labels(label(reason)).inc()


class _CallMetrics:
    """Observer of one call."""

    __slots__ = ("session", "barge_start_t")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.barge_start_t: float | None = None

    def observe(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, MetricsFrame):
            self._metric(frame)
        elif isinstance(frame, ErrorFrame):
            ERRORS.labels(str(frame.fatal).lower()).inc()
        elif isinstance(frame, EventFrame) and frame.kind == "call_ended":
            SESSIONS.dec()
            CALLS.labels(label(frame.data.get("reason"))).inc()

    def _metric(self, frame: MetricsFrame) -> None:
        if frame.name == metrics.BARGE_IN_START:
            self.barge_start_t = frame.t
        elif frame.name == metrics.BARGE_IN_STOP:
            BARGE_INS.inc()
            if self.barge_start_t is not None and 0 <= frame.t - self.barge_start_t < 5:
                BARGE_IN_STOP.observe(frame.t - self.barge_start_t)
            self.barge_start_t = None
        elif frame.name == metrics.FIRST_AUDIO_OUT:
            row = next((r for r in self.session.turns.summary() if r["turn_id"] == frame.turn_id), {})
            for name, stage in _STAGES.items():
                value = row.get(name)
                if isinstance(value, (int, float)) and value >= 0:
                    TURN_LATENCY.labels(stage).observe(value / 1000.0)


def attach(manager: CallManager) -> None:
    """Count every call of ``manager``."""

    def hook(session: Session, info: CallInfo) -> None:
        SESSIONS.inc()
        session.subscribe(_CallMetrics(session).observe)

    manager.on_session(hook)


def exposition() -> tuple[bytes, str]:
    """The text a scrape gets: all workers merged when running multi-process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
