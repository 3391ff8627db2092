"""Shared worker threads for blocking work (model inference, file I/O).

One pool per kind of work and per process, shared by every session: a second
call never loads a second model or spawns its own threads, and speech-to-text
jobs cannot queue text-to-speech jobs behind them. ONNX Runtime and
CTranslate2 release the GIL, so threads give real parallelism here.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_pools: dict[str, ThreadPoolExecutor] = {}


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
    call = functools.partial(ctx.run, fn, *args, **kwargs)
    return await loop.run_in_executor(executor(pool), call)


def shutdown_pools() -> None:
    for pool in _pools.values():
        pool.shutdown(wait=False, cancel_futures=True)
    _pools.clear()
