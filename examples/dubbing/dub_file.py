"""Dub a recording: ``python -m examples.dubbing [INPUT.wav] [-o OUT.wav] [--from es] [--to en]``.

The file is fed through the same graph a live call uses (four times faster
than real time: every stage runs on the file's own media time), the speaker's
voice is cloned from the file itself, and each dubbed sentence is placed at
its source sentence's start in the output WAV. Without INPUT a short Spanish
demo clip is made with espeak-ng.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from agent.audio import resample
from agent.session import Session
from agent.workers import run_blocking
from examples.dubbing.bot import DubbingGraph, build_dubbing
from examples.dubbing.timeline import Placement, place
from examples.dubbing.translate import DEMO_PHRASES, Translation
from examples.dubbing.voice import close_local_emulator, reference_from
from transports.local import ScriptedInput, Segment
from tts.voxtral import SAMPLE_RATE

INPUT_RATE = 16000
DEMO_SENTENCES = [DEMO_PHRASES[i][0] for i in (1, 2, 6)]  # ones espeak-ng says clearly enough


@dataclass
class DubResult:
    output: Path
    translations: list[Translation]
    placements: list[Placement]
    graph: DubbingGraph
    source_s: float
    wall_s: float


def demo_clip(path: Path, sentences: list[str] = DEMO_SENTENCES, pause_s: float = 0.8) -> Path:
    """A Spanish speaker (espeak-ng), one sentence after another with a pause between."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SystemExit("the demo clip needs espeak-ng (apt-get install espeak-ng), or give your own WAV file")
    parts = []
    for sentence in sentences:
        wav = subprocess.run([espeak, "-v", "es", "-s", "145", "--stdout", sentence], capture_output=True,
                             check=True).stdout
        import io

        audio, rate = soundfile.read(io.BytesIO(wav), dtype="int16")
        parts += [np.zeros(int(pause_s * rate), dtype=np.int16), audio]
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.concatenate(parts + [np.zeros(int(pause_s * rate), dtype=np.int16)]), rate)
    return path


async def dub_file(source_path: Path, output: Path, *, source: str = "es", target: str = "en",
                   speed: float = 4.0) -> DubResult:
    data, rate = await run_blocking(lambda: soundfile.read(str(source_path), dtype="int16", always_2d=True))
    mono = data.mean(axis=1).astype(np.int16)
    reference = await run_blocking(reference_from, mono, rate)
    graph = await build_dubbing(source, target, live=False, reference=reference)
    feed = ScriptedInput([Segment(pcm=resample(mono, rate, INPUT_RATE).astype(np.int16)), Segment(gap_s=1.0)],
                         sample_rate=INPUT_RATE, speed=speed)
    began = time.monotonic()
    session = Session([feed, *graph.nodes], input_sample_rate=INPUT_RATE, output_sample_rate=SAMPLE_RATE)
    result = await session.run()
    if result.error:
        raise RuntimeError(f"dubbing failed: {result.error}")
    assert graph.collector is not None
    source_s = len(mono) / rate
    track, placements = await run_blocking(place, graph.collector.sentences(), SAMPLE_RATE, source_s=source_s)
    output.parent.mkdir(parents=True, exist_ok=True)
    await run_blocking(soundfile.write, str(output), track, SAMPLE_RATE, "PCM_16")
    return DubResult(output, graph.translator.done, placements, graph, source_s, time.monotonic() - began)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.dubbing", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", nargs="?", type=Path, help="a WAV (or FLAC/OGG) file; default: a demo clip")
    parser.add_argument("-o", "--output", type=Path, default=Path("out/dubbing/dubbed.wav"))
    parser.add_argument("--from", dest="source", default="es", help="language spoken in the file (default es)")
    parser.add_argument("--to", dest="target", default="en", help="language of the dub (default en)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("examples").setLevel(logging.INFO)
    source = args.input or demo_clip(Path("out/dubbing/source.wav"))
    async def run() -> DubResult:
        try:
            return await dub_file(source, args.output, source=args.source, target=args.target)
        finally:
            await close_local_emulator()

    done = asyncio.run(run())
    stt = "multilingual Whisper base" if done.graph.multilingual else "tiny.en (English only)"
    voice = "emulator (piper voice)" if done.graph.endpoint.emulated else done.graph.endpoint.url
    print(f"dubbed {source} ({done.source_s:.1f} s) in {done.wall_s:.1f} s · STT {stt} · Voxtral {voice}")
    for translation, placement in zip(done.translations, done.placements):
        stretched = f", sped up x{placement.speedup:.2f}" if placement.speedup > 1.0 else ""
        print(f"  {placement.source_start:5.2f} s → {placement.start:5.2f} s  {translation.source!r} → "
              f"{translation.text!r}{stretched}")
    print(f"wrote {done.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
