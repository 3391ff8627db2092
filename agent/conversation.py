"""The conversation an LLM sees: only what was said, and only what was heard.

An assistant message is written from what the caller *heard*, taken from the
output transport's playout reports. An answer cut off by a barge-in keeps only
its heard words and is marked ``interrupted``; an answer nobody heard is
removed, together with any tool result it would otherwise leave orphaned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Message:
    role: str  # "system" | "user" | "assistant" | "tool"
    content: str
    turn_id: int = 0
    interrupted: bool = False
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    def to_openai(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = self.tool_calls
        if self.tool_call_id:
            msg["tool_call_id"] = self.tool_call_id
        return msg


@dataclass(slots=True)
class UserInput:
    """The user's turn as the LLM hook receives it: words, or keypad digits."""

    text: str
    turn_id: int = 0
    dtmf: str | None = None

    def __str__(self) -> str:
        return self.text


@dataclass
class Conversation:
    system_prompt: str = ""
    messages: list[Message] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    max_messages: int = 60

    def add_user(self, text: str, turn_id: int = 0) -> None:
        self.messages.append(Message("user", text, turn_id))
        self._trim()

    def assistant(self, turn_id: int) -> Message | None:
        for message in reversed(self.messages):
            if message.role == "assistant" and message.turn_id == turn_id and not message.tool_calls:
                return message
        return None

    def set_assistant(self, turn_id: int, text: str) -> None:
        """Create or update the spoken answer of a turn (generated so far)."""
        message = self.assistant(turn_id)
        if message is None:
            self.messages.append(Message("assistant", text, turn_id))
            self._trim()
        else:
            message.content = text

    def truncate_to_heard(self, turn_id: int, heard: str) -> None:
        """A barge-in cut the answer: keep what was heard, or drop the turn's answer."""
        message = self.assistant(turn_id)
        if message is None:
            return
        heard = heard.strip()
        if heard:
            message.content = heard
            message.interrupted = True
            return
        self.messages = [
            m for m in self.messages if not (m.turn_id == turn_id and m.role in ("assistant", "tool"))
        ]

    def to_openai(self) -> list[dict[str, Any]]:
        out = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        out.extend(m.to_openai() for m in self.messages)
        return out

    def _trim(self) -> None:
        excess = len(self.messages) - self.max_messages
        if excess > 0:
            del self.messages[:excess]
            while self.messages and self.messages[0].role == "tool":
                del self.messages[0]
