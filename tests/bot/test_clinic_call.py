"""A whole phone call to the embedded clinic bot, on the real models.

One scripted call (8 kHz μ-law caller) is run once; each test checks one thing
a caller would notice: they were understood, the answer is audible and says
what the bot meant, a backchannel does not stop the bot, a barge-in does, and
the bot's memory holds only what the caller heard.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from agent.audio import resample
from agent.caller import ScriptedCaller, Step
from agent.clinic import ANSWERS, clinic_bot
from agent.demo import RATE, bot_stop_after, phone_line, trim
from agent.llm import LLMNode
from agent.session import Session
from agent.turns import TurnTaker
from transports.local import RecordingOutput


def say(text: str, **options) -> Step:  # type: ignore[no-untyped-def]
    from tts.piper import load_voice, synthesize_blocking

    voice = load_voice()
    pcm = trim(phone_line(synthesize_blocking(voice, text, volume=0.5), voice.config.sample_rate))
    return Step(text=text, pcm=pcm, **options)


def transcribe_8k(samples: np.ndarray) -> str:
    from stt.models import load_model, resolve_model
    from stt.whisper import transcribe

    wide = resample(samples, RATE, 16000).astype(np.int16)
    return transcribe(load_model(resolve_model(None)), wide, language="en")[0]


@pytest.fixture(scope="module")
def call():  # type: ignore[no-untyped-def]
    steps = [
        say("What are your opening hours?"),
        say("Mm-hmm.", during_bot_s=1.2, kind="backchannel"),
        say("Where are you located?", during_bot_s=3.5, kind="barge_in"),
    ]
    caller = ScriptedCaller(steps, sample_rate=RATE)
    bot = clinic_bot()
    speaker = RecordingOutput(sample_rate=RATE)
    session = Session([caller, *bot, speaker], input_sample_rate=RATE, output_sample_rate=RATE,
                      max_duration_s=90)
    result = asyncio.run(session.run())
    llm = next(n for n in bot if isinstance(n, LLMNode))
    turns = next(n for n in bot if isinstance(n, TurnTaker))
    return {"result": result, "caller": caller, "speaker": speaker, "llm": llm, "turns": turns}


def spoken(call, kind: str):  # type: ignore[no-untyped-def]
    return next(s for s in call["caller"].spoken if s.step.kind == kind)


def test_call_completes_without_errors(call) -> None:  # type: ignore[no-untyped-def]
    assert call["result"].reason == "caller_finished", call["result"].error
    assert [s.step.kind for s in call["caller"].spoken] == ["turn", "backchannel", "barge_in"]


def test_caller_is_understood(call) -> None:  # type: ignore[no-untyped-def]
    users = [m.content.lower() for m in call["llm"].conversation.messages if m.role == "user"]
    assert any("open" in u for u in users), users
    assert any("located" in u or "where" in u for u in users), users


def test_bot_answer_is_audible_and_says_what_it_meant(call) -> None:  # type: ignore[no-untyped-def]
    played = call["speaker"].played
    first = spoken(call, "turn")
    barge = spoken(call, "barge_in")
    answer = [c.pcm for c in played if first.end_t < c.t < barge.start_t]
    audio = np.frombuffer(b"".join(answer), dtype=np.int16)
    assert len(audio) > RATE * 2  # seconds of answer, not a blip
    heard = transcribe_8k(audio).lower()
    assert "monday" in heard and "friday" in heard, heard


def test_backchannel_pauses_then_resumes_the_answer(call) -> None:  # type: ignore[no-untyped-def]
    decisions = call["turns"].barge_ins
    assert decisions[0]["resumed"] is True, decisions
    hum = spoken(call, "backchannel")
    barge = spoken(call, "barge_in")
    after_hum = [c for c in call["speaker"].played if hum.end_t < c.t < barge.start_t]
    assert len(after_hum) * 0.02 > 0.3, "the answer did not resume after the backchannel"


def test_barge_in_stops_the_bot_fast(call) -> None:  # type: ignore[no-untyped-def]
    barge = spoken(call, "barge_in")
    stop = bot_stop_after([c.t for c in call["speaker"].played], barge.start_t)
    assert stop is not None
    assert stop - barge.start_t < 0.4, f"bot kept talking {stop - barge.start_t:.3f} s"
    assert call["turns"].barge_ins[-1]["resumed"] is False


def test_history_keeps_only_the_heard_words(call) -> None:  # type: ignore[no-untyped-def]
    answers = [m for m in call["llm"].conversation.messages if m.role == "assistant"]
    hours = next(m for m in answers if "Monday" in m.content)
    assert hours.interrupted
    assert ANSWERS["hours"].startswith(hours.content)
    assert len(hours.content) < len(ANSWERS["hours"])
    assert any("Maple Street" in m.content for m in answers)  # the located question got its answer
