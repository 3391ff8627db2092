"""The page's view of a call, over a WebRTC data channel.

Events go out as one JSON object per message, ``{"type": ..., ...}``:

==============  ==========================================================
``session``     ``session_id`` — sent when the channel opens
``user_speaking`` ``speaking``, ``turn_id`` — VAD start/stop
``transcript``  ``text``, ``final``, ``turn_id``, ``language``, ``source``
``bot_text``    ``text``, ``turn_id`` — the whole answer the bot means to say
``bot_heard``   ``text``, ``played_s``, ``turn_id`` — what has been played so far
``bot_speaking`` ``speaking``, ``turn_id``, ``interrupted``
``barge_in``    ``turn_id``, ``heard`` — the caller talked over the bot
``latency``     ``turn_id`` plus the turn's figures in ms (``eos_to_first_audio_ms`` …)
``error``       ``message``, ``node``, ``fatal``
``event``       ``kind``, ``data`` — application events (``EventFrame``)
``call_ended``  ``reason``
==============  ==========================================================

The page sends ``{"type": "text", "text": ...}`` (typed input: a whole user
turn, ``UserTurnFrame``), ``{"type": "dtmf", "digit": "5"}`` and ``{"type": "hangup"}``.
A malformed message gets an ``error`` event back and a log line; the call
goes on.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from agent.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    DTMFFrame,
    ErrorFrame,
    EventFrame,
    Frame,
    LLMTurnEndFrame,
    MetricsFrame,
    PlayoutProgressFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnFrame,
)
from agent.session import Session

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 4096
MAX_TEXT_CHARS = 1000
DTMF_DIGITS = frozenset("0123456789*#ABCD")
_MAX_PENDING = 256
_MAX_QUEUED_MESSAGES = 32
#: Typed turns need ids of their own: the VAD numbers spoken turns from 1 and
#: the LLM node numbers its own prompts and keypad turns from 1 000 000.
_typed_turn_ids = itertools.count(2_000_000)

Event = dict[str, Any]


class BadMessage(ValueError):
    """A data-channel message the server cannot act on; the text says why."""


def parse_message(raw: str | bytes) -> Event:
    """Validate one message from the page; raises BadMessage."""
    if isinstance(raw, bytes):
        raise BadMessage("binary messages are not accepted")
    if len(raw) > MAX_MESSAGE_CHARS:
        raise BadMessage(f"message longer than {MAX_MESSAGE_CHARS} characters")
    try:
        message = json.loads(raw)
    except ValueError as exc:
        raise BadMessage(f"not JSON: {exc.msg}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise BadMessage("expected a JSON object with a string 'type'")
    kind = message["type"]
    if kind == "text":
        text = message.get("text")
        if not isinstance(text, str) or not text.strip():
            raise BadMessage("'text' must be a non-empty string")
        if len(text) > MAX_TEXT_CHARS:
            raise BadMessage(f"'text' longer than {MAX_TEXT_CHARS} characters")
        return {"type": "text", "text": text.strip()}
    if kind == "dtmf":
        digit = message.get("digit")
        if not isinstance(digit, str) or digit.upper() not in DTMF_DIGITS:
            raise BadMessage("'digit' must be one of 0-9, *, #, A-D")
        return {"type": "dtmf", "digit": digit.upper()}
    if kind == "hangup":
        return {"type": "hangup"}
    raise BadMessage(f"unknown message type {kind[:40]!r}")


def frame_event(frame: Frame) -> Event | None:
    """The page event for a frame leaving the graph, if the page shows it."""
    if isinstance(frame, TranscriptionFrame):
        return {
            "type": "transcript", "text": frame.text, "final": frame.final,
            "turn_id": frame.turn_id, "language": frame.language, "source": "voice",
        }
    if isinstance(frame, UserStartedSpeakingFrame):
        return {"type": "user_speaking", "speaking": True, "turn_id": frame.turn_id}
    if isinstance(frame, UserStoppedSpeakingFrame):
        return {"type": "user_speaking", "speaking": False, "turn_id": frame.turn_id}
    if isinstance(frame, BotStartedSpeakingFrame):
        return {"type": "bot_speaking", "speaking": True, "turn_id": frame.turn_id, "interrupted": False}
    if isinstance(frame, BotStoppedSpeakingFrame):
        return {"type": "bot_speaking", "speaking": False, "turn_id": frame.turn_id, "interrupted": frame.interrupted}
    if isinstance(frame, LLMTurnEndFrame) and frame.text:
        return {"type": "bot_text", "text": frame.text, "turn_id": frame.turn_id}
    if isinstance(frame, ErrorFrame):
        return {"type": "error", "message": frame.message, "node": frame.node, "fatal": frame.fatal}
    if isinstance(frame, EventFrame):
        return {"type": "event", "kind": frame.kind, "data": frame.data}
    return None


class EventChannel:
    """Bridges one session and one data channel, in both directions.

    Events produced before the page's channel is open wait in a bounded queue
    (the oldest go first if it overflows), so the greeting's transcript is not
    lost to connection set-up.
    """

    def __init__(self, session: Session, *, on_hangup: Callable[[], Awaitable[None]] | None = None) -> None:
        self.session = session
        self.on_hangup = on_hangup
        self.channel: Any = None
        self.bot_speaking = False
        self.messages_in = 0
        self.bad_messages = 0
        self._pending: deque[str] = deque(maxlen=_MAX_PENDING)
        self._heard: dict[int, str] = {}
        self._latency: dict[int, dict[str, Any]] = {}
        self._greeted = False
        self._inbox: asyncio.Queue[Event] = asyncio.Queue(_MAX_QUEUED_MESSAGES)
        self._worker: asyncio.Task[None] | None = None
        self._hanging_up = False
        self._unsubscribe: Callable[[], None] | None = session.subscribe(self._observe)

    # ------------------------------------------------------------- outbound

    def attach(self, channel: Any) -> None:
        """Use this aiortc ``RTCDataChannel`` (the first one the page opens)."""
        if self.channel is not None:
            return
        self.channel = channel
        channel.on("message", self._on_message)
        channel.on("open", self._flush)
        if channel.readyState == "open":
            self._flush()

    def send(self, event: Event) -> None:
        text = json.dumps(event, default=str, separators=(",", ":"))
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(text)
        else:
            self._pending.append(text)

    def _flush(self) -> None:
        if not self._greeted:
            self._greeted = True
            self.channel.send(json.dumps({"type": "session", "session_id": self.session.session_id}))
        while self._pending and self.channel.readyState == "open":
            self.channel.send(self._pending.popleft())

    def _observe(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, PlayoutProgressFrame):
            self._progress(frame)
            return
        if isinstance(frame, MetricsFrame):
            self._latency_of(frame.turn_id)
            return
        event = frame_event(frame)
        if event is None:
            return
        if isinstance(frame, BotStartedSpeakingFrame):
            self.bot_speaking = True
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self.bot_speaking = False
            if frame.interrupted:
                self.send({"type": "barge_in", "turn_id": frame.turn_id, "heard": self._heard.get(frame.turn_id, "")})
        elif isinstance(frame, EventFrame) and frame.kind == "call_ended":
            self.send({"type": "call_ended", "reason": frame.data.get("reason")})
            return
        self.send(event)

    def _progress(self, frame: PlayoutProgressFrame) -> None:
        if frame.text_heard and frame.text_heard != self._heard.get(frame.turn_id):
            self._heard[frame.turn_id] = frame.text_heard
            self.send({"type": "bot_heard", "text": frame.text_heard, "played_s": round(frame.played_s, 2), "turn_id": frame.turn_id})

    def _latency_of(self, turn_id: int) -> None:
        """Send a turn's figures whenever a new mark completes one of them."""
        row = next((r for r in self.session.turns.summary() if r["turn_id"] == turn_id), None)
        if row is None or len(row) < 2 or row == self._latency.get(turn_id):
            return
        self._latency[turn_id] = row
        self.send({"type": "latency", **row})

    # -------------------------------------------------------------- inbound

    def _on_message(self, raw: str | bytes) -> None:
        self.messages_in += 1
        try:
            message = parse_message(raw)
            self._inbox.put_nowait(message)
        except BadMessage as exc:
            self._refuse(str(exc))
            return
        except asyncio.QueueFull:
            self._refuse(f"more than {_MAX_QUEUED_MESSAGES} messages waiting; slow down")
            return
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._act_in_order())

    def _refuse(self, why: str) -> None:
        self.bad_messages += 1
        logger.warning("session %s: bad data-channel message: %s", self.session.session_id, why)
        self.send({"type": "error", "message": f"bad message: {why}", "node": "webrtc", "fatal": False})

    async def _act_in_order(self) -> None:
        """One message at a time, in the order the page sent them."""
        while True:
            message = await self._inbox.get()
            try:
                if message["type"] == "text":
                    await self._typed(message["text"])
                elif message["type"] == "dtmf":
                    await self.session.push(DTMFFrame(digit=message["digit"]))
                elif message["type"] == "hangup" and self.on_hangup is not None:
                    self._hanging_up = True
                    await self.on_hangup()
                    return
            except Exception:
                logger.exception("session %s: acting on a %s message failed", self.session.session_id, message["type"])

    async def _typed(self, text: str) -> None:
        """Typed input is a whole user turn (it skips VAD and end-of-turn
        detection); like speech, it talks over the bot."""
        if self.bot_speaking:
            await self.session.interrupt()
        turn_id = next(_typed_turn_ids)
        self.send({"type": "transcript", "text": text, "final": True, "turn_id": turn_id, "language": None, "source": "text"})
        await self.session.push(UserTurnFrame(text=text, turn_id=turn_id))

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._worker is not None and not self._hanging_up:
            self._worker.cancel()  # (a hang-up message closes the call from inside the worker)
