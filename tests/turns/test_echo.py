"""Echo on a speakerphone: the bot's own voice, back at -10 dB and 80 ms, over a phone line.

Two real-time calls on an 8 kHz μ-law line with -35 dBFS noise where the
caller's side hears the bot's audio and sends it back: one with voxwire's
echo canceller (an answer with nobody talking, then an answer the caller
interrupts), and the same first answer without the canceller, to show the
echo alone is enough to stop a bot that does not handle it.
"""

from __future__ import annotations

import asyncio

import pytest

from agent.caller import Step
from bench.turns import run_call
from bench.turns_corpus import PHONE_RATE, speak, to_phone_rate

LONG = "We offer checkups, vaccinations and blood tests, and there is a pharmacy right next door."
ASK = "Tell me about your services."
HOLD_ON = "Hold on a second, please."


def answer(text: str) -> str:
    """The long answer to the question; "Okay." once the caller has cut in."""
    return "Okay." if any(w in text.lower() for w in ("hold", "wait", "stop", "question")) else LONG


def steps(with_barge_in: bool) -> list[Step]:
    ask = to_phone_rate(speak(ASK))
    out = [Step(text=ASK, pcm=ask, after_bot_s=0.4)]
    if with_barge_in:
        out += [Step(text=ASK, pcm=ask, after_bot_s=0.4),
                Step(text=HOLD_ON, pcm=to_phone_rate(speak(HOLD_ON)), during_bot_s=1.5, kind="interruption")]
    return out


def echo_call(config: str, with_barge_in: bool, answer_for=answer):  # type: ignore[no-untyped-def]
    run = asyncio.run(run_call(steps(with_barge_in), rate=PHONE_RATE, config=config, answer_for=answer_for,
                               line=True, echo_db=-10.0, echo_ms=80.0))
    assert run.result.error is None, run.result.error
    return run


@pytest.fixture(scope="module")
def cancelled(models):  # type: ignore[no-untyped-def]
    return echo_call("voxwire", with_barge_in=True)


def first_answer_turn(run) -> int:  # type: ignore[no-untyped-def]
    return run.log.turns[0][1]


def test_the_bots_own_echo_does_not_interrupt_it(cancelled) -> None:  # type: ignore[no-untyped-def]
    first, second = cancelled.caller.spoken[0], cancelled.caller.spoken[1]
    during = [d for d in cancelled.turn_taker.barge_ins if first.end_t < d["t"] < second.start_t]
    assert not during, f"the echo paused the bot: {during}"
    assert cancelled.speaker.played_exactly(first_answer_turn(cancelled))


def test_the_canceller_found_the_echo_path(cancelled) -> None:  # type: ignore[no-untyped-def]
    stats = cancelled.echo.stats
    assert 75.0 <= stats["delay_ms"] <= 90.0, stats
    assert -12.0 <= stats["gain_db"] <= -8.0, stats


def test_a_real_barge_in_over_the_echo_still_stops_the_bot(cancelled) -> None:  # type: ignore[no-untyped-def]
    said = next(s for s in cancelled.caller.spoken if s.step.kind == "interruption")
    stop = cancelled.speaker.stop_after(said.start_t)
    assert stop is not None and stop - said.start_t < 0.3, stop and stop - said.start_t
    made = next(d for d in cancelled.turn_taker.barge_ins if -0.1 < d["t"] - said.start_t < 0.6)
    assert made["resumed"] is False, made


def test_without_the_canceller_the_echo_stops_the_bot(models) -> None:  # type: ignore[no-untyped-def]
    """The scenario is hard: the same answer, echo and line without the canceller."""
    run = echo_call("voxwire-noecho", with_barge_in=False, answer_for=lambda _: "We offer checkups and blood tests.")
    assert run.turn_taker.barge_ins, "echo at -10 dB should reach the VAD when nothing removes it"
