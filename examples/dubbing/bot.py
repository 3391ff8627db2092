"""The dubbing graph, for a file or a live call:

    VAD → (voice sampler) → multilingual Whisper → translator hook → Voxtral (cloned voice)

Each sentence is translated and spoken as soon as its transcript is final,
while the speaker goes on: the dub streams sentence by sentence. For a live
call over WebRTC::

    python -m transports.webrtc --agent examples.dubbing.bot:dubbing_bot

``DUB_FROM`` / ``DUB_TO`` pick the languages (default Spanish → English).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.calls import CallInfo
from agent.node import Node
from agent.vad import VADNode, VADParams
from agent.workers import run_blocking
from examples.dubbing.multilingual import pick_stt_model
from examples.dubbing.timeline import DubCollector
from examples.dubbing.translate import TranslatorNode, translator
from examples.dubbing.voice import ClonedVoice, VoiceSampler, VoxtralEndpoint, voxtral_endpoint
from stt import WhisperSTTNode
from tts.voxtral import ReferenceClip


@dataclass
class DubbingGraph:
    nodes: list[Node]
    translator: TranslatorNode
    voice: ClonedVoice
    endpoint: VoxtralEndpoint
    stt_language: str | None
    multilingual: bool
    collector: DubCollector | None = None


async def build_dubbing(source: str, target: str, *, live: bool, reference: ReferenceClip | None = None) -> DubbingGraph:
    """The nodes of one dub. ``reference`` clones a known voice (files); live calls clone as they go."""
    from tts.piper import PiperTTSNode

    model, language = await run_blocking(pick_stt_model, source)
    await run_blocking(_warm_up, model, language, pool="stt")
    endpoint = await voxtral_endpoint()
    voice = ClonedVoice(
        endpoint.url, endpoint.dialect, api_key=endpoint.api_key, ref_audio=reference,
        fallback=PiperTTSNode(),  # if the server fails or refuses to clone (English voice)
        # A file has no listener: no pacing, and a slow server is waited for, not replaced.
        max_ahead_s=3.0 if live else None,
        first_audio_timeout=2.5 if live else 15.0, read_timeout=5.0 if live else 15.0,
        hedge_after_s=0.4 if live else None,  # live: piper covers a silent server within a second
    )
    translate = TranslatorNode(translator(source, target), source, target)
    nodes: list[Node] = [VADNode(VADParams(hangover_ms=500.0))]
    if live and reference is None:
        nodes.append(VoiceSampler(voice))
    nodes += [
        WhisperSTTNode(model=model, language=language, interims="off", speculative=False),
        translate,
        voice,
    ]
    collector = None if live else DubCollector()
    if collector is not None:
        nodes.append(collector)
    return DubbingGraph(nodes, translate, voice, endpoint, language, model is not None, collector)


_warm: set[str] = set()


def _warm_up(model: Path | None, language: str | None) -> None:
    """Load the model and run it once per process: the first inference pays one-off costs."""
    from stt.models import load_model
    from stt.whisper import transcribe_clip

    key = str(model)
    if key not in _warm:
        transcribe_clip(load_model(model), np.zeros(16000, dtype=np.float32), language=language)
        _warm.add(key)


async def dubbing_bot(info: CallInfo) -> list[Node]:
    """Bot factory for live dubbing (WebRTC or any transport): the caller hears their words translated."""
    graph = await build_dubbing(os.environ.get("DUB_FROM", "es"), os.environ.get("DUB_TO", "en"), live=True)
    return graph.nodes
