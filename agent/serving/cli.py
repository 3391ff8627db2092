"""Command-line options for serving: ``voxwire serve`` (and ``python -m agent.serving``).

``add_arguments`` and ``run`` follow the ``agent.cli`` subcommand contract.
Transports are chosen with ``--transport`` (repeatable)::

    voxwire serve --transport webrtc [--agent MODULE:OBJECT] [--host H --port P]
    voxwire serve --transport sip --sip-port 5060 [--sip-advertise 203.0.113.7]
    voxwire serve --transport twilio --port 8080 --public-url https://bot.example.com
    voxwire serve --transport mqtt --mqtt mqtt://broker:1883

``webrtc`` and the carriers share ``--host``/``--port`` with ``/healthz``,
``/readyz``, ``/metrics`` and ``POST /calls``; ``sip`` listens on UDP
``--sip-port``. Every worker of ``--workers N`` binds the same ports with
SO_REUSEPORT. For SIP over UDP the kernel picks the worker by hashing the
datagram's source and destination address and port, so all messages of a
dialog reach the worker that answered it as long as the peer keeps sending
from one address and port (SIP phones, trunks and proxies do); a peer that
changes its source port mid-dialog would reach another worker, which answers
``481 Call/Transaction Does Not Exist``. Without ``--agent`` the embedded demo
bot (``agent.clinic:clinic_bot``) answers. Every listener has per-source abuse
limits (``--http-*``, ``--sip-*``; :mod:`transports.ratelimit`), and a worker
takes at most ``--max-sessions`` calls (100 by default).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from typing import TYPE_CHECKING

from agent.calls import DEFAULT_MAX_SESSIONS, DEFAULT_MAX_STT_WAIT_S
from agent.serving.transports import TRANSPORTS
from transports.ratelimit import HttpLimits, SipLimits

if TYPE_CHECKING:
    from agent.serving.worker import WorkerConfig

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("serving")
    group.add_argument("--agent", help="bot factory MODULE:OBJECT (default agent.clinic:clinic_bot)")
    group.add_argument("--host", default="0.0.0.0", help="address for the HTTP endpoints (default 0.0.0.0)")
    group.add_argument("--port", type=int, default=8080, help="HTTP port shared by all workers (default 8080)")
    group.add_argument("--workers", type=int, default=1, help="worker processes, one per core (default 1)")
    group.add_argument("--max-sessions", type=int, default=DEFAULT_MAX_SESSIONS,
                       help=f"calls per worker before it answers busy (default {DEFAULT_MAX_SESSIONS})")
    group.add_argument("--cpu-budget", type=float,
                       help="cores a worker may use before refusing calls (default: 85%% of its share; 0: off)")
    group.add_argument("--max-stt-wait", type=float, default=DEFAULT_MAX_STT_WAIT_S, metavar="SECONDS",
                       help="refuse calls while speech-to-text jobs wait longer than this for a thread "
                            f"(default {DEFAULT_MAX_STT_WAIT_S}; 0: off)")
    group.add_argument("--drain-deadline", type=float, default=300.0,
                       help="seconds live calls may run on after SIGTERM (default 300)")
    group.add_argument("--mqtt", metavar="URL", help="mqtt[s]://[user:pass@]host:port[/prefix][?ca=FILE]")
    group.add_argument("--mqtt-audio", action="store_true", help="answer device calls on MQTT audio topics")
    group.add_argument("--dispatch", action="store_true", help="take outbound-call jobs from the MQTT queue")
    group.add_argument("--dialer", metavar="MODULE:FUNCTION", help="places outbound calls (POST /calls, --dispatch)")
    group.add_argument("--name", help="worker name prefix (default: the host name)")
    group.add_argument("--plugin", action="append", default=[], metavar="MODULE:FUNCTION",
                       help="start a transport in every worker (repeatable)")
    transports = parser.add_argument_group("transports")
    transports.add_argument("--transport", action="append", default=[], choices=TRANSPORTS, metavar="NAME",
                            help=f"answer calls on this transport (repeatable): {', '.join(TRANSPORTS)}")
    transports.add_argument("--sip-port", type=int, default=5060, help="UDP port for --transport sip (default 5060)")
    transports.add_argument("--sip-advertise", metavar="HOST",
                            help="address put in SIP Contact and SDP (default: --host, or this machine's "
                                 "outward address when --host is 0.0.0.0)")
    transports.add_argument("--public-url", metavar="URL",
                            help="https://... where carriers reach this service (webhook answers and stream URLs)")
    transports.add_argument("--stream-start-timeout", type=float, default=10.0, metavar="S",
                            help="seconds a carrier media socket has to send a valid start (default 10)")
    http, sip = HttpLimits(), SipLimits()
    limits = parser.add_argument_group("abuse limits, per source address (a rate, --http-max-open or "
                                       "--http-max-body of 0 turns that limit off)")
    limits.add_argument("--http-rate", type=float, default=http.rate, metavar="N",
                        help=f"HTTP requests per second, sustained (default {http.rate:g})")
    limits.add_argument("--http-burst", type=int, default=http.burst, metavar="N",
                        help=f"HTTP requests at once before the rate applies (default {http.burst})")
    limits.add_argument("--http-max-open", type=int, default=http.max_open, metavar="N",
                        help=f"open HTTP requests and WebSockets (default {http.max_open}; keep it "
                             "above the calls one carrier address brings)")
    limits.add_argument("--http-max-body", type=int, default=http.max_body_bytes, metavar="BYTES",
                        help=f"HTTP request body size (default {http.max_body_bytes})")
    limits.add_argument("--trusted-proxy", action="append", default=[], metavar="CIDR",
                        help="a reverse proxy or load balancer (address or network, repeatable) whose "
                             "X-Forwarded-For names the client the HTTP limits apply to")
    limits.add_argument("--sip-rate", type=float, default=sip.rate, metavar="N",
                        help=f"SIP datagrams per second, sustained (default {sip.rate:g})")
    limits.add_argument("--sip-burst", type=int, default=sip.burst, metavar="N",
                        help=f"SIP datagrams at once before the rate applies (default {sip.burst})")


def config_from(args: argparse.Namespace) -> WorkerConfig:
    from agent.serving.worker import (
        WorkerConfig,  # aiohttp, prometheus and psutil: only when serving
    )
    from transports.telephony.stream_auth import SECRET_ENV

    if args.workers < 1:
        raise SystemExit("--workers must be at least 1")
    if (args.http_rate > 0 and args.http_burst < 1) or (args.sip_rate > 0 and args.sip_burst < 1):
        raise SystemExit("--http-burst and --sip-burst must be at least 1 while their rate is on")
    transports = list(dict.fromkeys(getattr(args, "transport", [])))
    if "mqtt" in transports and not args.mqtt:
        raise SystemExit("--transport mqtt needs the broker: --mqtt mqtt://host:port")
    return WorkerConfig(
        agent=args.agent, host=args.host, port=args.port, workers=args.workers, max_sessions=args.max_sessions,
        cpu_budget=args.cpu_budget, max_stt_wait_s=args.max_stt_wait, drain_deadline_s=args.drain_deadline, mqtt=args.mqtt,
        mqtt_audio=args.mqtt_audio or "mqtt" in transports, dispatch=args.dispatch, dialer=args.dialer,
        name=args.name, plugins=list(args.plugin), transports=transports,
        sip_port=getattr(args, "sip_port", 5060), sip_advertise=getattr(args, "sip_advertise", None),
        public_url=getattr(args, "public_url", None),
        http_limits=_http_limits(args),
        sip_limits=SipLimits(rate=args.sip_rate, burst=args.sip_burst),
        stream_start_timeout_s=args.stream_start_timeout,
        # One secret for every worker, so a stream may reach another worker than its webhook did.
        stream_secret=os.environ.get(SECRET_ENV) or secrets.token_urlsafe(32),
    )


def _http_limits(args: argparse.Namespace) -> HttpLimits:
    try:
        return HttpLimits(rate=args.http_rate, burst=args.http_burst, max_open=args.http_max_open,
                          max_body_bytes=args.http_max_body, trusted_proxies=tuple(args.trusted_proxy))
    except ValueError as exc:
        raise SystemExit(f"--trusted-proxy: {exc}") from None


def run(args: argparse.Namespace) -> int:
    config = config_from(args)
    if not config.plugin_specs() and not config.mqtt_audio and not config.dialer:
        logger.warning("no --transport given: workers answer only /healthz, /readyz and /metrics "
                       "(add e.g. --transport webrtc to talk to the bot in a browser)")
    from agent.serving.supervisor import serve_workers

    return serve_workers(config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.serving", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s supervisor %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
