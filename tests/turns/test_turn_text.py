"""How the words so far set the end-of-turn hold, and what counts as a backchannel."""

from __future__ import annotations

import pytest

from agent.turn_text import hold_for, hold_for_transcript, is_backchannel
from agent.turns import TurnParams

P = TurnParams()


@pytest.mark.parametrize(
    ("text", "hold"),
    [
        ("What are your opening hours?", P.hold_question_ms),
        ("Yes.", P.hold_complete_ms),
        ("I need to cancel my appointment.", P.hold_complete_ms),
        ("I'd like to book an appointment for.", P.hold_incomplete_ms),  # Whisper's full stop lies
        ("Um.", P.hold_incomplete_ms),
        ("My phone number is 555.", P.hold_incomplete_ms),
        ("My phone number is 555-123.", P.hold_incomplete_ms),
        ("Call me at 212, 555", P.hold_incomplete_ms),
        ("My phone number is 555-123-4567", P.hold_complete_ms),
        ("My date of birth is March 3, 1985.", P.hold_complete_ms),
        ("The appointment is at 2:30.", P.hold_complete_ms),
        ("I'll be there at quarter past 10.", P.hold_complete_ms),
        ("My member number is 48213", P.hold_default_ms),
        ("Can you tell me?", P.hold_default_ms),
        ("I need a refill for it.", P.hold_default_ms),  # "it" is Whisper filling in a cut clause
        ("I need a refill for mine.", P.hold_default_ms),
        ("I'd like to book an appointment with us.", P.hold_default_ms),
        ("Sorry.", P.hold_incomplete_ms),  # the caller takes the floor: "Sorry, | wait a moment please."
        ("Wait a second.", P.hold_incomplete_ms),
        ("Excuse me.", P.hold_incomplete_ms),
        ("Sorry?", P.hold_question_ms),  # "what did you say?"
        ("Sorry, I need to go.", P.hold_complete_ms),
        ("Hi, what can you help me with?", P.hold_question_ms),  # a stranded preposition ends a question
        ("Who am I speaking to?", P.hold_question_ms),
        ("Do you know where the pharmacy is?", P.hold_question_ms),
        ("Could I book one for?", P.hold_incomplete_ms),  # no wh-word: Whisper's "?" on a cut clause
        ("Where is?", P.hold_incomplete_ms),
        ("Could you check whether my?", P.hold_incomplete_ms),
        ("What about the?", P.hold_incomplete_ms),
        ("I'm not sure.", P.hold_default_ms),  # a hedge holds the floor: "I'm not sure, | maybe next week?"
        ("I don't know.", P.hold_default_ms),
        ("Let me think.", P.hold_default_ms),
        ("Are you sure?", P.hold_question_ms),
        ("I'm sure.", P.hold_complete_ms),
        ("I'm", P.hold_incomplete_ms),  # tiny.en's "um" (bench/turns: "Um, | I think I lost my card.")
        ("Yes, it's.", P.hold_incomplete_ms),  # a contracted auxiliary cannot end a clause
        ("It's John's.", P.hold_complete_ms),  # a possessive can
        ("Tuesday", P.hold_complete_ms),  # Whisper often drops the full stop of a one-word answer
        ("the addresses", P.hold_default_ms),
    ],
)
def test_hold_follows_how_the_words_end(text: str, hold: float) -> None:
    assert hold_for(text, P) == hold


@pytest.mark.parametrize(
    ("text", "confidence", "hold"),
    [
        ("I need to cancel my appointment.", 0.93, P.hold_complete_ms),
        ("my day to purchase.", 0.66, P.hold_unsure_ms),  # tiny.en on "my date of birth is |", phone line
        ("Actually, I need to appoint me.", 0.70, P.hold_unsure_ms),  # "... one for me and | ..."
        ("I must know that I can't come.", 0.36, P.hold_default_ms),
        ("Yes.", 0.40, P.hold_complete_ms),  # one-word answers score low and stay fast
        ("Where can I park?", 0.66, P.hold_question_ms),  # a question keeps its hold
        ("I'd like to book an appointment for", 0.83, P.hold_incomplete_ms),
    ],
)
def test_words_stt_was_unsure_of_wait_longer(text: str, confidence: float, hold: float) -> None:
    assert hold_for_transcript(text, confidence, P) == hold


def test_incomplete_waits_longest_and_questions_least() -> None:
    assert P.hold_question_ms < P.hold_complete_ms < P.hold_default_ms < P.hold_incomplete_ms


@pytest.mark.parametrize("text", ["Mm-hmm.", "Uh-huh", "Yeah.", "okay", "Mhm.", "M-H-N.", "right, right"])
def test_backchannels(text: str) -> None:
    assert is_backchannel(text)


@pytest.mark.parametrize("text", ["Wait, stop.", "What about Saturday?", "in a month", "yeah but no", ""])
def test_not_backchannels(text: str) -> None:
    assert not is_backchannel(text)
