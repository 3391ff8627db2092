"""The same page in headless Firefox: connect, hear the bot, type to it.

Firefox's fake microphone is a tone and cannot play a file, so this call is
typed: the page types a question into its composer, and the bot answers it
aloud; the page records until the answer has been played. Without a sound card Firefox's WebAudio never
starts, so the page records the bot with MediaRecorder (the server decodes it).
Runs in the host namespace: Firefox gathers no UDP candidates on a lone ``lo``.
"""

from __future__ import annotations

import shutil

import pytest

from agent.clinic import ANSWERS
from tests.webrtc.webrtc_audio import words
from tests.webrtc.webrtc_scenario import ScenarioResult, run_scenario

pytestmark = pytest.mark.skipif(
    shutil.which("firefox-esr") is None and shutil.which("firefox") is None,
    reason="firefox is not installed (Debian: apt-get install firefox-esr)",
)

QUESTION = "What are your opening hours?"


@pytest.fixture(scope="module")
def call(tmp_path_factory: pytest.TempPathFactory) -> ScenarioResult:
    tmp = tmp_path_factory.mktemp("webrtc-firefox")
    # Records until the typed question's answer has been played (at most 30 s on a busy machine).
    result = run_scenario("clinic", None, 30.0, tmp, browser="firefox", say=QUESTION, say_at_s=4.0, namespace=False)
    assert result.page.error is None, f"the page failed in Firefox: {result.page.error}"
    return result


def test_firefox_connects_and_sends_and_receives_audio(call: ScenarioResult) -> None:
    page = call.page
    recorded_s = (page.marks["record_end"] - page.marks["record_start"]) / 1000.0
    # A packet every 20 ms both ways; a busy machine (Firefox is heavy) may stall a stream for a moment.
    inbound, outbound = page.stat("inbound-rtp"), page.stat("outbound-rtp")
    assert inbound.get("packetsReceived", 0) >= 0.6 * recorded_s / 0.02, inbound
    assert outbound.get("packetsSent", 0) >= 0.6 * recorded_s / 0.02, outbound
    assert call.server["frames_received"] >= 0.6 * recorded_s / 0.02


def test_the_typed_question_is_answered_aloud_in_firefox(call: ScenarioResult, whisper) -> None:  # type: ignore[no-untyped-def]
    from agent.audio import resample
    from stt import transcribe

    page = call.page
    typed = [e for e in page.events("transcript") if e.get("source") == "text"]
    assert [e["text"] for e in typed] == [QUESTION]
    heard = [e["text"] for e in page.events("bot_heard") if e["turn_id"] == typed[0]["turn_id"]]
    assert heard and heard[-1].strip() == ANSWERS["hours"].strip(), "the answer was not played to the end"

    played, _ = transcribe(whisper, resample(page.bot, page.sample_rate, 16000))
    assert "open monday" in words(played), played
