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
bot (``agent.clinic:clinic_bot``) answers.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from agent.serving.transports import TRANSPORTS

if TYPE_CHECKING:
    from agent.serving.worker import WorkerConfig

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("serving")
    group.add_argument("--agent", help="bot factory MODULE:OBJECT (default agent.clinic:clinic_bot)")
    group.add_argument("--host", default="0.0.0.0", help="address for the HTTP endpoints (default 0.0.0.0)")
    group.add_argument("--port", type=int, default=8080, help="HTTP port shared by all workers (default 8080)")
    group.add_argument("--workers", type=int, default=1, help="worker processes, one per core (default 1)")
    group.add_argument("--max-sessions", type=int, help="calls per worker before it answers busy")
    group.add_argument("--cpu-budget", type=float,
                       help="cores a worker may use before refusing calls (default: 85%% of its share; 0: off)")
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


def config_from(args: argparse.Namespace) -> WorkerConfig:
    from agent.serving.worker import (
        WorkerConfig,  # aiohttp, prometheus and psutil: only when serving
    )

    if args.workers < 1:
        raise SystemExit("--workers must be at least 1")
    transports = list(dict.fromkeys(getattr(args, "transport", [])))
    if "mqtt" in transports and not args.mqtt:
        raise SystemExit("--transport mqtt needs the broker: --mqtt mqtt://host:port")
    return WorkerConfig(
        agent=args.agent, host=args.host, port=args.port, workers=args.workers, max_sessions=args.max_sessions,
        cpu_budget=args.cpu_budget, drain_deadline_s=args.drain_deadline, mqtt=args.mqtt,
        mqtt_audio=args.mqtt_audio or "mqtt" in transports, dispatch=args.dispatch, dialer=args.dialer,
        name=args.name, plugins=list(args.plugin), transports=transports,
        sip_port=getattr(args, "sip_port", 5060), sip_advertise=getattr(args, "sip_advertise", None),
        public_url=getattr(args, "public_url", None),
    )


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
