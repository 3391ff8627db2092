"""The browser assistant as a bot factory: VAD → Whisper → turn-taking → LLM (one tool) → TTS.

``VOXWIRE_LLM_BASE_URL`` (+ ``_MODEL``, ``_API_KEY``) switches to a real
OpenAI-compatible model with the converter as a function tool;
``VOXWIRE_VOXTRAL_URL`` (+ ``VOXWIRE_VOXTRAL_DIALECT``, ``MISTRAL_API_KEY``)
switches the voice from piper to Voxtral.
"""

from __future__ import annotations

import os

from agent.calls import CallInfo
from agent.llm import LLMNode
from agent.node import Node
from agent.openai_llm import OpenAICompatibleLLM
from agent.turns import TurnTaker
from agent.vad import VADNode, VADParams
from examples.browser.assistant import CONVERT_TOOL, GREETING, SYSTEM_PROMPT, OfflineAssistant
from stt import WhisperSTTNode


class AssistantNode(LLMNode):
    """``LLMNode`` that closes the model's HTTP client when the call ends."""

    async def on_stop(self) -> None:
        close = getattr(self.hook, "aclose", None)
        if close is not None:
            await close()
        await super().on_stop()


def speaking_node() -> Node:
    """Voxtral when ``VOXWIRE_VOXTRAL_URL`` is set (piper takes over if it fails), else piper."""
    from tts.piper import PiperTTSNode

    url = os.environ.get("VOXWIRE_VOXTRAL_URL")
    if not url:
        return PiperTTSNode()
    from tts.voxtral import VoxtralTTSNode

    return VoxtralTTSNode(url, os.environ.get("VOXWIRE_VOXTRAL_DIALECT", "vllm-omni"),
                          voice=os.environ.get("VOXWIRE_VOXTRAL_VOICE") or None, fallback=PiperTTSNode())


def assistant_bot(info: CallInfo) -> list[Node]:
    hook = OpenAICompatibleLLM.from_env(tools=[CONVERT_TOOL], temperature=0.2) or OfflineAssistant()
    return [
        VADNode(VADParams(hangover_ms=600.0, pause_ms=96.0)),
        WhisperSTTNode(interims="bot_speaking"),
        TurnTaker(),
        AssistantNode(hook, system_prompt=SYSTEM_PROMPT, greeting=GREETING),
        speaking_node(),
    ]


def warm_up() -> None:
    """Load and run every model once (blocking, ~2 s), so the first call answers at full speed."""
    import numpy as np

    from agent.vad.silero import shared_session
    from stt.models import load_model
    from stt.whisper import transcribe
    from tts.piper import load_voice, synthesize_blocking

    shared_session()
    transcribe(load_model(None), np.zeros(16000, dtype=np.int16))
    synthesize_blocking(load_voice(), "Hello.")
