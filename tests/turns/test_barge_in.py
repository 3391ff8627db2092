"""Barge-in on real speech: stop fast, resume exactly after a backchannel or a noise,
and remember only what the caller heard.

One real-time call (16 kHz): the caller asks about services three times; the
bot reads a long answer each time. During the first the caller says
"Mm-hmm.", during the second a -25 dBFS noise burst hits the line, during the
third the caller interrupts for real.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from agent.caller import Step
from bench.turns import run_call
from bench.turns_corpus import RATE, noise_burst, speak

LONG = "We offer checkups, vaccinations and blood tests, and there is a pharmacy right next door."
ASK = "Tell me about your services."
STOP = "Wait, stop. I have a question."


def answer(text: str) -> str:
    """The long answer to the question; "Okay." once the caller has cut in."""
    return "Okay." if any(w in text.lower() for w in ("hold", "wait", "stop", "question")) else LONG


@pytest.fixture(scope="module")
def call(models):  # type: ignore[no-untyped-def]
    ask = speak(ASK)
    steps = [
        Step(text=ASK, pcm=ask, after_bot_s=0.4),
        Step(text="Mm-hmm.", pcm=speak("Mm-hmm."), during_bot_s=1.0, kind="backchannel"),
        Step(text=ASK, pcm=ask, after_bot_s=0.4),
        Step(text="noise", pcm=noise_burst(0.4, RATE, -25.0, seed=4, kind="rumble"), during_bot_s=1.0, kind="noise"),
        Step(text=ASK, pcm=ask, after_bot_s=0.4),
        Step(text=STOP, pcm=speak(STOP), during_bot_s=1.2, kind="interruption"),
    ]
    run = asyncio.run(run_call(steps, rate=RATE, config="voxwire", answer_for=answer))
    assert run.result.error is None, run.result.error
    return run


def spoken(run, kind: str):  # type: ignore[no-untyped-def]
    return next(s for s in run.caller.spoken if s.step.kind == kind)


def answer_turn(run, before: float) -> int:  # type: ignore[no-untyped-def]
    """The turn id of the last answer handed to the LLM before ``before``."""
    return [turn_id for t, turn_id, _ in run.log.turns if t < before][-1]


def decision(run, onset: float) -> dict | None:  # type: ignore[no-untyped-def]
    return next((d for d in run.turn_taker.barge_ins if -0.1 < d["t"] - onset < 0.6), None)


def test_barge_in_stops_the_bot_within_budget(call) -> None:  # type: ignore[no-untyped-def]
    said = spoken(call, "interruption")
    stop = call.speaker.stop_after(said.start_t)
    assert stop is not None, "the bot never paused"
    assert stop - said.start_t < 0.25, f"bot audio went on {1000 * (stop - said.start_t):.0f} ms after the onset"
    assert decision(call, said.start_t)["resumed"] is False
    turn = answer_turn(call, said.start_t)
    assert turn in call.speaker.interrupted_turns
    late = [c.t for c in call.speaker.played if stop + 0.05 < c.t < said.end_t]
    assert not late, "the interrupted answer came back"


def test_a_backchannel_resumes_the_answer_where_it_paused(call) -> None:  # type: ignore[no-untyped-def]
    said = spoken(call, "backchannel")
    made = decision(call, said.start_t)
    assert made is not None and made["resumed"] is True, made
    turn = answer_turn(call, said.start_t)
    assert turn in call.speaker.paused_turns  # it did stop for the "mm-hmm" ...
    assert call.speaker.played_exactly(turn)  # ... and then played every byte, in order


def test_a_noise_burst_does_not_interrupt(call) -> None:  # type: ignore[no-untyped-def]
    said = spoken(call, "noise")
    made = decision(call, said.start_t)
    assert made is None or made["resumed"] is True, made
    turn = answer_turn(call, said.start_t)
    assert turn not in call.speaker.interrupted_turns
    assert call.speaker.played_exactly(turn)


def test_history_after_a_barge_in_holds_only_the_heard_words(call) -> None:  # type: ignore[no-untyped-def]
    said = spoken(call, "interruption")
    turn = answer_turn(call, said.start_t)
    messages = call.llm.conversation.messages
    cut = next(m for m in messages if m.role == "assistant" and m.turn_id == turn)
    assert cut.interrupted
    heard = cut.content.strip()
    assert heard and LONG.startswith(heard) and len(heard) < len(LONG), heard
    # About what ~1.2 s of speech holds: a few words, not the whole answer.
    played_s = len(call.speaker.heard[turn]) / 2 / RATE
    assert len(heard.split()) <= 3.5 * played_s + 2, (heard, played_s)
    after = messages[messages.index(cut) + 1 :]
    assert after and after[0].role == "user" and "stop" in after[0].content.lower(), after
    # The earlier answers were heard whole, the backchannel and noise did not become turns.
    whole = [m for m in messages if m.role == "assistant" and m.content.strip() == LONG]
    assert len(whole) == 2
    assert all("mm" not in m.content.lower() for m in messages if m.role == "user")
    assert np.isfinite(played_s)
