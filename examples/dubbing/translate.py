"""Translation as an LLM hook, and the node that runs it sentence by sentence.

A translator is any LLM hook ``(conversation, user_input) -> text``. With
``VOXWIRE_LLM_BASE_URL`` set it is the real OpenAI-compatible model; offline
it is :class:`PhraseTable` — **a lookup of a dozen demo sentences, not a
translator** — which lets the example run and be tested with no model at all.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import re
import unicodedata
from dataclasses import dataclass

from agent.conversation import Conversation, UserInput
from agent.frames import EndFrame, Frame, LLMTextFrame, LLMTurnEndFrame, TranscriptionFrame
from agent.llm import LLMHook, iterate_hook
from agent.node import DOWNSTREAM, Node
from agent.openai_llm import OpenAICompatibleLLM

logger = logging.getLogger(__name__)

LANGUAGES = {"en": "English", "es": "Spanish"}

#: Demo sentences (Spanish, English). The Spanish ones are read well by espeak-ng
#: and transcribed exactly by the multilingual Whisper base.
DEMO_PHRASES = [
    ("Buenos días a todos.", "Good morning, everyone."),
    ("Bienvenidos a nuestra tienda.", "Welcome to our shop."),
    ("Hoy vamos a hablar del tiempo.", "Today we are going to talk about the weather."),
    ("Me gusta mucho esta ciudad.", "I really like this city."),
    ("Necesito un médico, por favor.", "I need a doctor, please."),
    ("El café está muy caliente.", "The coffee is very hot."),
    ("Muchas gracias y hasta luego.", "Thank you very much, and see you later."),
]


def _key(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode()
    return " ".join(re.findall(r"[a-z0-9]+", plain))


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]


class PhraseTable:
    """Offline stand-in for a translator: fuzzy lookup of known sentences (labelled as such)."""

    def __init__(self, source: str, target: str, phrases: list[tuple[str, str]] = DEMO_PHRASES) -> None:
        pairs = phrases if (source, target) == ("es", "en") else [(b, a) for a, b in phrases]
        if {source, target} != {"es", "en"}:
            raise ValueError("the demo phrase table only knows Spanish <-> English; set VOXWIRE_LLM_BASE_URL")
        self.table = {_key(a): b for a, b in pairs}

    def __call__(self, conversation: Conversation, user: UserInput) -> str:
        return " ".join(self.translate_sentence(s) for s in sentences(user.text))

    def translate_sentence(self, sentence: str) -> str:
        match = difflib.get_close_matches(_key(sentence), self.table, n=1, cutoff=0.75)
        if match:
            return self.table[match[0]]
        logger.warning("the demo phrase table has no entry for %r; it is spoken untranslated "
                       "(set VOXWIRE_LLM_BASE_URL for real translation)", sentence)
        return sentence


def translator(source: str, target: str) -> LLMHook:
    """The real model when ``VOXWIRE_LLM_BASE_URL`` is set, else the demo phrase table."""
    return OpenAICompatibleLLM.from_env(temperature=0.0) or PhraseTable(source, target)


def instructions(source: str, target: str) -> str:
    return (f"Translate what the user says from {LANGUAGES.get(source, source)} into "
            f"{LANGUAGES.get(target, target)}. It is speech to be dubbed: keep it as short as the original, "
            "keep names and numbers, and reply with the translation only.")


@dataclass(slots=True)
class Translation:
    turn_id: int
    source: str
    text: str


class TranslatorNode(Node):
    """Final transcripts in, translated text out (``LLMTextFrame`` + ``LLMTurnEndFrame``, same turn id).

    Sentences are translated one at a time, in the order they were spoken, so
    the dub never reorders; each is a fresh, stateless request. Nothing here is
    interruptible: a speaker who keeps talking does not cancel the dub.
    """

    def __init__(self, hook: LLMHook, source: str, target: str, *, name: str | None = None) -> None:
        super().__init__(name=name or "translator")
        self.hook = hook
        self.system_prompt = instructions(source, target)
        self.done: list[Translation] = []
        self._queue: asyncio.Queue[TranscriptionFrame | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        self._worker = self.spawn(self._translate_in_order(), interruptible=False)

    async def on_stop(self) -> None:
        close = getattr(self.hook, "aclose", None)
        if close is not None:
            await close()

    async def process(self, frame: Frame, direction: int) -> None:
        if direction == DOWNSTREAM and isinstance(frame, TranscriptionFrame):
            if frame.final and frame.text.strip():
                self._queue.put_nowait(frame)
        elif direction == DOWNSTREAM and isinstance(frame, EndFrame) and self._worker is not None:
            self._queue.put_nowait(None)  # finish what was said before ending
            await asyncio.wait({self._worker})
        await self.emit(frame, direction)

    async def _translate_in_order(self) -> None:
        while (frame := await self._queue.get()) is not None:
            conversation = Conversation(system_prompt=self.system_prompt)
            conversation.add_user(frame.text, frame.turn_id)
            text = ""
            try:
                async for delta in iterate_hook(self.hook, conversation, UserInput(frame.text, frame.turn_id)):
                    text += delta
                    await self.emit(LLMTextFrame(text=delta, turn_id=frame.turn_id))
            except Exception as exc:  # one bad sentence must not end the dub
                logger.warning("translation of turn %d failed: %s", frame.turn_id, exc)
            self.done.append(Translation(frame.turn_id, frame.text, text.strip()))
            await self.emit(LLMTurnEndFrame(text=text, turn_id=frame.turn_id))
