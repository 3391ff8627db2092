"""Coverage-guided fuzzing (atheris / libFuzzer) of the wire parsers.

    python bench/fuzz.py sip --seconds 30        # one target in this process
    python bench/fuzz.py all --seconds 30 --json # every target, one subprocess each

Targets: ``sip`` (message parser plus what the UA does next: 400 for the
partial, 200 + re-parse for the rest), ``sdp`` (parse + negotiate + answer),
``rtp`` (header parser), ``carrier`` (the five media-stream serializers) and
``mqtt`` (command payloads). The checks are ``tests/reliability/contracts.py``,
the same the hypothesis suite uses; any other exception is a crash, saved by
libFuzzer under ``out/reliability/fuzz/`` and reported with its input. The SIP
torture corpus seeds the SIP and SDP runs.

Requires ``atheris`` (3.0.0 ships a manylinux wheel for CPython 3.11).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "out" / "reliability" / "fuzz"
TARGETS = ("sip", "sdp", "rtp", "carrier", "mqtt")


def _target(name: str):  # type: ignore[no-untyped-def]
    """The one-input function for ``name``, with the code under test instrumented."""
    import atheris

    with atheris.instrument_imports(include=["transports"]):
        from tests.reliability import contracts
        from transports.mqtt.schema import CommandError, parse_command
        from transports.telephony.serializers import SERIALIZERS

    if name == "sip":
        return contracts.sip_outcome
    if name == "sdp":
        return lambda data: contracts.sdp_outcome(data.decode("utf-8", "replace"))
    if name == "rtp":
        return contracts.rtp_outcome
    if name == "mqtt":
        def mqtt(data: bytes) -> None:
            try:
                parse_command(data)
            except CommandError as exc:
                assert exc.reason
        return mqtt
    if name == "carrier":
        carriers = list(SERIALIZERS.values())

        def carrier(data: bytes) -> None:
            if not data:
                return
            serializer = carriers[data[0] % len(carriers)]()
            # A start message first, so media handling is reached too; then the fuzzed messages.
            for chunk in [contracts.CARRIER_STARTS[serializer.name].encode(), *data[1:].split(b"\n")]:
                if data[0] & 0x80:  # the high bit sends binary frames (Vonage audio, or a protocol error)
                    contracts.carrier_outcome(serializer, chunk)
                else:
                    contracts.carrier_outcome(serializer, chunk.decode("utf-8", "replace"))
        return carrier
    raise SystemExit(f"unknown target {name!r}; known: {', '.join(TARGETS)}")


def _seeds(name: str) -> Path:
    seeds = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    from tests.reliability import contracts

    if name in ("sip", "sdp"):
        for file in sorted(contracts.EXPECT):
            data = contracts.load(file)
            if name == "sdp":
                data = data.partition(b"\r\n\r\n")[2] or b"v=0\r\n"
            (seeds / file).write_bytes(data)
    elif name == "carrier":
        for i, start in enumerate(contracts.CARRIER_STARTS.values()):
            (seeds / f"start-{i}").write_bytes(bytes([i]) + start.encode())
    return seeds


def run_one(name: str, seconds: int, runs: int | None) -> None:
    import atheris

    one = _target(name)
    OUT.mkdir(parents=True, exist_ok=True)
    args = [sys.argv[0], str(_seeds(name)), f"-max_total_time={seconds}", "-print_final_stats=1",
            f"-artifact_prefix={OUT}/{name}-", "-rss_limit_mb=1024", "-max_len=4096", "-timeout=5"]
    if runs:
        args.append(f"-runs={runs}")
    atheris.Setup(args, one)
    atheris.Fuzz()


def run_all(targets: list[str], seconds: int) -> list[dict[str, object]]:
    """Each target in a subprocess (libFuzzer exits the process on a crash)."""
    results = []
    for name in targets:
        started = time.monotonic()
        proc = subprocess.run([sys.executable, __file__, name, "--seconds", str(seconds)],
                              capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": "0"})
        log = proc.stdout + proc.stderr
        execs = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
        crash = re.search(r"(Test unit written to|artifact_prefix.*?)(\S+)", log)
        error = "\n".join(line for line in log.splitlines() if "Error" in line or "Traceback" in line)[:800]
        results.append({
            "target": name, "seconds": round(time.monotonic() - started, 1), "exit": proc.returncode,
            "executions": int(execs.group(1)) if execs else None,
            "crash_file": crash.group(2) if proc.returncode and crash else None,
            "error": error if proc.returncode else None,
        })
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", choices=[*TARGETS, "all"])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--runs", type=int, default=None, help="stop after this many inputs (one target)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.target != "all":
        run_one(args.target, args.seconds, args.runs)
        return 0
    results = run_all(list(TARGETS), args.seconds)
    if args.json:
        print(json.dumps(results))
    else:
        for row in results:
            status = "ok" if row["exit"] == 0 else f"CRASH ({row['crash_file']})\n{row['error']}"
            print(f"{row['target']:8} {row['executions']} inputs in {row['seconds']} s: {status}")
    return 0 if all(r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
