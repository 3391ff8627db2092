"""``voxwire say``: speak a text through a TTS stage, exactly as in a call, into a WAV file.

    voxwire say "Hello there." --tts voxtral --voxtral-url http://localhost:8091 --dialect vllm-omni \\
        [--voice neutral_female | --ref-audio clip.wav] --out hello.wav
    voxwire say "Hello there." --tts piper --out hello.wav

The text goes in as a ``SpeakFrame`` and the file holds the ``OutputAudioFrame``s
that came out, so what you hear is what a caller would (minus the network).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import soundfile

from agent import Node, Session
from agent.frames import ErrorFrame, Frame, OutputAudioFrame, SpeakFrame, TTSStoppedFrame
from tts.voxtral.protocol import Dialect

log = logging.getLogger(__name__)


class _Collect(Node):
    def __init__(self) -> None:
        super().__init__(name="say-output")
        self.pcm: list[bytes] = []
        self.first_audio_at: float | None = None
        self.done = asyncio.Event()

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, OutputAudioFrame):
            self.first_audio_at = self.first_audio_at or time.monotonic()
            self.pcm.append(frame.pcm)
            return
        if isinstance(frame, TTSStoppedFrame):
            self.done.set()
        await self.emit(frame, direction)  # EndFrame must reach the session to end it


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="what to say")
    parser.add_argument("--tts", choices=["voxtral", "piper"], default="voxtral")
    parser.add_argument("--voxtral-url", default=None, help="server base URL (Mistral dialect: defaults to the API)")
    parser.add_argument("--dialect", choices=[d.value for d in Dialect], default=Dialect.VLLM_OMNI.value)
    parser.add_argument("--voice", default=None, help="preset voice of the dialect (or a custom voice id)")
    parser.add_argument("--ref-audio", default=None, help="3-25 s clip to clone the voice from")
    parser.add_argument("--fallback", choices=["none", "piper"], default="none", help="voice used if the server fails")
    parser.add_argument("--rate", type=int, default=24000, help="sample rate of the output file")
    parser.add_argument("--out", required=True, help="WAV file to write")
    parser.add_argument("--json", action="store_true", help="print request metrics as JSON")


def _build_node(args: argparse.Namespace) -> Node:
    if args.tts == "piper":
        from tts.piper import PiperTTSNode

        return PiperTTSNode(sample_rate=args.rate)
    from tts.voxtral.node import VoxtralTTSNode

    fallback = None
    if args.fallback == "piper":
        from tts.piper import PiperTTSNode

        fallback = PiperTTSNode()
    return VoxtralTTSNode(
        args.voxtral_url, args.dialect, voice=args.voice, ref_audio=args.ref_audio,
        fallback=fallback, max_ahead_s=None, sample_rate=args.rate,
    )  # fmt: skip


async def say(args: argparse.Namespace) -> dict:
    node = _build_node(args)
    sink = _Collect()
    session = Session([node, sink], output_sample_rate=args.rate)
    errors: list[str] = []
    session.subscribe(lambda frame, _d: errors.append(frame.message) if isinstance(frame, ErrorFrame) else None)
    running = asyncio.create_task(session.run())
    started = time.monotonic()
    await session.push(SpeakFrame(text=args.text, turn_id=1))
    finished = asyncio.create_task(sink.done.wait())
    await asyncio.wait({running, finished}, return_when=asyncio.FIRST_COMPLETED)
    finished.cancel()
    if not running.done():
        await session.end()
    result = await running
    if result.error:
        raise SystemExit(f"voxwire say: {result.error}")
    audio = np.frombuffer(b"".join(sink.pcm), dtype=np.int16)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(args.out, audio, args.rate, subtype="PCM_16")
    return {
        "out": args.out,
        "audio_s": round(len(audio) / args.rate, 3),
        "first_audio_ms": None if sink.first_audio_at is None else round((sink.first_audio_at - started) * 1000, 1),
        "requests": getattr(node, "requests", []),
        "errors": errors,
    }


def run(args: argparse.Namespace) -> int:
    summary = asyncio.run(say(args))
    for error in summary["errors"]:
        print(f"error: {error}", file=sys.stderr)
    print(f"wrote {summary['audio_s']} s to {summary['out']} (first audio after {summary['first_audio_ms']} ms)")
    if args.json:
        print(json.dumps(summary))
    return 0 if summary["audio_s"] > 0 else 1
