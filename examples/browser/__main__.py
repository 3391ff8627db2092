"""``python -m examples.browser``: the voice assistant in your browser, at http://localhost:8080/.

Serves the WebRTC page and answers each "Call" with :func:`examples.browser.bot.assistant_bot`.
Browsers only give a microphone to ``localhost`` or HTTPS pages, so open it as
http://localhost:PORT/ (or put it behind a TLS proxy). ``VOXWIRE_WEBRTC_TOKEN``
turns on the bearer token (open the page with ``?token=...``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from agent.calls import CallManager
from examples.browser.bot import assistant_bot, warm_up
from transports.webrtc import serve_webrtc


async def main(args: argparse.Namespace) -> None:
    await asyncio.to_thread(warm_up)
    manager = CallManager(assistant_bot, max_sessions=args.max_calls)
    server = await serve_webrtc(manager, args.host, args.port, token=os.environ.get("VOXWIRE_WEBRTC_TOKEN") or None,
                                loopback_candidates=args.loopback_candidates)
    print(f"open http://localhost:{server.port}/ and press Call (Ctrl-C to stop)", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.close()
    await manager.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m examples.browser", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--max-calls", type=int, default=4)
    parser.add_argument("--loopback-candidates", action="store_true", help="machines with no network interface")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aioice", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
