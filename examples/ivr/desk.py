"""What the clinic line says and does: a small menu state machine.

Pure call logic, no audio and no frames: it gets the caller's words or keypad
digit and returns a :class:`Reply` — the text to speak and, optionally, an
action to perform once the caller has *heard* it (transfer, hang up, take a
message). ``examples.ivr.line.IVRNode`` puts it on a call.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time

from agent.workers import run_blocking
from examples.ivr.clinic_db import ClinicBook, next_weekday

# ------------------------------------------------------------------ prompts

GREETING = "Thank you for calling Maple Street Clinic."
LEGAL_NOTICE = "This call may be recorded for quality and training purposes."
MENU = ("To book an appointment, say appointment, or press one. For our opening hours, press two. "
        "To speak to the front desk, say front desk, or press zero.")
HOURS = ("We're open Monday to Friday from eight in the morning to six in the evening, "
         "and on Saturday from eight until noon.")
CLOSED = "We're closed right now. Please leave your name, your number and a short message after the tone."
ASK_DAY = "Sure. Which day would you like? Say a weekday, or press one for Monday through five for Friday."
ANYTHING_ELSE = "Anything else? Say front desk, or goodbye."
TRANSFER = "Connecting you to the front desk. Please hold."
GOODBYE = "Thank you for calling Maple Street Clinic. Goodbye!"
MESSAGE_SAVED = "Thank you, your message has been recorded. Goodbye!"
NOT_CAUGHT = "Sorry, I didn't catch that. "

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday")
OPEN_HOURS = {0: (8, 18), 1: (8, 18), 2: (8, 18), 3: (8, 18), 4: (8, 18), 5: (8, 12)}  # weekday -> [open, close)

INTENTS = (  # checked in order: asking for a person wins over everything else
    ("front_desk", r"\b(front desk|desk|human|person|someone|operator|receptionist|representative)\b"),
    ("goodbye", r"\b(bye|goodbye|that's all|that is all|nothing else|no thanks)\b"),
    ("book", r"\b(appointment|book|booking|schedule|see (a|the) doctor)\b"),
    ("hours", r"\b(hours|open|opening|close|closing)\b"),
    ("menu", r"\b(menu|repeat|options)\b"),
)
MENU_KEYS = {"1": "book", "2": "hours", "0": "front_desk", "*": "menu"}


# ------------------------------------------------------------------ replies


@dataclass(frozen=True, slots=True)
class Transfer:
    target: str


@dataclass(frozen=True, slots=True)
class HangUp:
    reason: str = "bot_hangup"


@dataclass(frozen=True, slots=True)
class TakeMessage:
    """Play a tone, then record the caller's message (after-hours voicemail)."""


Action = Transfer | HangUp | TakeMessage


@dataclass(slots=True)
class Reply:
    text: str
    then: Action | None = None
    """Done once the caller has heard ``text`` (or cut it off)."""
    undo: Callable[[], Awaitable[None]] | None = None
    """Reverts a side effect if the caller never heard this reply (their turn was reopened)."""


@dataclass(slots=True)
class Prompt:
    text: str
    uninterruptible: bool = False
    then: Action | None = None


# --------------------------------------------------------------------- desk


@dataclass
class ClinicDesk:
    """One call's menu state. ``now`` is the clinic's local time when the call began."""

    book: ClinicBook
    caller: str
    call_id: str
    now: datetime
    front_desk: str
    state: str = "menu"  # "menu" | "day" | "voicemail"
    booked: list[int] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        hours = OPEN_HOURS.get(self.now.weekday())
        return hours is not None and hours[0] <= self.now.hour < hours[1]

    def opening(self) -> list[Prompt]:
        """The first words of the call: greeting, the (uninterruptible) notice, menu or voicemail."""
        prompts = [Prompt(GREETING), Prompt(LEGAL_NOTICE, uninterruptible=True)]
        if self.is_open:
            return [*prompts, Prompt(MENU)]
        self.state = "voicemail"
        return [*prompts, Prompt(CLOSED, then=TakeMessage())]

    def snapshot(self) -> str:
        return self.state

    def restore(self, state: str) -> None:
        self.state = state

    async def answer(self, text: str = "", digit: str | None = None) -> Reply:
        if self.state == "voicemail":
            return Reply("")  # the recorder is listening; the bot stays quiet
        intent = MENU_KEYS.get(digit or "") if self.state == "menu" else None
        if intent is None and digit in ("0", "*"):
            intent = MENU_KEYS[digit]
        if intent is None and not digit:
            intent = next((name for name, pattern in INTENTS if re.search(pattern, text.lower())), None)
        if self.state == "day" and intent in (None, "book"):
            day = _weekday_from(text, digit)
            if day is not None:
                return await self._book(day)
        if intent == "book":
            self.state = "day"
            return Reply(ASK_DAY)
        if intent == "hours":
            return Reply(HOURS + " " + ANYTHING_ELSE)
        if intent == "front_desk":
            return Reply(TRANSFER, then=Transfer(self.front_desk))
        if intent == "goodbye":
            return Reply(GOODBYE, then=HangUp())
        if intent == "menu":
            self.state = "menu"
            return Reply(MENU)
        return Reply(NOT_CAUGHT + (ASK_DAY if self.state == "day" else MENU))

    async def _book(self, weekday: int) -> Reply:
        day = next_weekday(self.now.date(), weekday)
        found = await run_blocking(self.book.book_first_free, day, self.caller, self.call_id)
        if found is None:
            return Reply(f"Sorry, {WEEKDAYS[weekday].capitalize()} is fully booked. Which other day would you like?")
        self.state = "menu"
        self.booked.append(found.id)

        async def undo() -> None:
            await run_blocking(self.book.cancel, found.id)
            self.booked.remove(found.id)

        return Reply(f"You're booked for {spoken_date(day)}, at {spoken_time(found.slot)}. {ANYTHING_ELSE}",
                     undo=undo)


def _weekday_from(text: str, digit: str | None) -> int | None:
    if digit is not None:
        return int(digit) - 1 if digit in "12345" else None
    words = text.lower()
    return next((i for i, name in enumerate(WEEKDAYS) if name in words), None)


_NUMBERS = ("twelve", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven")
_ORDINALS = ("", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
             "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
             "eighteenth", "nineteenth", "twentieth", "twenty-first", "twenty-second", "twenty-third",
             "twenty-fourth", "twenty-fifth", "twenty-sixth", "twenty-seventh", "twenty-eighth", "twenty-ninth",
             "thirtieth", "thirty-first")


def spoken_date(day: date) -> str:
    """Words a TTS voice reads well: "Tuesday, March the fourth"."""
    return f"{day.strftime('%A')}, {day.strftime('%B')} the {_ORDINALS[day.day]}"


def spoken_time(slot: time) -> str:
    """ "nine thirty in the morning", "two in the afternoon"."""
    minutes = " thirty" if slot.minute == 30 else ""
    part = "in the morning" if slot.hour < 12 else "in the afternoon"
    return f"{_NUMBERS[slot.hour % 12]}{minutes} {part}"
