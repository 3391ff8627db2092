"""One browser call, run as its own process (so it can live in a network namespace).

``python tests/webrtc/webrtc_scenario.py --bot clinic --wav caller.wav --record 19 --out DIR``
starts the signaling server with a test bot, lets headless Chromium call it
with ``caller.wav`` as its microphone, and writes what the page recorded
(``page_audio.npy``, ``page.json``) and what the server saw (``server.json``)
into DIR. The test (or bench) that launched it does the judging.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent.calls import CallInfo, CallManager  # noqa: E402
from agent.frames import Frame, MetricsFrame  # noqa: E402
from agent.session import Session  # noqa: E402
from transports.ratelimit import HttpLimits  # noqa: E402
from transports.webrtc import WebRTCServer, allow_loopback_candidates, frame_event  # noqa: E402
from transports.webrtc.browser import (  # noqa: E402
    HeadlessChromium,
    HeadlessFirefox,
    PageReport,
    ReportCollector,
    in_loopback_namespace,
    loopback_namespace_available,
)

import webrtc_bots  # noqa: E402

BOTS = {"echo": webrtc_bots.echo_bot, "clinic": webrtc_bots.clinic_bot}


def prewarm(bot: str) -> None:
    """Load the models before the call, as a long-running server would have."""
    if bot != "clinic":
        return
    from stt import load_model, resolve_model
    from tts.piper import load_voice

    load_model(resolve_model(None), compute_type="int8")
    load_voice(None)


class ServerLog:
    """What the server side saw of each call, timestamped on the monotonic clock."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.events: list[dict[str, Any]] = []

    def hook(self, session: Session, info: CallInfo) -> None:
        def observe(frame: Frame, direction: int) -> None:
            event = frame_event(frame)
            if isinstance(frame, MetricsFrame):
                event = {"type": "metric", "name": frame.name, "turn_id": frame.turn_id, "value": frame.value}
            if event is not None:
                self.events.append({"t": time.monotonic() - self.t0, **event})

        session.subscribe(observe)


async def main(args: argparse.Namespace) -> int:
    allow_loopback_candidates()
    await asyncio.to_thread(prewarm, args.bot)
    manager = CallManager(BOTS[args.bot])
    # The page's test report (/__report) uploads whole recordings: no body cap on this harness's app.
    server = WebRTCServer(manager, "127.0.0.1", 0, http_limits=HttpLimits(max_body_bytes=0))
    log = ServerLog()
    calls_seen: list[Any] = []
    manager.on_session(log.hook)
    manager.on_session(lambda session, info: calls_seen.append(server.calls.get(info.session_id)))
    collector = ReportCollector()
    collector.install(server.app)
    await server.start()
    collector.arm()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    query = urlencode({"autostart": 1, "record": args.record, "report": "/__report", "processing": 0})
    if args.say:  # type a question, and stop recording once its answer has been heard
        query += "&" + urlencode({"say": args.say, "say_at": args.say_at, "until_answered": 1})
    url = f"{server.url}?{query}"
    browser = (HeadlessFirefox(url, log_path=out / "browser.log") if args.browser == "firefox"
               else HeadlessChromium(url, Path(args.wav), log_path=out / "browser.log"))
    page_error = None
    try:
        async with browser:
            report = await collector.wait(args.record + args.timeout)
            deadline = time.monotonic() + 5
            while server.calls and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        report.save(out)
        page_error = report.error
    finally:
        await server.close()
    call = calls_seen[0] if calls_seen else None
    summary = {
        "namespace": os.environ.get("VOXWIRE_NETNS") == "1",
        "events": log.events,
        "turns": manager.results[0].turns if manager.results else [],
        "session_reason": manager.results[0].reason if manager.results else None,
        "close_reason": call.close_reason if call else None,
        "timings_ms": {
            k: round((v - call.timings["offer"]) * 1000.0, 1) for k, v in call.timings.items()
        } if call else {},
        "frames_received": call.input.frames_received if call else 0,
        "bot_frames_sent": call.output.track.audio_frames_sent if call else 0,
        "page_error": page_error,
    }
    (out / "server.json").write_text(json.dumps(summary, default=str))
    return 0



# ------------------------------------------------------------------ launcher


@dataclass
class ScenarioResult:
    page: PageReport
    server: dict[str, Any]
    namespace: bool
    out: Path


def run_scenario(
    bot: str, wav: Path | None, record_s: float, out: Path, *, browser: str = "chromium", say: str | None = None,
    say_at_s: float = 1.0, namespace: bool | None = None, timeout_s: float = 60.0,
) -> ScenarioResult:
    """Run one browser call in a child process, inside a loopback-only network
    namespace when this machine allows it (else in the host namespace).

    ``namespace=False`` forces the host namespace: Firefox gathers no UDP
    candidates in a namespace whose only interface is ``lo`` (it offers just a
    TCP candidate on 0.0.0.0, which aiortc cannot use).
    """
    argv = [sys.executable, str(Path(__file__).resolve()), "--bot", bot, "--browser", browser,
            "--record", str(record_s), "--out", str(out), "--timeout", str(timeout_s)]
    argv += ["--wav", str(wav)] if wav else []
    argv += ["--say", say, "--say-at", str(say_at_s)] if say else []
    if namespace is None:
        namespace = loopback_namespace_available()
    env = dict(os.environ, VOXWIRE_NETNS="1" if namespace else "0")
    command = in_loopback_namespace(argv) if namespace else argv
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=record_s + timeout_s + 60)
    (out / "scenario.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0 or not (out / "page.json").exists():
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"browser scenario failed (exit {done.returncode}):\n{tail}")
    server = json.loads((out / "server.json").read_text())
    return ScenarioResult(page=PageReport.load(out), server=server, namespace=namespace, out=out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--bot", choices=sorted(BOTS), required=True)
    parser.add_argument("--wav", help="the caller's microphone (Chromium only)")
    parser.add_argument("--browser", choices=("chromium", "firefox"), default="chromium")
    parser.add_argument("--say", help="text the page types into its composer after connecting")
    parser.add_argument("--say-at", type=float, default=1.0, help="seconds after connecting")
    parser.add_argument("--record", type=float, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aioice").setLevel(logging.WARNING)
    sys.exit(asyncio.run(main(parser.parse_args())))
