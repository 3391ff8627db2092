"""``--workers 2`` as real processes: one shared port, admission, drain, restarts.

The supervisor runs as its own process, exactly as ``voxwire serve`` would,
with the MQTT bus on a real mosquitto so the calls' fates can be watched from
outside. Calls are loopback calls (caller silence for ``duration_s``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.mqtt.broker import Broker, free_port
from tests.mqtt.helpers import Watcher

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


class Served:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, prefix: str, log: Path) -> None:
        self.proc, self.port, self.prefix, self.log = proc, port, prefix, log

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    async def request(self, method: str, path: str, json: Any = None) -> tuple[int, dict, dict]:
        """One request on a fresh connection, so SO_REUSEPORT may pick either worker."""
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            async with http.request(method, self.url(path), json=json) as response:
                body = await response.json() if response.content_type == "application/json" else {}
                return response.status, body, dict(response.headers)

    async def text(self, path: str) -> str:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            async with http.get(self.url(path)) as response:
                return await response.text()

    async def worker_pids(self, timeout: float = 30.0) -> set[int]:
        """Wait until both workers answer on the shared port."""
        pids: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(pids) < 2 and time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                status, body, _ = await self.request("GET", "/healthz")
                pids.add(body["pid"])
            except aiohttp.ClientError:
                await asyncio.sleep(0.2)
        return pids


@pytest.fixture
def serve(tmp_path: Path, broker: Broker) -> Iterator[Any]:
    started: list[Served] = []

    def start(*extra: str, max_sessions: int = 1, drain_deadline: float = 10.0) -> Served:
        port, prefix = free_port(), f"sv{uuid.uuid4().hex[:6]}"
        log = tmp_path / f"serve-{port}.log"
        prom = tmp_path / f"prom-{port}"
        prom.mkdir()
        cmd = [sys.executable, "-m", "agent.serving", "--workers", "2", "--host", HOST, "--port", str(port),
               "--agent", "tests.scale.bots:quiet", "--dialer", "agent.serving.jobs:loopback_dial",
               "--max-sessions", str(max_sessions), "--cpu-budget", "0", "--name", "t",
               "--drain-deadline", str(drain_deadline), "--mqtt", broker.url(prefix=prefix), *extra]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(prom)})
        served = Served(proc, port, prefix, log)
        started.append(served)
        return served

    yield start
    for served in started:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait()


def call_job(seconds: float) -> dict:
    return {"to": "sip:+15550100@loopback", "metadata": {"duration_s": seconds}}


@pytest.mark.asyncio
async def test_two_workers_share_a_port_refuse_the_third_call_and_drain_on_sigterm(serve: Any) -> None:
    served: Served = serve(max_sessions=1)
    pids = await served.worker_pids()
    assert len(pids) == 2, f"both workers answer on port {served.port}: {pids}"
    async with Watcher(HOST, int(served_broker_port(served)), f"{served.prefix}/#") as watch:
        # Fill both workers (one call each). The kernel picks the worker per connection,
        # so a call may land on the full one first: that one is refused, as it must be.
        accepted: dict[int, str] = {}
        for _ in range(40):
            status, body, _ = await served.request("POST", "/calls", call_job(4.0))
            if status == 201:
                accepted[body["pid"]] = body["session_id"]
            else:
                assert (status, body["reason"]) == (503, "busy")
            if len(accepted) == 2:
                break
        assert set(accepted) == pids
        refusals = [await served.request("POST", "/calls", call_job(4.0)) for _ in range(6)]
        assert all(status == 503 for status, _, _ in refusals)
        assert {body["reason"] for _, body, _ in refusals} == {"busy"}
        assert all(headers["Retry-After"] == "5" and "busy" in body["prompt"] for _, body, headers in refusals)
        assert {body["worker_pid"] for _, body, _ in refusals} == pids
        metrics = await served.text("/metrics")
        assert metric(metrics, "voxwire_sessions") == 2.0, "both workers' sessions are summed in one scrape"
        assert metric(metrics, 'voxwire_calls_refused_total{reason="busy"}') >= 6

        # SIGTERM mid-call: no new calls, live calls finish, then the workers exit.
        sent_at = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        await watch.wait_for(lambda: [e for e in watch.events("worker_status") if e["state"] == "draining"], 5)
        status, body, _ = await served.request("POST", "/calls", call_job(1.0))
        assert (status, body["reason"]) == (503, "draining")
        status, body, _ = await served.request("GET", "/readyz")
        assert (status, body["reason"]) == (503, "draining")
        ended = await watch.wait_for(lambda: len(watch.events("call_ended")) == 2 and watch.events("call_ended"), 10)
        exit_code = await asyncio.get_running_loop().run_in_executor(None, served.proc.wait, 15)
        exited_after = time.monotonic() - sent_at
    assert {e["session"] for e in ended} == set(accepted.values())
    assert {e["reason"] for e in ended} == {"script_finished"}, "drain let the calls finish"
    assert all(e["duration_s"] >= 3.9 for e in ended)
    assert exit_code == 0 and exited_after >= 1.0, served.log.read_text()[-2000:]
    offline = {e["worker"] for e in watch.events("worker_status") if e["state"] == "offline"}
    assert offline == {"t-0", "t-1"}


@pytest.mark.asyncio
async def test_a_dead_worker_is_restarted_and_the_drain_deadline_ends_long_calls(serve: Any) -> None:
    served: Served = serve(max_sessions=4, drain_deadline=1.0)
    pids = await served.worker_pids()
    async with Watcher(HOST, int(served_broker_port(served)), f"{served.prefix}/#") as watch:
        victim = sorted(pids)[0]
        os.kill(victim, signal.SIGKILL)
        await watch.wait_for(lambda: [e for e in watch.events("worker_status") if e["state"] == "offline"], 10)
        replacement = await served.worker_pids()
        assert len(replacement) == 2 and victim not in replacement
        status, body, _ = await served.request("POST", "/calls", call_job(30.0))
        assert status == 201
        served.proc.send_signal(signal.SIGTERM)
        ended = await watch.event("call_ended", timeout=8)
        exit_code = await asyncio.get_running_loop().run_in_executor(None, served.proc.wait, 15)
    assert ended["reason"] == "drain_deadline" and ended["duration_s"] < 5
    assert exit_code == 0


def served_broker_port(served: Served) -> str:
    """The plain MQTT port from the worker command line (the fixture's broker)."""
    args = served.proc.args
    assert isinstance(args, list)
    url = args[args.index("--mqtt") + 1]
    return url.rsplit(":", 1)[1].split("/", 1)[0]


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{text[:3000]}")


@pytest.mark.asyncio
async def test_workers_that_cannot_log_in_to_the_broker_stop_with_a_clear_error(tmp_path: Path,
                                                                                broker: Broker) -> None:
    log = tmp_path / "bad-login.log"
    cmd = [sys.executable, "-m", "agent.serving", "--workers", "2", "--host", HOST, "--port", str(free_port()),
           "--agent", "tests.scale.bots:quiet", "--name", "t", "--mqtt", broker.url("password", password="nope")]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        code = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == 78, text[-2000:]
    assert "refused the login of user 'agent'" in text and "nope" not in text
    assert "restarting" not in text
