"""What the caller's words say about turn-taking: is the sentence over, is it a backchannel?

Whisper ends nearly every transcript with a full stop, pauses included, so
punctuation alone says little; the last words say more. A conjunction, a
preposition or a filler means more is coming; so does a phone number cut
after three or six digits. A question mark is the strongest "your turn" cue
Whisper gives. These rules only choose how long to wait: a caller who goes on
before the bot is heard loses nothing (the turn is reopened).
"""

from __future__ import annotations

import re
from typing import Protocol

BACKCHANNELS = frozenset(
    "mm hmm mhm mmhmm mm-hmm uh-huh uhhuh uh huh yeah yep yes yea ok okay right sure "
    "alright got it i see oh ah aha cool great fine".split()
)
CONTINUATIONS = frozenset(
    "and or but so because um uh er erm the a an to of for with my your our his her their is are was "
    "were at in on from then if which plus minus about by as into than whether actually also".split()
)
NUMBER_WORDS = frozenset(
    "zero oh one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred "
    "thousand double triple".split()
)
#: Words that mean "stop and listen" even in a short burst.
INTENT_WORDS = frozenset(
    "stop wait no nope hold sorry excuse actually what hey hello cancel repeat pardon but halt".split()
)
#: Words a caller takes the floor with ("Sorry, | wait a moment"): a turn of
#: these alone is a preamble, not a request, however Whisper punctuates it.
_FLOOR_WORDS = frozenset(
    "sorry wait hold hang on excuse me pardon actually hey listen well so um uh oh one a just moment "
    "second sec minute".split()
)
_FLOOR_CUES = frozenset("sorry wait hold hang excuse pardon actually hey listen well".split())
#: Endings that usually take a complement ("can you tell me | what time ...").
_OPEN_ENDINGS = (("tell", "me"), ("show", "me"), ("ask", "you"), ("wondering",), ("wonder",))
#: Hedges a caller holds the floor with while deciding ("I'm not sure, | maybe next week?",
#: "I don't know, | I'd have to check"): a statement, but rarely the whole turn.
_HEDGE_ENDINGS = (("not", "sure"), ("don't", "know"), ("let", "me", "think"), ("let", "me", "see"),
                  ("i", "guess"), ("i", "think"), ("i", "mean"), ("maybe",), ("perhaps",))
_PREPOSITIONS = frozenset("for to at with on in of from about by into".split())
#: A question may end on a stranded preposition or copula after a wh-word ("What can you
#: help me with?", "Do you know where the pharmacy is?"): that is complete, not a cut.
_WH_WORDS = frozenset("what who whom whose which where".split())
_STRANDABLE = _PREPOSITIONS | frozenset("is are was were".split())
#: Whisper finishes a clause cut after a preposition with a pronoun that was
#: never said ("I need a refill for | ..." → "I need a refill for it.", "... for mine.",
#: "an appointment with | ..." → "an appointment with us.": tiny.en, seen in bench/turns).
_FILLED_IN = frozenset("it this that them mine us".split())
#: A pronoun with a contracted auxiliary cannot end a clause ("yes, I am", never "yes, I'm"), so
#: a turn ending on one was cut: the caller paused, or Whisper heard "um" as "I'm".
_CONTRACTED_SUBJECTS = frozenset(
    "i'm you're we're they're he's she's it's that's there's what's i've you've we've they've "
    "i'll you'll we'll they'll he'll she'll it'll that'll i'd you'd we'd they'd he'd she'd it'd".split()
)
_DETERMINERS = frozenset("the a an my your our his her their this that these those some".split())
#: Words after which a one- or two-digit number is a time or a day ("at 10", "past 10").
_TIME_WORDS = frozenset("at past to until till before after around by from".split())
_WORD = re.compile(r"[a-z0-9']+(?:-[a-z0-9']+)*")
#: Hums however STT spells them: "mm", "mmm", "hmm", "mhm", "mm-hmm", "mm-mm", "uh-huh", "uhh".
_HUM = re.compile(r"^(?=.*[mh])[mhnuao]+(-[mhnuao]+)*$")
_TRAILING_NUMBER = re.compile(r"(\d[\d\s\-.,:/]*)[^\w]*$")
_TIME = re.compile(r"\b\d{1,2}[:. ]\d{2}(\s*[ap]\.?m\.?)?[^\w]*$", re.IGNORECASE)
_ORDINAL = re.compile(r"^\d+(st|nd|rd|th)$")


class Holds(Protocol):
    hold_question_ms: float
    hold_complete_ms: float
    hold_default_ms: float
    hold_incomplete_ms: float


class ScoredHolds(Holds, Protocol):
    hold_unsure_ms: float
    hold_min_confidence: float
    hold_sure_confidence: float


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def is_backchannel_word(word: str) -> bool:
    return word in BACKCHANNELS or bool(_HUM.match(word))


def is_backchannel(text: str) -> bool:
    """Short acknowledgements that must not stop the bot."""
    words = words_of(text)
    return 0 < len(words) <= 3 and all(is_backchannel_word(w) for w in words)


def hold_for(text: str, holds: Holds) -> float:
    """How long (ms after the end of speech) to wait for more, from how the words end."""
    stripped = text.strip()
    words = words_of(stripped)
    if not words:
        return holds.hold_default_ms
    last = words[-1]
    if _stranded_question(stripped, words):
        return holds.hold_question_ms
    if stripped.endswith((",", "...", "…", "-", ":")) or last in CONTINUATIONS or last in _CONTRACTED_SUBJECTS:
        return holds.hold_incomplete_ms
    if not stripped.endswith("?") and set(words) <= _FLOOR_WORDS and _FLOOR_CUES.intersection(words):
        return holds.hold_incomplete_ms
    if any(tuple(words[-len(e):]) == e for e in _OPEN_ENDINGS):
        return holds.hold_default_ms
    if not stripped.endswith("?") and any(tuple(words[-len(e):]) == e for e in _HEDGE_ENDINGS):
        return holds.hold_default_ms
    if len(words) >= 3 and last in _FILLED_IN and words[-2] in _PREPOSITIONS:
        return holds.hold_default_ms
    number = _number_ending(stripped, words)
    if number is not None:
        return {"open": holds.hold_incomplete_ms, "unknown": holds.hold_default_ms}.get(
            number, holds.hold_question_ms if stripped.endswith("?") else holds.hold_complete_ms
        )
    if stripped.endswith("?"):
        return holds.hold_question_ms
    if stripped.endswith((".", "!")):
        return holds.hold_complete_ms
    if len(words) <= 2 and words[0] not in _DETERMINERS:
        return holds.hold_complete_ms  # "Tuesday", "thank you": Whisper drops the full stop on short answers
    return holds.hold_default_ms


def hold_for_transcript(text: str, confidence: float | None, holds: ScoredHolds) -> float:
    """:func:`hold_for`, longer when STT was unsure of two words or more (see ``TurnParams``)."""
    hold = hold_for(text, holds)
    if confidence is None or len(words_of(text)) < 2:
        return hold
    if confidence < holds.hold_min_confidence:
        return max(hold, holds.hold_default_ms)
    if confidence < holds.hold_sure_confidence and hold == holds.hold_complete_ms:
        return holds.hold_unsure_ms
    return hold


def _stranded_question(text: str, words: list[str]) -> bool:
    """ "What are you looking for?": a wh-word at least two words back, and the question mark.

    Without the wh-word ("Could I book one for?") or right before the end ("Where is?")
    it is Whisper punctuating a cut clause, which stays incomplete.
    """
    return text.endswith("?") and words[-1] in _STRANDABLE and bool(_WH_WORDS.intersection(words[:-2]))


def _number_ending(text: str, words: list[str]) -> str | None:
    """"open" (a phone number cut after a group), "closed" (a whole number, a time, a year),
    "unknown" (an ordinal, a code of unknown length), or None (no number at the end)."""
    last = words[-1]
    if last in NUMBER_WORDS:
        trailing = 0
        for word in reversed(words):
            if word not in NUMBER_WORDS:
                break
            trailing += 1
        return "open" if trailing >= 2 else "unknown"  # "five five five" vs "he's seven"
    if _ORDINAL.match(last):
        return "unknown"
    match = _TRAILING_NUMBER.search(text)
    if match is None:
        return None
    if _TIME.search(text):
        return "closed"
    groups = re.findall(r"\d+", match.group(1))
    if len(groups[-1]) == 4 and groups[-1][:2] in ("19", "20") and (len(groups) == 1 or len(groups[-2]) <= 2):
        return "closed"  # a year: "March 3, 1985"
    if len(groups) == 1 and len(groups[0]) <= 2 and len(words) >= 2 and words[-2] in _TIME_WORDS:
        return "closed"  # "at 10", "quarter past 10"
    digits = sum(len(g) for g in groups)
    if digits in (3, 6):
        return "open"  # "555", "555-123": the rest of the phone number is coming
    if digits in (7, 10, 11):
        return "closed"
    return "unknown"
