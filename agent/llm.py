"""``LLMNode``: hands each user turn to an LLM hook and streams its answer on.

A hook is any async callable or async generator taking ``(conversation,
user_input)`` and producing text: yield deltas for the lowest latency, or
return a whole ``str``. The node runs it in a task an interrupt cancels,
records the answer in the conversation as it is generated, and rewrites it to
what the caller heard from the output's playout reports, which pass upstream
through this node.

A hook that fails, or goes quiet (no first token within
``first_token_timeout_s``, or no next token within ``stall_timeout_s``), gets
the same treatment: it is cancelled, a non-fatal ``ErrorFrame`` names the
problem, and the bot apologises, so the caller is never left in silence.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Union

from agent import metrics
from agent.conversation import Conversation, UserInput
from agent.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    DTMFFrame,
    ErrorFrame,
    EventFrame,
    Frame,
    InterruptFrame,
    LLMTextFrame,
    LLMTurnEndFrame,
    PlayoutProgressFrame,
    SpeakFrame,
    UserTurnFrame,
)
from agent.node import DOWNSTREAM, UPSTREAM, Node

logger = logging.getLogger(__name__)

HookResult = Union[str, AsyncIterator[str], Awaitable[str], Awaitable[AsyncIterator[str]]]
LLMHook = Callable[[Conversation, UserInput], HookResult]

_speak_ids = itertools.count(1_000_000)


class LLMTimeout(Exception):
    """The hook went quiet: no first token, or a stall between tokens."""


async def iterate_hook(hook: LLMHook, conversation: Conversation, user: UserInput) -> AsyncIterator[str]:
    """Normalise every hook shape to an async iterator of text deltas."""
    result: Any = hook(conversation, user)
    if inspect.isawaitable(result):
        result = await result
    if isinstance(result, str):
        if result:
            yield result
        return
    if result is None:
        return
    async for delta in result:
        if delta:
            yield delta


class LLMNode(Node):
    """Runs the LLM hook per user turn; keeps the conversation to what was heard.

    ``first_token_timeout_s`` and ``stall_timeout_s`` (None: no limit) bound how
    long the hook may stay silent before the bot apologises instead.
    """

    def __init__(
        self,
        hook: LLMHook,
        *,
        system_prompt: str = "",
        greeting: str | None = None,
        apology: str = "Sorry, I'm having trouble right now. Could you say that again?",
        first_token_timeout_s: float | None = 8.0,
        stall_timeout_s: float | None = 10.0,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.hook = hook
        self.conversation = Conversation(system_prompt=system_prompt)
        self.greeting = greeting
        self.apology = apology
        # Defaults: a slow hosted model under load can take a few seconds to its
        # first token, and a tool call inside the hook pauses the stream; past
        # these, the caller has been in silence too long and hears the apology.
        self.first_token_timeout_s = first_token_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self._heard: dict[int, str] = {}
        self._active_turn: int | None = None  # being generated
        self._playing_turn: int | None = None  # being heard
        self._unplayed: set[int] = set()  # answered, but none of it reported played yet
        self.generated: dict[int, str] = {}  # turn id -> everything the hook said

    async def on_start(self) -> None:
        if self.greeting:
            self.spawn(self.emit(SpeakFrame(text=self.greeting)), interruptible=False)

    async def process(self, frame: Frame, direction: int) -> None:
        if direction == DOWNSTREAM:
            if isinstance(frame, UserTurnFrame):
                self._start_turn(UserInput(frame.text, frame.turn_id), replaces=frame.replaces)
                return
            if isinstance(frame, DTMFFrame):
                self._start_turn(UserInput(f"[keypad {frame.digit}]", self._next_dtmf_turn(), dtmf=frame.digit))
            elif isinstance(frame, SpeakFrame):
                if not frame.turn_id:
                    frame.turn_id = next(_speak_ids)
                self.conversation.set_assistant(frame.turn_id, frame.text)
            elif isinstance(frame, InterruptFrame):
                self._cut_active_turn()
            elif isinstance(frame, EventFrame) and frame.kind == "llm_config":
                self._configure(frame.data)
        else:
            if isinstance(frame, PlayoutProgressFrame):
                self._heard[frame.turn_id] = frame.text_heard
                self._unplayed.discard(frame.turn_id)
            elif isinstance(frame, BotStartedSpeakingFrame):
                self._playing_turn = frame.turn_id
            elif isinstance(frame, BotStoppedSpeakingFrame):
                self._playing_turn = None
                if frame.interrupted:
                    self.conversation.truncate_to_heard(frame.turn_id, self._heard.get(frame.turn_id, ""))
                    self._heard.pop(frame.turn_id, None)
            elif isinstance(frame, InterruptFrame):
                self._cut_active_turn()
        await self.emit(frame, direction)

    async def _next_delta(self, deltas: AsyncIterator[str], *, first: bool) -> str | None:
        """The hook's next text delta (None at its end), or ``LLMTimeout`` if it stays silent too long."""
        limit = self.first_token_timeout_s if first else self.stall_timeout_s
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                return await anext(deltas, None)
        except TimeoutError:
            if not deadline.expired():
                raise  # the hook's own timeout (an HTTP client's), reported as it is
            what = "no first token" if first else "no further token"
            raise LLMTimeout(f"{what} from the hook within {limit:g} s") from None

    def _next_dtmf_turn(self) -> int:
        return next(_speak_ids)

    def _configure(self, data: dict[str, Any]) -> None:
        if "system_prompt" in data:
            self.conversation.system_prompt = str(data["system_prompt"])
        if "tools" in data:
            self.conversation.tools = list(data["tools"])
        logger.info("llm %s: configuration updated (%s)", self.name, ", ".join(sorted(data)))

    def _start_turn(self, user: UserInput, replaces: int = 0) -> None:
        last = self.conversation.messages[-1] if self.conversation.messages else None
        if last is not None and last.role == "user" and last.turn_id in (user.turn_id, replaces or None):
            last.content = user.text  # the caller went on: the reopened turn replaces itself
            last.turn_id = user.turn_id
        else:
            self.conversation.add_user(user.text, user.turn_id)
        self._active_turn = user.turn_id
        self._unplayed.add(user.turn_id)
        self.spawn(self._answer(user))

    def _cut_active_turn(self) -> None:
        """An interrupt during generation, before any audio played: nothing was heard.

        A turn already playing is cut when the output reports what was heard
        (``BotStoppedSpeakingFrame(interrupted=True)``), which comes later.
        """
        turn = self._active_turn
        self._active_turn = None
        if turn is not None and turn != self._playing_turn:
            self.conversation.truncate_to_heard(turn, self._heard.get(turn, ""))
        # Answers generated in full but still queued (or held back while the
        # turn-taker waited): the interrupt drops their audio unheard.
        for unplayed in self._unplayed - {self._playing_turn}:
            self.conversation.truncate_to_heard(unplayed, self._heard.get(unplayed, ""))
        self._unplayed.clear()

    async def _answer(self, user: UserInput) -> None:
        turn_id = user.turn_id
        text = ""
        deltas = iterate_hook(self.hook, self.conversation, user)
        try:
            while (delta := await self._next_delta(deltas, first=not text)) is not None:
                if not text:
                    await self.mark(metrics.LLM_FIRST_TOKEN, turn_id)
                text += delta
                self.generated[turn_id] = text
                self.conversation.set_assistant(turn_id, text)
                await self.emit(LLMTextFrame(text=delta, turn_id=turn_id))
        except Exception as exc:  # the call goes on: apologise instead of dying
            logger.warning("llm %s: turn %s failed: %s: %s", self.name, turn_id, type(exc).__name__, exc)
            await self.emit(ErrorFrame(message=f"LLM failed: {exc}", node=self.name), UPSTREAM)
            if not text:
                await self.mark(metrics.LLM_FIRST_TOKEN, turn_id)
            spoken = (" " if text else "") + self.apology
            text += spoken
            self.conversation.set_assistant(turn_id, text)
            await self.emit(LLMTextFrame(text=spoken, turn_id=turn_id))
        finally:
            await _close(deltas)
        self.generated[turn_id] = text
        if self._active_turn == turn_id:
            self._active_turn = None
        await self.emit(LLMTurnEndFrame(text=text, turn_id=turn_id))


async def _close(deltas: AsyncIterator[str]) -> None:
    """Close the hook's stream now, so a hook cut off mid-answer releases what it holds (an HTTP stream)."""
    try:
        await deltas.aclose()  # type: ignore[attr-defined]
    except Exception as exc:
        logger.warning("llm: closing the hook's stream failed: %s: %s", type(exc).__name__, exc)
