"""Shared worker threads for blocking work (model inference, file I/O).

One pool per kind of work and per process, shared by every session: a second
call never loads a second model or spawns its own threads, and speech-to-text
jobs cannot queue text-to-speech jobs behind them. ONNX Runtime and
CTranslate2 release the GIL, so threads give real parallelism here.

Each pool also keeps how long its jobs wait for a thread (:func:`pool_wait`):
a queue in front of the speech-to-text model is the first thing a caller
feels when a worker takes more calls than its cores can serve, so admission
reads it.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

#: The pool speech-to-text models run in (admission watches its queue).
STT_POOL = "stt"

_pools: dict[str, ThreadPoolExecutor] = {}


class _WaitLog:
    """Queue waits of one pool: jobs still waiting now, and the waits of jobs started lately."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[int, float] = {}  # job token -> when it was submitted
        self._next_token = 0
        self._started: deque[tuple[float, float]] = deque(maxlen=256)  # (started at, waited s)

    def submitted(self) -> int:
        with self._lock:
            self._next_token += 1
            self._waiting[self._next_token] = time.monotonic()
            return self._next_token

    def started(self, token: int) -> None:
        now = time.monotonic()
        with self._lock:
            submitted = self._waiting.pop(token, None)
            if submitted is not None:
                self._started.append((now, now - submitted))

    def abandoned(self, token: int) -> None:
        """A job cancelled before a thread took it: it no longer waits."""
        with self._lock:
            self._waiting.pop(token, None)

    def worst_wait(self, window_s: float) -> float:
        """The longest wait among jobs waiting now and jobs started in the last ``window_s``."""
        now = time.monotonic()
        with self._lock:
            oldest = min(self._waiting.values(), default=now)
            recent = [waited for started, waited in self._started if now - started <= window_s]
        return max(now - oldest, max(recent, default=0.0))


_waits: dict[str, _WaitLog] = {}


def pool_wait(kind: str, window_s: float = 3.0) -> float:
    """Seconds the ``kind`` pool's jobs wait for a thread: the worst of those waiting now and of
    those started in the last ``window_s`` (0.0 for a pool that never ran)."""
    log = _waits.get(kind)
    return log.worst_wait(window_s) if log is not None else 0.0


def pool_size(kind: str) -> int:
    """Threads for a pool: ``VOXWIRE_THREADS_<KIND>``, else the core count."""
    env = os.environ.get(f"VOXWIRE_THREADS_{kind.upper()}")
    if env:
        return max(1, int(env))
    return max(1, os.cpu_count() or 1)


def executor(kind: str = "default") -> ThreadPoolExecutor:
    pool = _pools.get(kind)
    if pool is None:
        pool = ThreadPoolExecutor(pool_size(kind), thread_name_prefix=f"voxwire-{kind}")
        _pools[kind] = pool
    return pool


async def run_blocking(
    fn: Callable[P, T], *args: P.args, pool: str = "default", **kwargs: P.kwargs
) -> T:
    """Run ``fn`` in a shared worker thread without blocking the event loop.

    Cancelling the awaiting task cancels a job that has not started yet; a job
    already running finishes in its thread and its result is discarded.
    """
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    waits = _waits.setdefault(pool, _WaitLog())
    token = waits.submitted()

    def job() -> T:
        waits.started(token)
        return ctx.run(fn, *args, **kwargs)

    try:
        return await loop.run_in_executor(executor(pool), job)
    finally:
        waits.abandoned(token)  # a no-op once the job has started


def shutdown_pools() -> None:
    for pool in _pools.values():
        pool.shutdown(wait=False, cancel_futures=True)
    _pools.clear()
    _waits.clear()
