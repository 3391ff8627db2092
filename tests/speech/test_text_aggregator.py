"""LLM deltas become speakable clauses as early as they are known to be complete."""

from __future__ import annotations

import pytest

from tts.text_aggregator import ClauseAggregator, clean_for_speech


def stream(text: str, step: int, aggregator: ClauseAggregator | None = None) -> list[tuple[str, list[str]]]:
    """Push ``text`` in deltas of ``step`` characters; return (text so far, clauses) at each cut."""
    aggregator = aggregator or ClauseAggregator()
    cuts = []
    for i in range(0, len(text), step):
        clauses = aggregator.push(text[i : i + step])
        if clauses:
            cuts.append((text[: i + step], clauses))
    rest = aggregator.flush()
    if rest:
        cuts.append((text, rest))
    return cuts


ANSWER = (
    "Sure, let me check that for you. Dr. Smith has an opening at 3.30 p.m. on Tuesday, "
    "the 4th of March, and the fee is $1,200. Would that work? Great!\nBring your card."
)


@pytest.mark.parametrize("step", [1, 3, 7, 1000])
def test_same_clauses_whatever_the_delta_size(step: int) -> None:
    clauses = [c for _, cut in stream(ANSWER, step) for c in cut]
    assert clauses == [
        "Sure, let me check that for you.",
        "Dr. Smith has an opening at 3.30 p.m. on Tuesday,",
        "the 4th of March, and the fee is $1,200.",
        "Would that work?",
        "Great!",
        "Bring your card.",
    ]


def test_sentence_is_cut_the_moment_its_punctuation_arrives() -> None:
    """No waiting for the next character (or the end of the turn) after '?', '!' or a plain full stop."""
    aggregator = ClauseAggregator()
    assert aggregator.push("Would that work") == []
    assert aggregator.push("?") == ["Would that work?"]
    assert aggregator.push(" Your visit is booked") == []
    assert aggregator.push(".") == ["Your visit is booked."]


def test_first_clause_is_cut_at_a_comma_once_it_has_enough_words() -> None:
    aggregator = ClauseAggregator(first_clause_min_words=4)
    assert aggregator.push("Okay,") == []  # too short to sound right alone
    assert aggregator.push(" your appointment on Tuesday,") == ["Okay, your appointment on Tuesday,"]
    # Later clauses keep sentence prosody: a comma after a few words does not cut.
    assert aggregator.push(" at nine,") == []
    assert aggregator.push(" is confirmed.") == ["at nine, is confirmed."]


@pytest.mark.parametrize(
    ("text", "continuation"),
    [("It costs $3.", "50 today."), ("That is 1,", "000 dollars."), ("Come at 9:", "30 please."), ("Ask Dr.", " Smith now.")],
)
def test_ambiguous_marks_wait_for_the_next_character(text: str, continuation: str) -> None:
    aggregator = ClauseAggregator(first_clause_min_words=1)
    assert aggregator.push(text) == []
    assert aggregator.push(continuation) + aggregator.flush() == [text + continuation]


def test_numbers_initials_and_abbreviations_stay_whole() -> None:
    aggregator = ClauseAggregator(first_clause_min_words=1)
    out = aggregator.push("Call J. Smith at 555.0199 e.g. tomorrow, or Mr. Jones. ")
    assert out == ["Call J. Smith at 555.0199 e.g. tomorrow,", "or Mr. Jones."]


def test_a_long_run_without_punctuation_is_cut_at_a_word() -> None:
    aggregator = ClauseAggregator(max_words=12)
    words = " ".join(f"word{i}" for i in range(30)) + " "
    clauses = aggregator.push(words)
    assert clauses and all(len(c.split()) <= 13 for c in clauses)
    assert " ".join(clauses + aggregator.flush()).split() == words.split()


def test_markdown_and_punctuation_leftovers_are_not_spoken() -> None:
    assert ClauseAggregator().split("**Note:** the `clinic` is *closed*.\n- Monday\n- Tuesday ...") == [
        "Note: the clinic is closed.",
        "Monday",
        "Tuesday ...",
    ]
    assert clean_for_speech("## Hours") == " Hours"
    aggregator = ClauseAggregator()
    assert aggregator.push("Wait.") == ["Wait."]
    assert aggregator.push("..") == [] and aggregator.flush() == []


def test_reset_forgets_an_interrupted_answer() -> None:
    aggregator = ClauseAggregator()
    aggregator.push("Your balance is")
    aggregator.reset()
    assert aggregator.push(" Hello there, how can I help you today?") == ["Hello there, how can I help you today?"]
