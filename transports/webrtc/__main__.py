"""Talk to a bot in the browser: ``python -m transports.webrtc [--agent MODULE:OBJECT]``.

A single-process stand-in for ``voxwire serve --transport webrtc``: it serves
the page and answers calls until Ctrl-C. ``VOXWIRE_WEBRTC_TOKEN`` turns on the
bearer token (open the page with ``?token=...``). Browsers only give microphones to
pages on ``localhost`` or HTTPS, so open it as http://localhost:PORT/ (or put
it behind a TLS proxy).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from agent.calls import DEFAULT_MAX_SESSIONS, CallManager, load_bot
from transports.webrtc.plugin import ice_servers_from_env
from transports.webrtc.server import serve_webrtc


async def main(args: argparse.Namespace) -> None:
    manager = CallManager(load_bot(args.agent), max_sessions=args.max_sessions)
    server = await serve_webrtc(
        manager, args.host, args.port,
        token=os.environ.get("VOXWIRE_WEBRTC_TOKEN") or None,
        ice_servers=[*args.ice_server, *ice_servers_from_env(os.environ.get("VOXWIRE_ICE_SERVERS"))],
        loopback_candidates=args.loopback_candidates,
    )
    print(f"voxwire: open http://localhost:{server.port}/ and press Call (Ctrl-C to stop)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.close()
    await manager.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m transports.webrtc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", help="bot factory MODULE:OBJECT (default agent.clinic:clinic_bot)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--max-sessions", type=int, default=DEFAULT_MAX_SESSIONS,
                        help=f"calls at once before answering busy (default {DEFAULT_MAX_SESSIONS})")
    parser.add_argument("--ice-server", action="append", default=[], metavar="URL",
                        help="STUN server URL for both ends (repeatable; none by default). TURN servers with "
                             "credentials: VOXWIRE_ICE_SERVERS='[{\"urls\": ..., \"username\": ..., \"credential\": ...}]'")
    parser.add_argument("--loopback-candidates", action="store_true",
                        help="offer 127.0.0.1 as an ICE candidate (machines with no network)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aioice").setLevel(logging.WARNING)
    asyncio.run(main(args))
