"""A caller in headless Chromium talks to the demo bot over WebRTC.

One real browser call (about 19 s of audio) with the embedded clinic bot is
shared by the tests below: the bot greets, the caller asks what it can do,
the bot starts its (long) answer, and the caller talks over it. Chromium's fake microphone plays the caller's WAV; the page records
what it sent and what it played, and posts that back with getStats() and the
data-channel log. The whole thing runs in a loopback-only network namespace
when ``unshare -n`` is allowed here.
"""

from __future__ import annotations

import shutil

import jiwer
import numpy as np
import pytest

from tests.webrtc.webrtc_audio import active_fraction, caller_wav, quiet_from, segments, words
from agent.clinic import ANSWERS, GREETING
from tests.webrtc.webrtc_scenario import ScenarioResult, run_scenario

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (make test installs it)")

QUESTION = "Hi, what can you help me with?"
INTERRUPTION = "Sorry, wait a moment please."
ANSWER = ANSWERS["menu"]  # the longest answer (~10 s): the caller cuts in early in it
#: The last words of the answer, long after the caller cut in: never heard.
LATER_WORDS = ("zero", "desk")
BARGE_IN_BUDGET_S = 0.6  # caller onset → bot silent in the browser, on a shared 2-core machine


@pytest.fixture(scope="module")
def call(tmp_path_factory: pytest.TempPathFactory) -> ScenarioResult:
    tmp = tmp_path_factory.mktemp("webrtc-call")
    wav = tmp / "caller.wav"
    # The greeting plays first; the question comes after it, the interruption 1.5-3 s into the answer.
    spans = caller_wav(wav, [(QUESTION, 7.0), (INTERRUPTION, 4.5), (None, 2.0)])
    result = run_scenario("clinic", wav, record_s=round(spans[-1][1] + 1.5, 1), out=tmp)
    print(f"\nbrowser call ran {'in a loopback-only namespace' if result.namespace else 'in the host namespace'}; "
          f"files in {tmp}")
    assert result.page.error is None, f"the page failed: {result.page.error}"
    return result



def finals(events: list[dict]) -> list[tuple[int, str]]:
    return [(e["turn_id"], e["text"]) for e in events if e.get("type") == "transcript" and e.get("final")]


def transcribe_browser_audio(whisper, audio: np.ndarray, rate: int) -> str:  # type: ignore[no-untyped-def]
    from agent.audio import resample
    from stt import transcribe

    text, _ = transcribe(whisper, resample(audio, rate, 16000).astype(np.float32))
    return text


def test_the_callers_question_is_transcribed_by_the_server(call: ScenarioResult) -> None:
    said = finals(call.server["events"])
    assert said, f"the server transcribed nothing; events: {call.server['events'][:20]}"
    # The VAD may cut the question at its comma into several segments: join them.
    heard = [" ".join(text for _, text in said[: n + 1]) for n in range(len(said))]
    best = min(heard, key=lambda text: jiwer.wer(words(QUESTION), words(text)))
    assert jiwer.wer(words(QUESTION), words(best)) <= 0.25, heard
    assert call.server["frames_received"] > 40 * 10, "the server got less than 10 s of the caller's audio"


def test_the_bots_voice_reaches_the_browser(call: ScenarioResult, whisper) -> None:  # type: ignore[no-untyped-def]
    page, rate = call.page, call.page.sample_rate
    inbound = page.stat("inbound-rtp")
    record_s = len(page.audio) / rate
    assert inbound.get("packetsReceived", 0) >= 0.8 * record_s / 0.02, inbound
    assert inbound.get("bytesReceived", 0) > 20_000, inbound

    question_start, question_end = segments(page.mic, rate)[0]
    greeting = [s for s in segments(page.bot, rate) if s[1] < question_start]
    assert greeting, "the greeting was not played in the browser"
    played = words(transcribe_browser_audio(whisper, page.bot[: int(question_start * rate)], rate))
    assert "maple street" in played, f"the browser played {played!r} before the question"

    answer = [s for s in segments(page.bot, rate) if s[0] > question_end]
    assert answer, "no answer was played in the browser after the question"
    start = answer[0][0]
    played = words(transcribe_browser_audio(whisper, page.bot[int(start * rate):int((start + 2.0) * rate)], rate))
    assert "i can help" in played, f"the browser played {played!r} after the question"


def test_talking_over_the_bot_silences_it_in_the_browser(call: ScenarioResult, whisper) -> None:  # type: ignore[no-untyped-def]
    page, rate = call.page, call.page.sample_rate
    spoken = segments(page.mic, rate)
    assert len(spoken) >= 2, f"expected the question and the interruption in the mic channel, got {spoken}"
    onset = spoken[1][0]
    assert active_fraction(page.bot, rate, onset - 0.5, onset) > 0.3, "the bot was not talking when the caller cut in"
    stopped = quiet_from(page.bot, rate, onset, hold_s=1.0)
    assert stopped is not None, "the bot kept talking over the caller"
    latency = stopped - onset
    print(f"\nbarge-in measured in the browser: {latency * 1000:.0f} ms from the caller's onset to bot silence")
    assert latency <= BARGE_IN_BUDGET_S

    bot_start = [s for s in segments(page.bot, rate) if s[0] > spoken[0][1]][0][0]
    played = words(transcribe_browser_audio(whisper, page.bot[int(bot_start * rate):int((stopped + 0.5) * rate)], rate))
    assert not [w for w in LATER_WORDS if w in played.split()], f"the rest of the answer was played: {played!r}"


def test_the_data_channel_transcript_matches_the_server(call: ScenarioResult) -> None:
    page = call.page
    assert finals(page.log) == finals(call.server["events"])
    assert page.events("session")[0]["session_id"] == page.session_id

    barge_ins = page.events("barge_in")
    assert len(barge_ins) == 1, barge_ins
    heard = barge_ins[0]["heard"]
    assert heard and ANSWER.startswith(heard) and len(heard) < len(ANSWER) * 0.6, heard
    heard_events = [e["text"] for e in page.events("bot_heard") if e["turn_id"] == barge_ins[0]["turn_id"]]
    assert heard_events[-1] == heard and all(b.startswith(a) for a, b in zip(heard_events, heard_events[1:]))

    greeting_turn = page.events("bot_heard")[0]["turn_id"]
    greeting_heard = [e["text"] for e in page.events("bot_heard") if e["turn_id"] == greeting_turn]
    assert greeting_heard[-1].strip() == GREETING  # heard whole: nobody talked over it

    latency = {e["turn_id"]: e for e in page.events("latency")}
    assert latency[barge_ins[0]["turn_id"]]["eos_to_first_audio_ms"] > 0  # the answer's own figures
    interrupted = [e for e in page.events("bot_speaking") if e["interrupted"]]
    assert interrupted and interrupted[0]["turn_id"] == barge_ins[0]["turn_id"]
