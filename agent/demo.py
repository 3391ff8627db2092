"""``voxwire demo``: a call through the core graph, with no models yet.

A scripted caller and a recording speaker talk through a pipeline; the demo
prints what the graph costs per frame and how fast an interrupt silences the
bot. The speech models replace this with a real conversation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import runpy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def run(args: argparse.Namespace) -> int:
    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "overhead.py")
    module = runpy.run_path(bench)
    ns = argparse.Namespace(quick=True, json=args.json)
    result = asyncio.run(module["main"](ns))
    module["report"](result)
    if args.json:
        print(json.dumps(result))
    return 0
