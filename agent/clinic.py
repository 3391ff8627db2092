"""The embedded demo bot: the phone line of a fictional clinic.

A small rule-based IVR/FAQ hook (no API key needed) behind the local speech
stack: an echo canceller, Silero VAD, tiny.en Whisper, the turn-taker and piper. With
``VOXWIRE_LLM_BASE_URL`` set, a real OpenAI-compatible model answers instead.
It is also what ``voxwire serve`` runs when no ``--agent`` is given.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from agent.calls import CallInfo
from agent.conversation import Conversation, UserInput
from agent.llm import LLMHook, LLMNode
from agent.node import Node
from agent.openai_llm import OpenAICompatibleLLM
from agent.turns import TurnParams, TurnTaker

GREETING = "Thanks for calling Maple Street Clinic. How can I help you today?"
SYSTEM_PROMPT = (
    "You are the phone assistant of Maple Street Clinic. Answer in one or two short spoken sentences. "
    "The clinic is open Monday to Friday 8 am to 6 pm and Saturday until noon, at 42 Maple Street. "
    "You can book appointments, give directions, and transfer to the front desk."
)
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday")

ANSWERS = {
    "hours": "We're open Monday to Friday from eight in the morning to six in the evening, "
             "and on Saturday mornings until noon.",
    "address": "We're at forty two Maple Street, next to the pharmacy, with free parking behind the building.",
    "book": "I can book that for you. Which day works best?",
    "human": "Let me transfer you to the front desk. Please hold.",
    "bye": "You're welcome. Goodbye, and take care!",
    "menu": "I can help with appointments, opening hours, or directions. "
            "You can also press one for appointments, two for hours, three for directions, or zero for the front desk.",
}
KEYPAD = {"1": "book", "2": "hours", "3": "address", "0": "human"}
INTENTS = (
    ("human", r"\b(human|person|someone|agent|operator|front desk|receptionist)\b"),
    ("bye", r"\b(bye|goodbye|that's all|thank you|thanks)\b"),
    ("book", r"\b(book|appointment|schedule|see (a|the) doctor|visit)\b"),
    ("hours", r"\b(hours|open|close|closing|opening)\b"),
    ("address", r"\b(where|address|located|directions|parking|get there)\b"),
)


class ClinicDesk:
    """Rule-based answers with a little memory (the day being booked)."""

    def __init__(self) -> None:
        self.booking = False

    async def __call__(self, conversation: Conversation, user: UserInput) -> AsyncIterator[str]:
        for word in self.answer(user).split(" "):
            yield word + " "

    def answer(self, user: UserInput) -> str:
        if user.dtmf:
            intent = KEYPAD.get(user.dtmf, "menu")
        else:
            text = user.text.lower()
            day = next((d for d in DAYS if d in text), None)
            if day and (self.booking or re.search(r"\b(book|appointment|make it|instead|change)\b", text)):
                self.booking = False
                return f"You're booked for {day.capitalize()} at ten in the morning. You'll get a text to confirm."
            intent = next((name for name, pattern in INTENTS if re.search(pattern, text)), "menu")
        self.booking = intent == "book"
        return ANSWERS[intent]


def clinic_hook() -> LLMHook:
    """The real model when configured, else the rule-based desk."""
    return OpenAICompatibleLLM.from_env() or ClinicDesk()


def listening_nodes(*, turn_params: TurnParams | None = None, echo: bool = True) -> list[Node]:
    """The caller-facing front of every local bot: echo canceller → VAD → STT → turn-taking.

    The VAD's long hangover (600 ms) keeps a sentence with natural pauses in
    one segment, so its transcript is whole; the turn itself ends much earlier,
    from the transcript the STT starts at the VAD's first ~100 ms pause (see
    ``agent.turns`` and ``bench/turns.py``). Partials run only while the bot
    is heard, where a barge-in needs words; elsewhere they would only occupy
    the model when a turn's transcript is due.
    """
    from agent.echo import EchoCanceller
    from agent.vad import VADNode, VADParams
    from stt import WhisperSTTNode

    nodes: list[Node] = [EchoCanceller()] if echo else []
    return nodes + [
        VADNode(VADParams(hangover_ms=600.0, pause_ms=96.0)),
        WhisperSTTNode(interims="bot_speaking"),
        TurnTaker(turn_params),
    ]


def naive_listening_nodes() -> list[Node]:
    """The plain loop voxwire is measured against: a 500 ms hangover, then a 30 s-window
    transcript, then the answer (no hold, no speculation, no preemption, no echo handling)."""
    from agent.vad import VADNode, VADParams
    from stt import WhisperSTTNode

    return [
        VADNode(VADParams(hangover_ms=500.0)),
        WhisperSTTNode(speculative=False, short_window=False, interims="off"),
        TurnTaker(TurnParams(adaptive=False, preemptive=False)),
    ]


def speaking_node() -> Node:
    """Piper, starting on a one-word first clause ("Sure," "Okay,"): it is synthesized in
    ~80 ms instead of ~250 ms for a whole first sentence, and the rest follows while it plays."""
    from tts.piper import PiperTTSNode
    from tts.text_aggregator import ClauseAggregator

    return PiperTTSNode(aggregator=ClauseAggregator(first_clause_min_words=1))


def clinic_bot(info: CallInfo | None = None, *, turn_params: TurnParams | None = None) -> list[Node]:
    """Echo canceller → VAD → STT → turn-taking → LLM hook → piper, for one call."""
    return [
        *listening_nodes(turn_params=turn_params),
        LLMNode(clinic_hook(), system_prompt=SYSTEM_PROMPT, greeting=GREETING),
        speaking_node(),
    ]
