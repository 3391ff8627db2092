"""Twilio Media Streams end to end: marks as the truth, clear on barge-in, bad input.

Two peers: our Twilio client written from Twilio's message docs (it plays
audio back in real time and echoes marks, like Twilio), and the
``streamdouble`` simulator (PyPI ``streamdouble==0.3.0``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile

from agent.calls import CallInfo
from agent.frames import BotStoppedSpeakingFrame, PlayoutProgressFrame
from tests.telephony.bots import TalkerBot
from tests.telephony.helpers import best_correlation, speech_8k
from tests.telephony.twilio_client import TwilioTestClient
from tests.telephony.webhook_client import ask
from transports.telephony.server import CarrierServer

SENTENCES = ["Thanks for calling the clinic.", "Your appointment is on Tuesday at nine.",
             "Please bring your insurance card.", "Is there anything else I can help with?"]


@pytest.fixture(scope="module")
def greeting_parts() -> list[tuple[np.ndarray, str]]:
    return [(speech_8k(text), text + " ") for text in SENTENCES]


@pytest.fixture(scope="module")
def caller_speech() -> np.ndarray:
    return speech_8k("Wait, I need to change it.")


async def _server(bots: list[TalkerBot], make_bot, **options) -> CarrierServer:  # type: ignore[no-untyped-def]
    def factory(info: CallInfo) -> list[TalkerBot]:
        bots.append(make_bot(info))
        return [bots[-1]]

    server = CarrierServer(factory, carriers=["twilio"], host="127.0.0.1", port=0, **options)
    await server.start()
    return server


@pytest.mark.asyncio
async def test_marks_decide_when_the_bot_stopped_speaking(greeting_parts) -> None:  # type: ignore[no-untyped-def]
    """A carrier that plays 1 s behind what we sent: 'stopped speaking' waits for its last ack."""
    parts = greeting_parts[:1]
    bots: list[TalkerBot] = []
    server = await _server(bots, lambda info: TalkerBot(parts, hang_up_after_s=None))
    try:
        async with TwilioTestClient(server.media_url("twilio"),
                                    extra_ack_delay_s=1.0, parameters={"From": "+15550001"}) as client:
            await client.silence(len(parts[0][0]) / 8000 + 2.0)
            await client.stop()
            await asyncio.sleep(0.2)
    finally:
        await server.stop()
    bot = bots[0]
    assert client.got.marks, "no marks were sent/acked"
    stopped = bot.of_type(BotStoppedSpeakingFrame)
    assert len(stopped) == 1 and not stopped[0][1].interrupted
    last_ack = client.got.marks[-1][0]
    last_send = client.got.last_media_at
    assert last_send is not None
    assert stopped[0][0] >= last_ack - 0.01, "stopped speaking before the carrier confirmed playback"
    assert stopped[0][0] - last_send > 0.9, "stopped speaking was timed from our send clock"
    final = bot.progress()[-1]
    assert final.text_heard == parts[0][1]
    assert final.played_s == pytest.approx(len(parts[0][0]) / 8000, abs=0.04)
    # What reached the "phone" is exactly what the bot said.
    score, _ = best_correlation(parts[0][0], client.heard())
    assert score > 0.99


@pytest.mark.asyncio
async def test_barge_in_sends_clear_at_once_and_unplayed_words_are_not_heard(
    greeting_parts, caller_speech  # type: ignore[no-untyped-def]
) -> None:
    bots: list[TalkerBot] = []
    server = await _server(bots, lambda info: TalkerBot(greeting_parts))
    try:
        async with TwilioTestClient(server.media_url("twilio")) as client:
            await client.silence(3.0)  # the bot is in its second sentence
            speech_start = time.monotonic()
            await client.say(caller_speech)
            await client.silence(0.5)
            await client.stop()
            await asyncio.sleep(0.2)
    finally:
        await server.stop()
    bot = bots[0]
    assert len(client.got.clears) == 1
    onset = speech_start + _onset_s(caller_speech)
    assert client.got.clears[0] - onset < 0.15, "clear was late"
    stopped = bot.of_type(BotStoppedSpeakingFrame)
    assert stopped and stopped[-1][1].interrupted
    heard = bot.progress()[-1]
    # The caller heard the first sentence and part of the second, never the last ones —
    # even though Twilio sent back the pending marks after the clear.
    assert heard.text_heard.startswith(SENTENCES[0])
    assert SENTENCES[3] not in heard.text_heard and SENTENCES[2] not in heard.text_heard
    assert 2.5 < heard.played_s < 3.5
    total = sum(len(a) for a, _ in greeting_parts) / 8000
    assert len(client.heard()) / 8000 < total - 2.0, "the server kept streaming after the clear"


def _onset_s(speech: np.ndarray) -> float:
    loud = np.nonzero(np.abs(speech) > 1500)[0]
    return float(loud[0]) / 8000 if len(loud) else 0.0


@pytest.mark.asyncio
async def test_dtmf_and_caller_audio_reach_the_bot(caller_speech) -> None:  # type: ignore[no-untyped-def]
    bots: list[TalkerBot] = []
    server = await _server(bots, lambda info: TalkerBot([], loudness=1e9))
    try:
        async with TwilioTestClient(server.media_url("twilio"),
                                    parameters={"From": "+15550002", "account": "gold"}) as client:
            await client.say(caller_speech)
            for digit in "12#":
                await client.dtmf(digit)
            await client.silence(0.3)
            await client.stop()
            await asyncio.sleep(0.2)
    finally:
        await server.stop()
    assert bots[0].digits == ["1", "2", "#"]
    heard = np.concatenate(bots[0].heard)
    from agent.audio import resample

    heard8k = resample(heard.astype(np.float32) / 32768, 16000, 8000)
    assert best_correlation(caller_speech, heard8k)[0] > 0.9


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "bad, code, reason",
    [
        ('{"event": "media", "media": {"payload": "AAAA"', 1007, "malformed JSON"),
        ('{"event": "media", "streamSid": "MZ1"}', 1008, "media without media.payload"),
        ('{"event": "media", "media": {"payload": "%s"}}' % ("A" * 100_000), 1009, "exceeds"),
        ('{"event": "media", "media": {"payload": "not*base64"}}', 1007, "not valid base64"),
    ],
)
async def test_malformed_messages_close_only_that_call(
    bad: str, code: int, reason: str, caplog: pytest.LogCaptureFixture, greeting_parts  # type: ignore[no-untyped-def]
) -> None:
    caplog.set_level(logging.WARNING, logger="transports.telephony.server")
    bots: list[TalkerBot] = []
    server = await _server(bots, lambda info: TalkerBot(greeting_parts[:1], loudness=1e9))
    try:
        async with TwilioTestClient(server.media_url("twilio"), call_sid="CAgood") as good, \
                TwilioTestClient(server.media_url("twilio"), call_sid="CAbad") as bad_call:
            await good.silence(0.3)
            await bad_call.send_raw(bad)
            await good.silence(1.0)
            assert bad_call.got.close_code == code
            assert reason in bad_call.got.close_reason
            assert good.ws is not None and not good.ws.closed
            before = good.got.media_bytes
            await good.silence(0.5)
            assert good.got.media_bytes > before, "the healthy call stopped getting audio"
            await good.stop()
    finally:
        await server.stop()
    assert any(reason in r.getMessage() and "CAbad" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_streamdouble_simulator_sees_marks_and_clear(
    tmp_path: Path, greeting_parts, caller_speech  # type: ignore[no-untyped-def]
) -> None:
    pytest.importorskip("streamdouble")
    from streamdouble.api import run_scenario
    from streamdouble.scenario import parse
    from streamdouble.session import SessionConfig

    wav = tmp_path / "caller.wav"
    soundfile.write(wav, caller_speech, 8000, subtype="PCM_16")
    scenario = parse({"name": "barge-in", "steps": [
        {"wait_for": "mark"}, {"wait": 1.0}, {"say": str(wav)}, {"expect": "clear"}, {"wait": 0.5},
    ]})
    bots: list[TalkerBot] = []
    server = await _server(bots, lambda info: TalkerBot(greeting_parts))
    try:
        # As Twilio does: the TwiML answer names the stream and the <Parameter>s (the token among them).
        answer = await ask(f"http://127.0.0.1:{server.port}", "twilio")
        report = await run_scenario(answer.url, scenario, config=SessionConfig(
            quiet_period_s=0.3, max_drain_s=2.0, custom_parameters=answer.params))
    finally:
        await server.stop()
    result = report.result
    assert not report.violations, report.violations
    assert result.clears_received == 1 and result.marks_echoed, (result.clears_received, result.marks_echoed)
    assert not result.failed_expectations
    progress = [f for f in bots[0].progress() if isinstance(f, PlayoutProgressFrame)]
    assert progress and SENTENCES[3] not in progress[-1].text_heard


@pytest.mark.asyncio
async def test_twilio_webhook_answers_twiml_and_checks_signature() -> None:
    from transports.telephony.webhooks import twilio_signature

    server = CarrierServer(lambda info: [], carriers=["twilio"], host="127.0.0.1", port=0,
                           public_url="https://bot.example.com", twilio_auth_token="secret-token")
    await server.start()
    params = {"CallSid": "CA9", "From": "+15551234567", "To": "+15557654321"}
    good = twilio_signature("secret-token", "https://bot.example.com/twilio/voice", params)
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{server.port}/twilio/voice"
            async with http.post(url, data=params, headers={"X-Twilio-Signature": good}) as response:
                assert response.status == 200
                twiml = await response.text()
            async with http.post(url, data=params, headers={"X-Twilio-Signature": "forged"}) as response:
                assert response.status == 403
            async with http.post(url, data={**params, "From": "+1999"}, headers={"X-Twilio-Signature": good}) as r:
                assert r.status == 403  # a tampered parameter breaks the signature
    finally:
        await server.stop()
    assert '<Connect><Stream url="wss://bot.example.com/twilio/media">' in twiml
    assert '<Parameter name="From" value="+15551234567"/>' in twiml
    assert '<Parameter name="voxwire_token" value="' in twiml  # Twilio takes no query string in a Stream URL
