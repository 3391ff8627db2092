"""``voxwire serve --transport webrtc``: the page and signaling share the worker's one port.

A real ``voxwire serve`` process: the page at ``/``, an offer answered at
``/offer`` (the call is live in the worker, as ``/readyz`` and ``/metrics``
on the same port show), and a clean drain on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.mqtt.broker import free_port
from tests.webrtc.webrtc_client import PyCaller

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


@pytest.mark.asyncio
async def test_voxwire_serve_webrtc_serves_the_page_and_answers_offers_on_its_port(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "agent.cli", "serve", "--transport", "webrtc", "--host", HOST, "--port", str(port),
           "--agent", "tests.webrtc.webrtc_bots:echo_bot", "--max-sessions", "1", "--cpu-budget", "0",
           "--drain-deadline", "1"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://{HOST}:{port}/"
    caller = PyCaller()
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "voxwire serve did not start listening"
                try:
                    async with http.get(base) as page:
                        assert page.status == 200 and page.content_type == "text/html"
                        assert "<title>voxwire" in await page.text()
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.2)
            async with http.get(base + "config") as config:
                assert await config.json() == {"iceServers": []}
            status, body = await caller.call(base)
            assert status == 200 and body["type"] == "answer" and "m=audio" in body["sdp"], body
            async with http.get(base + "readyz") as ready:
                assert ready.status == 503 and (await ready.json())["reason"] == "busy", "the call is live here"
            async with http.get(base + "metrics") as metrics:
                assert "voxwire_sessions 1.0" in await metrics.text()
            second = PyCaller()
            try:
                refused, why = await second.call(base)
            finally:
                await second.close()
            assert refused == 503 and "busy" in why["error"]
    finally:
        await caller.close()
        proc.send_signal(signal.SIGTERM)
        exit_code = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 15)
    assert exit_code == 0, log.read_text()[-3000:]
