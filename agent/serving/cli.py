"""Command-line options for serving: ``voxwire serve`` (and ``python -m agent.serving``).

``add_arguments`` and ``run`` follow the ``agent.cli`` subcommand contract, so
the ``serve`` command can use them directly or merge them with its own
transport options (pass transports as ``--plugin MODULE:FUNCTION``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from agent.serving.supervisor import serve_workers
from agent.serving.worker import WorkerConfig


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


def config_from(args: argparse.Namespace) -> WorkerConfig:
    if args.workers < 1:
        raise SystemExit("--workers must be at least 1")
    return WorkerConfig(
        agent=args.agent, host=args.host, port=args.port, workers=args.workers, max_sessions=args.max_sessions,
        cpu_budget=args.cpu_budget, drain_deadline_s=args.drain_deadline, mqtt=args.mqtt,
        mqtt_audio=args.mqtt_audio, dispatch=args.dispatch, dialer=args.dialer, name=args.name,
        plugins=list(args.plugin),
    )


def run(args: argparse.Namespace) -> int:
    return serve_workers(config_from(args))


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
