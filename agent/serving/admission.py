"""Load-based admission: refuse the next call rather than degrade every call.

A voice call that starts on an overloaded worker does not fail cleanly; every
call on that worker starts to stutter. So a worker measures the CPU it uses
(all threads: event loop and model pools) and, when it is over its budget,
refuses new calls with a reason the transport turns into a SIP 503, an HTTP
503 or a spoken "all agents busy". Sampling runs in the background; the check
itself only reads a number, so admission costs nothing per call.
"""

from __future__ import annotations

import asyncio
import os
import time

import psutil

from agent.calls import BUSY_PROMPT, RETRY_AFTER_S

__all__ = ["BUSY_PROMPT", "RETRY_AFTER_S", "CpuBudget"]


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
