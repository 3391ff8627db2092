"""Load-based admission: refuse the next call rather than degrade every call.

A voice call that starts on an overloaded worker does not fail cleanly; every
call on that worker starts to stutter. So a worker measures the CPU it uses
(all threads: event loop and model pools) and, when it is over its budget,
refuses new calls with a reason the transport turns into a SIP 503, an HTTP
503 or a spoken "all agents busy". Sampling runs in the background; the check
itself only reads a number, so admission costs nothing per call.

CPU alone is not enough: a process whose speech-to-text jobs queue for a
thread is already answering late even when its CPU figure looks tolerable
(the soak saw 100 calls on 2 cores answered 4 s late, none refused). So a
worker also refuses while its STT jobs wait longer than ``max_stt_wait_s``.
"""

from __future__ import annotations

import asyncio
import os
import time

import psutil

from agent.calls import BUSY_PROMPT, DEFAULT_MAX_STT_WAIT_S, RETRY_AFTER_S, CallManager
from agent.workers import STT_POOL, pool_wait

__all__ = ["BUSY_PROMPT", "DEFAULT_MAX_STT_WAIT_S", "RETRY_AFTER_S", "CpuBudget", "PoolBacklog", "attach_admission"]


class CpuBudget:
    """Refuses calls while this process or the whole machine is short of CPU.

    ``max_cores`` is the process's budget in cores (e.g. 0.85 with one worker
    per core); ``max_machine`` the fraction of all cores above which no worker
    should take more. Both are smoothed over ~``window_s`` so a single busy
    moment (a model warming up) does not refuse calls.
    """

    def __init__(self, max_cores: float, *, max_machine: float = 0.95, interval_s: float = 0.25,
                 window_s: float = 1.5) -> None:
        self.max_cores = max_cores
        self.max_machine = max_machine
        self.interval_s = interval_s
        self.alpha = min(1.0, interval_s / window_s)
        self.process_cores = 0.0
        self.machine = 0.0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def per_worker(cls, workers: int, headroom: float = 0.85) -> CpuBudget:
        """A fair share of the machine for one of ``workers`` processes."""
        return cls(max(0.1, (os.cpu_count() or 1) / max(1, workers) * headroom))

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._sample(), name="cpu-budget")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def check(self) -> str | None:
        """Admission check for ``CallManager.add_admission_check``."""
        if self.process_cores > self.max_cores:
            return "cpu_budget"
        if self.machine > self.max_machine:
            return "machine_busy"
        return None

    async def _sample(self) -> None:
        psutil.cpu_percent(None)  # primes the machine-wide counter
        cpu0, wall0 = time.process_time(), time.monotonic()
        while True:
            await asyncio.sleep(self.interval_s)
            cpu1, wall1 = time.process_time(), time.monotonic()
            used = (cpu1 - cpu0) / max(wall1 - wall0, 1e-6)
            cpu0, wall0 = cpu1, wall1
            self.process_cores += self.alpha * (used - self.process_cores)
            self.machine += self.alpha * (psutil.cpu_percent(None) / 100.0 - self.machine)


class PoolBacklog:
    """Refuses calls while jobs of a worker pool wait longer than ``max_wait_s`` for a thread.

    Reads :func:`agent.workers.pool_wait`: the worst wait among jobs waiting
    now and jobs started in the last ``window_s``, so the refusal lifts a few
    seconds after the queue drains rather than the moment one job gets through.
    """

    def __init__(self, pool: str = STT_POOL, max_wait_s: float = DEFAULT_MAX_STT_WAIT_S, *,
                 window_s: float = 3.0) -> None:
        self.pool = pool
        self.max_wait_s = max_wait_s
        self.window_s = window_s

    def check(self) -> str | None:
        """Admission check for ``CallManager.add_admission_check``."""
        if pool_wait(self.pool, self.window_s) > self.max_wait_s:
            return f"{self.pool}_backlog"
        return None


async def attach_admission(manager: CallManager, *, workers: int = 1, cpu_budget: float | None = None,
                           max_stt_wait_s: float | None = DEFAULT_MAX_STT_WAIT_S) -> CpuBudget | None:
    """Give ``manager`` the load checks of a ``voxwire serve`` worker; returns the CPU sampler to close.

    ``cpu_budget``: cores for this process (None: a fair share of the machine
    among ``workers``; 0: no CPU check). ``max_stt_wait_s``: None or 0 turns
    the STT backlog check off.
    """
    if max_stt_wait_s:
        manager.add_admission_check(PoolBacklog(STT_POOL, max_stt_wait_s).check)
    if cpu_budget == 0:
        return None
    budget = CpuBudget(cpu_budget) if cpu_budget else CpuBudget.per_worker(workers)
    await budget.start()
    manager.add_admission_check(budget.check)
    return budget
