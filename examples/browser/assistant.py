"""A small voice assistant with one tool: a unit converter.

The tool is an ordinary function, offered to a real model as an OpenAI
function tool (``VOXWIRE_LLM_BASE_URL``); offline, :class:`OfflineAssistant` —
keyword rules, **not an LLM** — recognises "X <unit> in <unit>" and calls the
same tool, so both paths give the same numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from agent.conversation import Conversation, Message, UserInput
from agent.openai_llm import Tool

GREETING = "Hi! Ask me to convert units."
SYSTEM_PROMPT = ("You are a friendly voice assistant in a web page. Answer in one short spoken sentence. "
                 "For any unit conversion, call convert_units and read its result.")

#: unit -> (quantity, factor to the base unit); temperatures are handled apart.
UNITS: dict[str, tuple[str, float]] = {
    "meter": ("length", 1.0), "kilometer": ("length", 1000.0), "centimeter": ("length", 0.01),
    "mile": ("length", 1609.344), "foot": ("length", 0.3048), "inch": ("length", 0.0254), "yard": ("length", 0.9144),
    "kilogram": ("mass", 1.0), "gram": ("mass", 0.001), "pound": ("mass", 0.45359237), "ounce": ("mass", 0.028349523),
    "liter": ("volume", 1.0), "milliliter": ("volume", 0.001), "gallon": ("volume", 3.785411784),
    "cup": ("volume", 0.2365882365),
    "kilometer per hour": ("speed", 1 / 3.6), "mile per hour": ("speed", 0.44704), "meter per second": ("speed", 1.0),
    "celsius": ("temperature", 1.0), "fahrenheit": ("temperature", 1.0), "kelvin": ("temperature", 1.0),
}
ALIASES = {"km": "kilometer", "kilometre": "kilometer", "metre": "meter", "m": "meter", "cm": "centimeter",
           "feet": "foot", "inches": "inch", "lb": "pound", "lbs": "pound", "kg": "kilogram", "kilo": "kilogram",
           "litre": "liter", "l": "liter", "ml": "milliliter", "km/h": "kilometer per hour", "kph": "kilometer per hour",
           "mph": "mile per hour", "mile an hour": "mile per hour", "kilometer an hour": "kilometer per hour",
           "c": "celsius", "centigrade": "celsius", "f": "fahrenheit", "k": "kelvin"}


def _singular(word: str) -> str:
    if word == "feet":
        return "foot"
    if word.endswith("ches"):  # inches
        return word[:-2]
    return word[:-1] if word.endswith("s") and word not in ("celsius", "s") else word


def unit_name(text: str) -> str | None:
    """The canonical unit for a spoken or written name ("Miles", "degrees Fahrenheit", "km/h")."""
    name = " ".join(re.findall(r"[a-z/]+", re.sub(r"\bdegrees?\b", " ", text.lower())))
    for candidate in (name, " ".join(_singular(w) for w in name.split())):
        candidate = ALIASES.get(candidate, candidate)
        if candidate in UNITS:
            return candidate
    return None


def _to_kelvin(value: float, unit: str) -> float:
    return {"celsius": value + 273.15, "fahrenheit": (value - 32) * 5 / 9 + 273.15, "kelvin": value}[unit]


def _from_kelvin(value: float, unit: str) -> float:
    return {"celsius": value - 273.15, "fahrenheit": (value - 273.15) * 9 / 5 + 32, "kelvin": value}[unit]


def convert_units(value: float, from_unit: str, to_unit: str) -> dict[str, Any]:
    """The tool: ``value`` in ``from_unit`` expressed in ``to_unit``."""
    source, target = unit_name(from_unit), unit_name(to_unit)
    if source is None or target is None:
        return {"error": f"unknown unit {from_unit if source is None else to_unit!r}"}
    if UNITS[source][0] != UNITS[target][0]:
        return {"error": f"cannot convert {UNITS[source][0]} to {UNITS[target][0]}"}
    if UNITS[source][0] == "temperature":
        result = _from_kelvin(_to_kelvin(float(value), source), target)
    else:
        result = float(value) * UNITS[source][1] / UNITS[target][1]
    return {"value": float(value), "from": source, "to": target, "result": round(result, 2)}


CONVERT_TOOL = Tool(
    "convert_units", "Convert a quantity between units of length, mass, volume, speed or temperature.",
    convert_units,
    {"type": "object", "properties": {"value": {"type": "number"}, "from_unit": {"type": "string"},
                                      "to_unit": {"type": "string"}},
     "required": ["value", "from_unit", "to_unit"]},
)

_NUMBER = r"(-?\d+(?:[.,]\d+)?)"
_WORDS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
_QUESTIONS = (  # (pattern, group of value, of source unit, of target unit)
    (re.compile(rf"how many ([a-z/ ]+?) (?:is|are|in|make)(?: in)? (?:a |an )?{_NUMBER} ([a-z/ ]+)"), 2, 3, 1),
    (re.compile(rf"{_NUMBER} ([a-z/ ]+?) (?:to|in|into|as) ([a-z/ ]+)"), 1, 2, 3),
)


def _plural(unit: str, value: float) -> str:
    if unit in ("celsius", "fahrenheit", "kelvin"):
        return f"degrees {unit.capitalize()}" if unit != "kelvin" else "kelvin"
    if value == 1:
        return unit
    return {"foot": "feet", "inch": "inches"}.get(unit, re.sub(r"^(\w+)", r"\1s", unit))


def say_number(value: float) -> str:
    return f"{value:g}"


class OfflineAssistant:
    """The offline stand-in for the model: finds a conversion in the words and calls the tool."""

    def __init__(self, tool: Tool = CONVERT_TOOL) -> None:
        self.tool = tool

    async def __call__(self, conversation: Conversation, user: UserInput) -> AsyncIterator[str]:
        text = re.sub(r"\b(" + "|".join(_WORDS) + r")\b", lambda m: _WORDS[m.group(1)], user.text.lower())
        text = text.replace(",", "")
        for pattern, value_at, source_at, target_at in _QUESTIONS:
            match = pattern.search(text)
            if match and unit_name(match.group(source_at)) and unit_name(match.group(target_at)):
                arguments = {"value": float(match.group(value_at)), "from_unit": match.group(source_at),
                             "to_unit": match.group(target_at)}
                result = json.loads(await self._use(conversation, user.turn_id, arguments))
                if "error" in result:
                    yield f"Sorry, {result['error']}."
                else:
                    yield (f"{say_number(result['value'])} {_plural(result['from'], result['value'])} is "
                           f"{say_number(result['result'])} {_plural(result['to'], result['result'])}.")
                return
        yield "I can convert units. Ask me something like: how many pounds is five kilograms?"

    async def _use(self, conversation: Conversation, turn_id: int, arguments: dict[str, Any]) -> str:
        """Run the tool and record the call and result in the conversation, as the model's client does."""
        call_id = f"local-{turn_id}"
        conversation.messages.append(Message("assistant", "", turn_id, tool_calls=[
            {"id": call_id, "type": "function",
             "function": {"name": self.tool.name, "arguments": json.dumps(arguments)}}]))
        result = await self.tool.run(arguments)
        conversation.messages.append(Message("tool", result, turn_id, tool_call_id=call_id))
        return result
