"""The agent's tools: look an order up, refund it, hand the call to a person.

The same three functions serve the real model (as OpenAI function tools) and
the offline stand-in, so both paths touch the database the same way. Results
are small dicts the model can read aloud; money is given in words-friendly
dollars and dates as ISO strings.
"""

from __future__ import annotations

import re
from typing import Any

from agent.openai_llm import Tool
from agent.workers import run_blocking
from examples.support.handoff import HandOff
from examples.support.store import OrderStore

_DIGIT_WORDS = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9"}


def order_number(text: str) -> str | None:
    """A 4-digit order number from spoken words: "4517", "4 5 1 7", "four five one seven"."""
    runs, run = [], ""
    for word in re.findall(r"[a-z]+|\d+", text.lower()):
        digit = _DIGIT_WORDS.get(word, word if word.isdigit() else None)
        if digit is None:
            runs, run = (runs + [run] if run else runs), ""
        else:
            run += digit
    runs += [run] if run else []
    return next((r for r in runs if len(r) == 4), None)


def dollars(cents: int) -> str:
    return f"${cents // 100}.{cents % 100:02d}"


def support_tools(store: OrderStore, handoff: HandOff, *, call_id: str, caller: str) -> list[Tool]:
    """Tools bound to one call (its caller id and its transfer node)."""

    async def lookup_order(order_id: str) -> dict[str, Any]:
        number = order_number(str(order_id)) or str(order_id)
        order = await run_blocking(store.order, number)
        if order is None:
            return {"found": False, "order_id": number}
        return {"found": True, "order_id": number, "item": order["item"], "status": order["status"],
                "total": dollars(order["total_cents"]), "date": order["date"],
                "refunded": order["refund_id"] is not None}

    async def refund_order(order_id: str, reason: str = "") -> dict[str, Any]:
        number = order_number(str(order_id)) or str(order_id)
        result = await run_blocking(store.refund, number, reason or "caller asked")
        if result.get("ok"):
            result["amount"] = dollars(result.pop("amount_cents"))
        return result

    async def transfer_to_human(summary: str) -> dict[str, Any]:
        escalation = await run_blocking(store.escalate, call_id, caller, summary)
        handoff.request(summary, escalation)
        return {"ok": True, "escalation_id": escalation,
                "say": "Tell the caller you are connecting them to a colleague who already has a summary."}

    order_id = {"type": "string", "description": "the 4-digit order number"}
    return [
        Tool("lookup_order", "Find an order by number: item, status, total, delivery date.", lookup_order,
             {"type": "object", "properties": {"order_id": order_id}, "required": ["order_id"]}),
        Tool("refund_order", "Refund a delivered order in full (once per order).", refund_order,
             {"type": "object", "properties": {"order_id": order_id, "reason": {"type": "string"}},
              "required": ["order_id"]}),
        Tool("transfer_to_human", "Hand the call to a human colleague with a short summary of the call so far "
             "(who, which order, what was done, what the caller still wants).", transfer_to_human,
             {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}),
    ]
