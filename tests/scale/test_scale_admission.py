"""Load-based admission in one worker: a CPU budget that refuses calls, over HTTP too."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from agent.calls import CallManager, CallRejected
from agent.serving.admission import CpuBudget
from agent.serving.http import make_app
from agent.serving.jobs import CallJob, loopback_dial
from tests.mqtt.broker import free_port


class Burner:
    """Burns about one core in a thread that releases the GIL (hashing 1 MB blocks)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._burn, daemon=True)

    def _burn(self) -> None:
        block = b"x" * (1 << 20)
        while not self._stop.is_set():
            hashlib.sha256(block).digest()

    def __enter__(self) -> Burner:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def until(predicate, timeout: float) -> float:  # type: ignore[no-untyped-def]
    began = time.monotonic()
    while not predicate():
        assert time.monotonic() - began < timeout, "condition not reached in time"
        await asyncio.sleep(0.05)
    return time.monotonic() - began


@pytest_asyncio.fixture(loop_scope="function")
async def worker() -> AsyncIterator[tuple[CallManager, CpuBudget, str]]:
    manager = CallManager(lambda info: [])
    budget = CpuBudget(0.4, max_machine=1.01, interval_s=0.1, window_s=0.5)
    await budget.start()
    manager.add_admission_check(budget.check)
    runner = web.AppRunner(make_app(manager, worker="w0", dialer=loopback_dial))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True).start()
    yield manager, budget, f"http://127.0.0.1:{port}"
    await runner.cleanup()
    await budget.close()
    await manager.close()


async def post_call(base: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/calls", json={"to": "sip:x@y", "metadata": {"duration_s": 0.2}}) as r:
            return r.status, await r.json()


@pytest.mark.asyncio(loop_scope="function")
async def test_a_worker_over_its_cpu_budget_refuses_calls_then_recovers(worker) -> None:  # type: ignore[no-untyped-def]
    manager, budget, base = worker
    await asyncio.sleep(0.5)
    assert budget.check() is None and (await post_call(base))[0] == 201
    with Burner():
        await until(lambda: budget.check() == "cpu_budget", 5)
        assert manager.refusal() == "cpu_budget"
        with pytest.raises(CallRejected, match="cpu_budget"):
            await loopback_dial(manager, CallJob(to="sip:x@y", metadata={"duration_s": 0.1}))
        status, body = await post_call(base)
        assert (status, body["reason"]) == (503, "cpu_budget")
        async with aiohttp.ClientSession() as http, http.get(f"{base}/readyz") as ready:
            assert ready.status == 503 and (await ready.json())["reason"] == "cpu_budget"
    recovered_in = await until(lambda: budget.check() is None, 5)
    assert recovered_in < 3 and (await post_call(base))[0] == 201
    assert budget.process_cores < 0.4


@pytest.mark.asyncio(loop_scope="function")
async def test_bad_call_requests_are_answered_not_crashed(worker) -> None:  # type: ignore[no-untyped-def]
    _, _, base = worker
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/calls", data=b"{nope") as r:
            assert r.status == 400
        async with http.post(f"{base}/calls", json={"to": ""}) as r:
            assert r.status == 400 and "'to'" in (await r.json())["reason"]
        async with http.post(f"{base}/calls", data=b"x" * 100_000) as r:
            assert r.status == 413
        async with http.get(f"{base}/healthz") as r:
            assert r.status == 200 and (await r.json())["worker"] == "w0"


@pytest.mark.asyncio(loop_scope="function")
async def test_a_worker_whose_speech_to_text_queues_refuses_calls_until_it_drains() -> None:
    """The soak's failure: 100 calls on 2 cores, CPU figure tolerable, every answer 4 s late.

    Real tiny.en transcriptions (more than the pool has threads) make jobs wait
    for a thread; while they wait longer than the limit new calls are refused
    with ``stt_backlog``, and once the queue drains and the window passes the
    worker takes calls again.
    """
    from agent.serving.admission import attach_admission
    from agent.workers import STT_POOL, pool_size, run_blocking
    from stt.clip import transcribe_clip
    from stt.models import load_model
    from tests.speech.helpers import speech

    model = await run_blocking(load_model, pool=STT_POOL)
    question = speech("What are your opening hours on Saturday and can I book an appointment for my son?")
    manager = CallManager(lambda info: [])
    assert await attach_admission(manager, cpu_budget=0, max_stt_wait_s=0.3) is None  # STT check only
    assert manager.refusal() is None
    jobs = [asyncio.ensure_future(run_blocking(transcribe_clip, model, question, pool=STT_POOL))
            for _ in range(4 * pool_size(STT_POOL))]
    await until(lambda: manager.refusal() == "stt_backlog", 20)
    with pytest.raises(CallRejected, match="stt_backlog"):
        manager.admit("sip")
    transcripts = await asyncio.gather(*jobs)
    assert all("opening hours" in t.text.lower() for t in transcripts)  # the queued work was done, not dropped
    recovered_in = await until(lambda: manager.refusal() is None, 10)
    assert recovered_in < 4
    await manager.close()
