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
    "say": ("tts.voxtral.say", "speak a text through a TTS stage (Voxtral or piper) into a WAV file"),
    "tts-server": ("tts.voxtral.emulator", "emulate a Voxtral server's protocol (piper's voice, not Voxtral)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxwire", description="Real-time voice agents.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(module=module_name)
        _load(module_name, "add_arguments")(command)
    return parser


def _load(module_name: str, attr: str) -> Callable:  # type: ignore[type-arg]
    module = importlib.import_module(module_name)
    return getattr(module, attr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(_load(args.module, "run")(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
