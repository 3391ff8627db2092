"""The clinic phone line (examples/ivr), through scripted phone calls on the real models.

Two calls run once each (8 kHz μ-law caller, piper voice): one in opening
hours — the caller talks over the legal notice, books by voice and keypad,
then cuts the bot off to ask for the front desk — and one after hours that
leaves a voicemail. Each test checks what a caller or the clinic would notice:
words heard, rows in the SQLite file, the transfer, the recording.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest
import soundfile

from examples.ivr.bot import ClinicConfig, make_ivr_bot
from examples.ivr.desk import ASK_DAY, MENU, TRANSFER
from examples.ivr.line import IVRNode
from examples.ivr.simulate import RATE, CallRecord, press, say, scripted_call
from tests.examples.conftest import heard

OPEN = datetime(2026, 3, 3, 10, 0)  # a Tuesday morning
CLOSED = datetime(2026, 3, 3, 21, 0)


@pytest.fixture(scope="module")
def clinic(tmp_path_factory: pytest.TempPathFactory) -> ClinicConfig:
    folder = tmp_path_factory.mktemp("clinic")
    return ClinicConfig(db_path=folder / "clinic.sqlite3", recordings=folder / "voicemail",
                        front_desk="sip:frontdesk@clinic.example")


@pytest.fixture(scope="module")
def calls(clinic: ClinicConfig) -> dict[str, CallRecord]:
    """Both calls at once, in one process, as a server would take them."""
    open_line = make_ivr_bot(ClinicConfig(clinic.db_path, clinic.recordings, clinic.front_desk, now=lambda: OPEN))
    closed_line = make_ivr_bot(ClinicConfig(clinic.db_path, clinic.recordings, clinic.front_desk,
                                            now=lambda: CLOSED))
    booking = [
        say("I'd like to book an appointment, please.", during_bot_s=3.4, kind="over_notice"),
        press("2"),  # Tuesday
        say("Can I talk to the front desk?", during_bot_s=4.2, kind="barge_in"),
    ]
    message = [say("Hi, this is Dana Smith. Please call me back about my blood test results.", after_bot_s=0.8)]

    async def both() -> list[CallRecord]:
        return await asyncio.gather(
            scripted_call(open_line, booking, caller_id="+15550123", max_duration_s=90),
            scripted_call(closed_line, message, caller_id="+15550199", max_duration_s=60),
        )

    open_call, closed_call = asyncio.run(both())
    return {"open": open_call, "closed": closed_call}


@pytest.fixture(scope="module")
def open_call(calls: dict[str, CallRecord]) -> CallRecord:
    return calls["open"]


@pytest.fixture(scope="module")
def closed_call(calls: dict[str, CallRecord]) -> CallRecord:
    return calls["closed"]


def test_open_call_goes_through_the_menu(open_call: CallRecord) -> None:
    ivr = open_call.node(IVRNode)
    assert open_call.result.reason == "caller_finished", open_call.result.error
    assert ASK_DAY in ivr.said and TRANSFER in ivr.said, ivr.said


def test_the_legal_notice_is_heard_in_full_even_when_the_caller_talks_over_it(open_call, whisper) -> None:  # type: ignore[no-untyped-def]
    over = open_call.caller.spoken[0]
    keypad = open_call.caller.spoken[1]
    before_keypad = heard(whisper, open_call.bot_audio(end=keypad.start_t), RATE)
    assert "may be recorded for quality and training purposes" in before_keypad, before_keypad
    # The menu, which was not protected, was cut by the same words: its end was never played.
    assert "press zero" not in before_keypad, before_keypad
    assert "which day" in before_keypad  # and the caller's request was answered
    assert open_call.caller.spoken[0].step.kind == "over_notice" and over.start_t < keypad.start_t


def test_booking_by_voice_and_keypad_is_stored_and_confirmed(open_call, clinic, whisper) -> None:  # type: ignore[no-untyped-def]
    with sqlite3.connect(clinic.db_path) as db:
        rows = db.execute("SELECT caller, day, slot FROM appointments WHERE call_id LIKE 'sim%'").fetchall()
    assert ("+15550123", "2026-03-10", "09:00") in rows  # the next Tuesday, first free slot
    keypad = open_call.caller.spoken[1]
    barge = open_call.caller.spoken[2]
    confirmation = heard(whisper, open_call.bot_audio(keypad.end_t, barge.start_t), RATE)
    assert "tuesday" in confirmation and ("tenth" in confirmation or "10th" in confirmation), confirmation


def test_keypad_answer_latency(open_call: CallRecord) -> None:
    latency_ms = open_call.answer_latencies_ms()[1]
    assert latency_ms < 1000, f"the keypad answer took {latency_ms:.0f} ms"


def test_caller_cuts_the_bot_off_and_is_transferred_after_hearing_why(open_call, whisper) -> None:  # type: ignore[no-untyped-def]
    keypad, barge = open_call.caller.spoken[1], open_call.caller.spoken[2]
    played = [c.t for c in open_call.speaker.played if c.t >= barge.start_t - 0.02]
    cut = next(i for i, (a, b) in enumerate(zip(played, played[1:])) if b - a > 0.1)
    stop, resume = played[cut] + 0.02, played[cut + 1]
    print(f"\nivr: caller starts talking → bot quiet: {(stop - barge.start_t) * 1000:.0f} ms; "
          f"answers: {[round(x) for x in open_call.answer_latencies_ms()]} ms")
    assert stop - barge.start_t < 0.5, f"the bot talked on for {stop - barge.start_t:.2f} s"
    cut_short = heard(whisper, open_call.bot_audio(keypad.end_t, stop), RATE)
    assert "tuesday" in cut_short and "goodbye" not in cut_short, cut_short  # the confirmation's end was cut
    assert "front desk" in heard(whisper, open_call.bot_audio(resume), RATE)  # the announcement
    transfers = open_call.transfers()
    assert [f.target for _, f in transfers] == ["sip:frontdesk@clinic.example"]
    assert transfers[0][0] >= open_call.speaker.played[-1].t, "transferred before the announcement was heard"


def test_after_hours_the_caller_leaves_a_voicemail(closed_call, clinic) -> None:  # type: ignore[no-untyped-def]
    ivr = closed_call.node(IVRNode)
    assert closed_call.result.reason == "bot_hangup"
    assert [kind for kind, _ in ivr.actions] == ["voicemail", "hangup"]
    with sqlite3.connect(clinic.db_path) as db:
        rows = db.execute("SELECT caller, seconds, wav_path, transcript FROM voicemails").fetchall()
    assert len(rows) == 1
    caller, seconds, wav_path, transcript = rows[0]
    assert caller == "+15550199"
    assert "blood test" in transcript.lower() and "call me back" in transcript.lower(), transcript
    info = soundfile.info(wav_path)
    message_s = len(closed_call.caller.spoken[0].step.pcm) / RATE
    assert info.samplerate == RATE and message_s <= info.duration == pytest.approx(seconds, abs=0.05)
    assert Path(wav_path).parent == clinic.recordings
    assert MENU not in ivr.said  # no menu after hours
