"""The offline stand-in for the model: deterministic rules, the same tools.

**Not an LLM.** It lets the example run with no API key: a few keyword rules
pick a tool, the tool runs against the database exactly as the model's call
would (and is written into the conversation the same way, an assistant
``tool_calls`` message and a ``tool`` result), and a template turns the result
into a spoken answer. Its only memory is the conversation, which the LLM node
keeps to what the caller actually heard, so an order lookup nobody heard is
forgotten here too. Set ``VOXWIRE_LLM_BASE_URL`` to use a real model instead.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

from agent.conversation import Conversation, Message, UserInput
from agent.openai_llm import Tool
from examples.support.tools import order_number

SYSTEM_PROMPT = (
    "You are the phone support agent of Northwind Outfitters. Answer in one or two short spoken sentences "
    "and read order numbers digit by digit. Call lookup_order before saying anything about an order. Call "
    "refund_order only when the caller asks for a refund. When the caller wants a person, or you cannot "
    "help, call transfer_to_human with a summary for your colleague, then say you are connecting them."
)
GREETING = "Thanks for calling Northwind support. How can I help?"

HUMAN = r"\b(person|human|someone|agent|representative|manager|supervisor|colleague)\b"
REFUND = r"\b(refund|money back|return|damaged|broken|faulty)\b"
BYE = r"\b(bye|goodbye|that's all|that is all)\b"
_ids = itertools.count(1)


class OfflineSupportAgent:
    """An LLM hook ``(conversation, user_input)`` that answers by rules and real tool calls."""

    def __init__(self, tools: list[Tool], *, caller: str) -> None:
        self.tools = {tool.name: tool for tool in tools}
        self.caller = caller

    async def __call__(self, conversation: Conversation, user: UserInput) -> AsyncIterator[str]:
        text = user.text.lower()
        order = order_number(user.text) or _last_order(conversation)
        if re.search(HUMAN, text):
            await self._use(conversation, user.turn_id, "transfer_to_human",
                            {"summary": _summary(conversation, user, self.caller)})
            yield "Of course. I'm connecting you with a colleague who has a summary of this call."
        elif re.search(REFUND, text):
            if order is None:
                yield "I can help with a refund. What's the order number?"
                return
            result = await self._use(conversation, user.turn_id, "refund_order", {"order_id": order, "reason": user.text})
            yield _refund_sentence(order, result)
        elif order is not None:
            result = await self._use(conversation, user.turn_id, "lookup_order", {"order_id": order})
            yield _order_sentence(result)
        elif re.search(BYE, text):
            yield "Thanks for calling Northwind. Goodbye!"
        else:
            yield "I can check an order, refund it, or put you through to a colleague. What's your order number?"

    async def _use(self, conversation: Conversation, turn_id: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Run a tool and write the call and its result into the conversation, as the model's client does."""
        call_id = f"local-{next(_ids)}"
        conversation.messages.append(Message("assistant", "", turn_id, tool_calls=[
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}]))
        result = await self.tools[name].run(arguments)
        conversation.messages.append(Message("tool", result, turn_id, tool_call_id=call_id))
        return json.loads(result)


def _tool_results(conversation: Conversation) -> list[dict[str, Any]]:
    out = []
    for message in conversation.messages:
        if message.role == "tool":
            try:
                out.append(json.loads(message.content))
            except ValueError:
                continue
    return out


def _last_order(conversation: Conversation) -> str | None:
    return next((r["order_id"] for r in reversed(_tool_results(conversation)) if r.get("order_id")), None)


def _summary(conversation: Conversation, user: UserInput, caller: str) -> str:
    """What a colleague needs before saying hello: who, which order, what was done, what is wanted."""
    parts = [f"Caller {caller}."]
    results = _tool_results(conversation)
    order = next((r for r in reversed(results) if r.get("found")), None)
    if order:
        parts.append(f"Order {order['order_id']}: {order['item']}, {order['status']}, {order['total']}.")
    refund = next((r for r in reversed(results) if "refund_id" in r), None)
    if refund and refund.get("ok"):
        parts.append(f"Refunded {refund['amount']} (refund R-{refund['refund_id']}).")
    said = [m.content for m in conversation.messages if m.role == "user"][-3:]
    parts.append("Caller said: " + " / ".join(f'"{s}"' for s in said))
    return " ".join(parts)


def _spaced(order_id: str) -> str:
    return " ".join(order_id)


def _spoken_date(iso: str) -> str:
    day = date.fromisoformat(iso)
    return f"{day.strftime('%A')}, {day.strftime('%B')} {day.day}"


def _order_sentence(result: dict[str, Any]) -> str:
    number = _spaced(result["order_id"])
    if not result.get("found"):
        return f"I couldn't find order {number}. Could you read me the number again?"
    when = _spoken_date(result["date"])
    status = {"delivered": f"was delivered on {when}", "shipped": f"is on its way and should arrive on {when}",
              "processing": f"is being packed and should ship by {when}"}[result["status"]]
    return (f"I found order {number}: {result['item']}, {result['total']}. It {status}. "
            "If anything is wrong with it, I can refund it or put you through to a colleague.")


def _refund_sentence(order: str, result: dict[str, Any]) -> str:
    if result.get("ok"):
        return (f"All right, I've refunded {result['amount']} to your card. "
                f"Your refund number is R {_spaced(str(result['refund_id']))}.")
    return f"I couldn't refund order {_spaced(order)}: {result['why']}."
