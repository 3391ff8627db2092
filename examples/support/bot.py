"""A customer-support agent with tools, as a bot factory:

    VAD → Whisper → turn-taking → LLM (tools) → warm transfer → TTS

With ``VOXWIRE_LLM_BASE_URL`` (and ``VOXWIRE_LLM_MODEL``, ``VOXWIRE_LLM_API_KEY``)
a real OpenAI-compatible model answers and calls the tools; without it the
deterministic :class:`OfflineSupportAgent` does, through the same tools.
``VOXWIRE_VOXTRAL_URL`` switches the voice from piper to Voxtral.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.calls import CallInfo
from agent.llm import LLMNode
from agent.node import Node
from agent.openai_llm import OpenAICompatibleLLM
from agent.turns import TurnTaker
from agent.vad import VADNode, VADParams
from examples.support.handoff import HandOff
from examples.support.local_agent import GREETING, SYSTEM_PROMPT, OfflineSupportAgent
from examples.support.store import OrderStore
from examples.support.tools import support_tools
from stt import WhisperSTTNode


@dataclass
class SupportConfig:
    db_path: Path = Path("out/support/shop.sqlite3")
    human: str = "sip:support-team@shop.example"
    """Where warm transfers go (SIP URI or E.164 number)."""
    store: OrderStore = field(init=False)

    def __post_init__(self) -> None:
        self.store = OrderStore(self.db_path)

    @classmethod
    def from_env(cls) -> SupportConfig:
        """``SUPPORT_DB`` and ``SUPPORT_HUMAN`` override the defaults."""
        return cls(db_path=Path(os.environ.get("SUPPORT_DB", cls.db_path)),
                   human=os.environ.get("SUPPORT_HUMAN", cls.human))


class SupportLLMNode(LLMNode):
    """``LLMNode`` that also closes the model's HTTP client when the call ends."""

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


def make_support_bot(config: SupportConfig) -> Callable[[CallInfo], list[Node]]:
    def support_bot(info: CallInfo) -> list[Node]:
        caller = info.caller or "unknown"
        handoff = HandOff(config.human)
        tools = support_tools(config.store, handoff, call_id=info.session_id, caller=caller)
        hook = OpenAICompatibleLLM.from_env(tools=tools, temperature=0.2) or OfflineSupportAgent(tools, caller=caller)
        return [
            VADNode(VADParams(hangover_ms=600.0, pause_ms=96.0)),
            WhisperSTTNode(interims="bot_speaking"),
            TurnTaker(),
            SupportLLMNode(hook, system_prompt=SYSTEM_PROMPT, greeting=GREETING),
            handoff,
            speaking_node(),
        ]

    return support_bot


_default: Callable[[CallInfo], list[Node]] | None = None


def support_bot(info: CallInfo) -> list[Node]:
    """The factory for ``--agent examples.support.bot:support_bot`` (configured from the environment)."""
    global _default
    if _default is None:
        _default = make_support_bot(SupportConfig.from_env())
    return _default(info)
