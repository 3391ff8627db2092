"""Warm transfer: hand the caller to a person together with a summary of the call.

The agent's ``transfer_to_human`` tool files the summary and calls
:meth:`HandOff.request`; this node then waits until the caller has heard
the answer of that turn ("I'm connecting you with a colleague…") and only then
emits the summary as an ``EventFrame(kind="warm_transfer")`` (for the agent
desktop, the MQTT bus, the browser's data channel) and the ``TransferFrame``
that the telephony transport turns into a SIP REFER or a carrier transfer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from agent.frames import BotStoppedSpeakingFrame, EventFrame, Frame, LLMTurnEndFrame, TransferFrame
from agent.node import DOWNSTREAM, UPSTREAM, Node

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    summary: str
    escalation_id: int
    turn_id: int | None = None  # the answer that announces the transfer


class HandOff(Node):
    """Place between the LLM node and TTS."""

    def __init__(self, target: str, *, name: str | None = None) -> None:
        super().__init__(name=name or "hand_off")
        self.target = target
        self.done: list[dict[str, object]] = []
        self._pending: _Pending | None = None

    def request(self, summary: str, escalation_id: int) -> None:
        self._pending = _Pending(summary, escalation_id)

    async def process(self, frame: Frame, direction: int) -> None:
        await self.emit(frame, direction)
        pending = self._pending
        if pending is None:
            return
        if direction == DOWNSTREAM and isinstance(frame, LLMTurnEndFrame) and pending.turn_id is None:
            pending.turn_id = frame.turn_id
            if not frame.text.strip():  # nothing to hear first
                await self._transfer(pending)
        elif direction == UPSTREAM and isinstance(frame, BotStoppedSpeakingFrame) and frame.turn_id == pending.turn_id:
            await self._transfer(pending)

    async def _transfer(self, pending: _Pending) -> None:
        self._pending = None
        data = {"target": self.target, "summary": pending.summary, "escalation_id": pending.escalation_id}
        self.done.append(data)
        logger.info("warm transfer to %s (escalation %d)", self.target, pending.escalation_id)
        await self.emit(EventFrame(kind="warm_transfer", data=data))
        await self.emit(TransferFrame(target=self.target, reason=f"warm transfer, escalation {pending.escalation_id}"))
