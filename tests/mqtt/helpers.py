"""Small graph nodes and an MQTT watcher for the bus tests.

The speech bot is not needed to test the bus: a scripted "conversation" node
emits what STT, turn-taking and the LLM would (with their latency marks), a
tone TTS built on the real ``TTSNode`` base speaks text as beeps that carry
their words, and the real output transport plays them in real time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt
import numpy as np

from agent import metrics
from agent.frames import (
    Frame,
    InputAudioFrame,
    LLMTextFrame,
    LLMTurnEndFrame,
    MetricsFrame,
    OutputAudioFrame,
    StartFrame,
    TranscriptionFrame,
    UserTurnFrame,
)
from agent.node import Node
from transports.local import RecordingOutput
from tts.base import TTSNode

RATE = 16000


class ToneTTS(TTSNode):
    """Speaks any text as a 440 Hz tone, 30 ms per character."""

    whole_text_chunks = True

    def __init__(self) -> None:
        super().__init__(native_rate=RATE, name="tone-tts")

    async def synthesize(self, text: str) -> AsyncIterator[np.ndarray]:
        n = int(0.03 * len(text) * RATE)
        yield (np.sin(2 * np.pi * 440 * np.arange(n) / RATE) * 6000).astype(np.int16)


class ScriptedConversation(Node):
    """One user turn, as STT + turn-taking + LLM would report it, then waits."""

    def __init__(self, heard: str = "book a table for two", answer: str = "Sure, for what time?",
                 after_s: float = 0.2) -> None:
        super().__init__(name="scripted-conversation")
        self.heard, self.answer, self.after_s = heard, answer, after_s

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, StartFrame):
            self.spawn(self._turn(), interruptible=False)
        if isinstance(frame, InputAudioFrame):
            return  # the "STT" consumed it
        await self.emit(frame, direction)

    async def _turn(self) -> None:
        await asyncio.sleep(self.after_s)
        turn = 1
        words = self.heard.split()
        await self.mark(metrics.USER_SPEECH_START, turn)
        await self.emit(TranscriptionFrame(text=" ".join(words[:2]), final=False, turn_id=turn))
        await asyncio.sleep(0.05)
        await self.emit(MetricsFrame(name=metrics.USER_SPEECH_END, turn_id=turn, t=time.monotonic() - 0.3))
        await self.mark(metrics.USER_TURN_END, turn)
        await self.emit(TranscriptionFrame(text=self.heard, final=True, language="en", turn_id=turn))
        await self.mark(metrics.STT_FINAL, turn)
        await self.emit(UserTurnFrame(text=self.heard, turn_id=turn))
        await self.mark(metrics.LLM_FIRST_TOKEN, turn)
        await self.emit(LLMTextFrame(text=self.answer, turn_id=turn))
        await self.emit(LLMTurnEndFrame(text=self.answer, turn_id=turn))


class Echo(Node):
    """Plays the caller's audio straight back (the MQTT audio tests' bot)."""

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, InputAudioFrame):
            await self.emit(OutputAudioFrame(pcm=frame.pcm, sample_rate=frame.sample_rate, text="echo "))
            return
        await self.emit(frame, direction)


class Collect(Node):
    """Remembers every frame that passes, in order."""

    def __init__(self) -> None:
        super().__init__(name="collect")
        self.seen: list[Frame] = []

    async def process(self, frame: Frame, direction: int) -> None:
        self.seen.append(frame)
        await self.emit(frame, direction)


class TextRecordingOutput(RecordingOutput):
    """A real-time speaker that also keeps the words of the audio it was given."""

    def __init__(self) -> None:
        super().__init__(sample_rate=RATE)
        self.texts: list[str] = []

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, OutputAudioFrame) and frame.text:
            self.texts.append(frame.text)
        await super().process(frame, direction)

    @property
    def spoken(self) -> str:
        return "".join(self.texts)


class Watcher:
    """An MQTT client that records every message under a filter, as JSON when it is."""

    def __init__(self, host: str, port: int, topic_filter: str, **client_args: Any) -> None:
        self.client = aiomqtt.Client(host, port, protocol=aiomqtt.ProtocolVersion.V5, **client_args)
        self.topic_filter = topic_filter
        self.messages: list[tuple[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Watcher:
        await self.client.__aenter__()
        await self.client.subscribe(self.topic_filter, qos=1)
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.client.__aexit__(None, None, None)
        except aiomqtt.MqttError:
            pass

    async def _read(self) -> None:
        async for message in self.client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            try:
                body: Any = json.loads(payload) if payload[:1] == b"{" else payload
            except ValueError:
                body = payload
            self.messages.append((message.topic.value, body))
            self._changed.set()

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        return [b for _, b in self.messages if isinstance(b, dict) and "seq" in b and event_type in (None, b.get("type"))]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out; got {[b for _, b in self.messages][-15:]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.2))
            except TimeoutError:
                pass

    async def event(self, event_type: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for body in self.events(event_type):
                if all(body.get(k) == v for k, v in match.items()):
                    return body
            return None

        return await self.wait_for(find, timeout)  # type: ignore[no-any-return]


async def publish(host: str, port: int, topic: str, payload: bytes | str, **client_args: Any) -> None:
    async with aiomqtt.Client(host, port, protocol=aiomqtt.ProtocolVersion.V5, **client_args) as client:
        await client.publish(topic, payload, qos=1)
