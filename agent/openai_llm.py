"""An OpenAI-compatible streaming chat client usable as an LLM hook.

Works with anything that speaks ``POST /chat/completions`` with ``stream:
true`` (Mistral API, vLLM, Ollama, OpenAI). Text deltas are yielded as they
arrive; tool calls are gathered from the stream, run (sync or async Python
functions), their results added to the conversation, and the model is asked
again, up to ``max_tool_steps`` times. Transient failures before the first
token are retried; after it, a failure surfaces so the LLM node can apologise.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from agent.conversation import Conversation, Message, UserInput

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


@dataclass(slots=True)
class Tool:
    """A function the model may call; ``parameters`` is a JSON schema."""

    name: str
    description: str
    fn: Callable[..., Any]
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def spec(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}

    async def run(self, arguments: dict[str, Any]) -> str:
        result = self.fn(**arguments)
        if inspect.isawaitable(result):
            result = await result
        return result if isinstance(result, str) else json.dumps(result)


class LLMError(Exception):
    """The LLM server failed; the message says how (status and server text)."""


class OpenAICompatibleLLM:
    """Streaming chat completions with tool calls, timeouts and retries."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        tools: list[Tool] | None = None,
        timeout_s: float = 20.0,
        connect_timeout_s: float = 5.0,
        retries: int = 2,
        max_tool_steps: int = 3,
        temperature: float | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.tools = {t.name: t for t in tools or []}
        self.retries = retries
        self.max_tool_steps = max_tool_steps
        self.temperature = temperature
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s)
        )

    @classmethod
    def from_env(cls, **kwargs: Any) -> OpenAICompatibleLLM | None:
        """``VOXWIRE_LLM_BASE_URL`` (+ ``_MODEL``, ``_API_KEY``), or None when unset."""
        base_url = os.environ.get("VOXWIRE_LLM_BASE_URL")
        if not base_url:
            return None
        key = (os.environ.get("VOXWIRE_LLM_API_KEY") or os.environ.get("MISTRAL_API_KEY")
               or os.environ.get("OPENAI_API_KEY"))
        model = os.environ.get("VOXWIRE_LLM_MODEL", "mistral-small-latest")
        return cls(base_url, model, key, **kwargs)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __call__(self, conversation: Conversation, user: UserInput) -> AsyncIterator[str]:
        for _ in range(self.max_tool_steps + 1):
            calls: dict[int, dict[str, Any]] = {}
            async for kind, payload in self._stream(conversation):
                if kind == "text":
                    yield payload
                else:
                    self._gather_tool_call(calls, payload)
            if not calls:
                return
            await self._run_tools(conversation, user.turn_id, [calls[i] for i in sorted(calls)])
        logger.warning("llm: stopped after %d tool steps", self.max_tool_steps)

    def _body(self, conversation: Conversation) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": conversation.to_openai(), "stream": True}
        tools = [t.spec() for t in self.tools.values()] + list(conversation.tools)
        if tools:
            body["tools"] = tools
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    async def _stream(self, conversation: Conversation) -> AsyncIterator[tuple[str, Any]]:
        body = self._body(conversation)
        for attempt in range(self.retries + 1):
            started = False
            try:
                async with self._client.stream("POST", self.url, json=body) as response:
                    if response.status_code != 200:
                        text = (await response.aread()).decode("utf-8", "replace")[:500]
                        error = LLMError(f"HTTP {response.status_code} from {self.url}: {text}")
                        if response.status_code in RETRYABLE_STATUS and attempt < self.retries:
                            raise _Retry(error)
                        raise error
                    async for line in response.aiter_lines():
                        event = _parse_sse_line(line)
                        if event is None:
                            continue
                        if event == "[DONE]":
                            return
                        for item in _deltas(event):
                            started = True
                            yield item
                    return
            except (_Retry, httpx.TransportError) as exc:
                if started or attempt >= self.retries:
                    cause = exc.error if isinstance(exc, _Retry) else exc
                    raise LLMError(f"LLM request failed: {cause}") from exc
                await asyncio.sleep(0.2 * 2**attempt)

    @staticmethod
    def _gather_tool_call(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
        call = calls.setdefault(delta.get("index", 0), {"id": "", "name": "", "arguments": ""})
        call["id"] = delta.get("id") or call["id"]
        function = delta.get("function") or {}
        call["name"] += function.get("name") or ""
        call["arguments"] += function.get("arguments") or ""

    async def _run_tools(self, conversation: Conversation, turn_id: int, calls: list[dict[str, Any]]) -> None:
        conversation.messages.append(Message(
            "assistant", "", turn_id,
            tool_calls=[{"id": c["id"], "type": "function",
                         "function": {"name": c["name"], "arguments": c["arguments"] or "{}"}} for c in calls],
        ))
        for call in calls:
            tool = self.tools.get(call["name"])
            try:
                if tool is None:
                    raise LLMError(f"unknown tool {call['name']!r}")
                result = await tool.run(json.loads(call["arguments"] or "{}"))
            except Exception as exc:  # the model hears about it and can recover
                logger.warning("llm: tool %s failed: %s", call["name"], exc)
                result = json.dumps({"error": str(exc)})
            conversation.messages.append(Message("tool", result, turn_id, tool_call_id=call["id"]))


class _Retry(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _parse_sse_line(line: str) -> dict[str, Any] | str | None:
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return data
    try:
        return json.loads(data)
    except json.JSONDecodeError:
        logger.warning("llm: ignoring malformed stream line: %.80s", data)
        return None


def _deltas(event: dict[str, Any] | str) -> list[tuple[str, Any]]:
    if not isinstance(event, dict):
        return []
    if "error" in event:
        raise LLMError(f"LLM stream error: {event['error']}")
    out: list[tuple[str, Any]] = []
    for choice in event.get("choices") or []:
        delta = choice.get("delta") or {}
        if delta.get("content"):
            out.append(("text", delta["content"]))
        for call in delta.get("tool_calls") or []:
            out.append(("tool", call))
    return out
