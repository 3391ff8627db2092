"""The ``voxwire`` command line: demo, serve, say, tts-server.

Each subcommand lives in its own module and is imported only when used, so
``voxwire --help`` works on a worker without the speech models installed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable

# subcommand → (module, help). Each module has ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("agent.demo", "an offline simulated phone call through the whole graph"),
    "serve": ("agent.serving.cli", "answer calls (WebRTC page, SIP, carrier media streams, MQTT audio) "
                                   "with worker processes, admission, drain, health and metrics"),
    "say": ("tts.voxtral.say", "speak a text through a TTS stage (Voxtral or piper) into a WAV file"),
    "tts-server": ("tts.voxtral.emulator", "emulate a Voxtral server's protocol (piper's voice, not Voxtral)"),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the chosen subcommand's module is imported (for its options).

    So ``voxwire serve`` never imports the demo's speech stack, and a
    subcommand whose optional dependencies are missing cannot break the others.
    """
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = argparse.ArgumentParser(prog="voxwire", description="Real-time voice agents.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(module=module_name)
        if name == chosen:
            _load(module_name, "add_arguments")(command)
    return parser


def _load(module_name: str, attr: str) -> Callable:  # type: ignore[type-arg]
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(_load(args.module, "run")(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
