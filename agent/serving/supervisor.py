"""``--workers N``: N worker processes behind one port, restarted if they die.

Python runs one event loop per process on one core, so a machine's cores are
used by running one worker per core. Workers are *spawned* (not forked), so
each starts clean and loads its own models once. They all bind the same port
with ``SO_REUSEPORT`` and the kernel spreads connections over them; each
worker admits or refuses calls on its own load.

The supervisor forwards SIGTERM/SIGINT to the workers, waits for their drain
(``drain_deadline_s`` plus a grace period), and kills what is left after that.
A worker that dies while not stopping is restarted, with a backoff.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import tempfile
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess

from agent.serving.worker import EXIT_CONFIG, WorkerConfig, worker_entry

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 15.0
MAX_RESTART_BACKOFF_S = 30.0


def serve_workers(config: WorkerConfig) -> int:
    """Run ``config.workers`` workers until a signal; the exit code of the slowest."""
    if config.workers <= 1:
        import asyncio

        from agent.serving.worker import run_worker

        return asyncio.run(run_worker(config, 0))
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="voxwire-prom-")
    context = multiprocessing.get_context("spawn")
    log_level = logging.getLogger().getEffectiveLevel()
    children: dict[int, BaseProcess] = {}
    restarts: dict[int, int] = {}
    stopping = {"since": 0.0}

    def spawn(index: int) -> None:
        process = context.Process(target=worker_entry, args=(config, index, log_level), name=f"voxwire-w{index}")
        process.start()
        children[index] = process
        logger.info("worker %d started (pid %s)", index, process.pid)

    def on_signal(signum: int, _frame: object) -> None:
        if not stopping["since"]:
            stopping["since"] = time.monotonic()
            logger.info("supervisor: %s, draining %d workers", signal.Signals(signum).name, len(children))
        for process in children.values():
            if process.is_alive() and process.pid:
                os.kill(process.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(config.workers):
            spawn(index)
        exit_code = _supervise(config, children, restarts, stopping, spawn,
                               lambda: on_signal(signal.SIGTERM, None))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return exit_code


def _supervise(config: WorkerConfig, children: dict[int, BaseProcess], restarts: dict[int, int],
               stopping: dict[str, float], spawn: Callable[[int], None], on_stop: Callable[[], None]) -> int:
    from prometheus_client import multiprocess

    worst = 0
    pending_restart: dict[int, float] = {}
    while children or pending_restart:
        sentinels = [p.sentinel for p in children.values()]
        multiprocessing.connection.wait(sentinels, timeout=0.5)
        for index, process in list(children.items()):
            if process.is_alive():
                continue
            process.join()
            del children[index]
            if process.pid:
                multiprocess.mark_process_dead(process.pid)
            code = process.exitcode or 0
            if stopping["since"]:
                worst = max(worst, abs(code))  # a worker that failed its drain fails the exit
                logger.info("worker %d exited (%s)", index, code)
                continue
            if code == EXIT_CONFIG:
                logger.error("worker %d cannot start with this configuration; stopping all workers", index)
                worst = code
                on_stop()
                continue
            restarts[index] = restarts.get(index, 0) + 1
            delay = min(MAX_RESTART_BACKOFF_S, 0.5 * 2 ** (restarts[index] - 1))
            logger.error("worker %d died (exit %s); restarting in %.1f s", index, code, delay)
            pending_restart[index] = time.monotonic() + delay
        now = time.monotonic()
        for index, when in list(pending_restart.items()):
            if stopping["since"]:
                del pending_restart[index]
            elif now >= when:
                del pending_restart[index]
                spawn(index)
        if stopping["since"] and now - stopping["since"] > config.drain_deadline_s + SHUTDOWN_GRACE_S:
            for process in children.values():
                logger.error("worker pid %s did not stop in time; killing it", process.pid)
                process.kill()
    return worst
