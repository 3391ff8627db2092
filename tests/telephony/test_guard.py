"""Idle hang-up and maximum call duration: the caller hears a prompt, then goodbye, then the line drops."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from tests.telephony.bots import ScriptedTTS
from tests.telephony.helpers import best_correlation, speech_8k
from tests.telephony.twilio_client import TwilioTestClient
from transports.telephony.guard import CallLimits
from transports.telephony.server import CarrierServer

PROMPT, GOODBYE = "Are you still there?", "Goodbye."


@pytest.fixture(scope="module")
def voices() -> dict[str, np.ndarray]:
    return {PROMPT: speech_8k(PROMPT), GOODBYE: speech_8k(GOODBYE)}


async def _silent_caller(url: str, seconds: float) -> tuple[TwilioTestClient, float]:
    async with TwilioTestClient(url) as client:
        start = time.monotonic()
        try:
            await client.silence(seconds)
        except Exception:  # the server hung up on us mid-stream: that is the point
            pass
        for _ in range(100):
            if client.got.close_code is not None:
                break
            await asyncio.sleep(0.05)
        return client, time.monotonic() - start


@pytest.mark.asyncio
async def test_idle_caller_is_prompted_then_told_goodbye_then_hung_up(voices) -> None:  # type: ignore[no-untyped-def]
    tts: list[ScriptedTTS] = []
    limits = CallLimits(idle_s=1.0, idle_prompt=PROMPT, goodbye=GOODBYE)
    server = CarrierServer(lambda info: tts.append(ScriptedTTS(voices)) or [tts[-1]], carriers=["twilio"],
                           host="127.0.0.1", port=0, limits=limits)
    await server.start()
    try:
        client, elapsed = await _silent_caller(server.media_url("twilio"), 12.0)
    finally:
        await server.stop()
    assert tts[0].spoken == [PROMPT, GOODBYE] and tts[0].ended == "idle"
    assert client.got.close_code == 1000
    heard = client.heard()
    assert best_correlation(voices[PROMPT], heard)[0] > 0.99
    assert best_correlation(voices[GOODBYE], heard)[0] > 0.99
    spoken_s = (len(voices[PROMPT]) + len(voices[GOODBYE])) / 8000
    # 1 s idle, prompt, 1 s idle, goodbye played to the end (acks), then the hang-up.
    assert spoken_s + 2.0 < elapsed < spoken_s + 3.5


@pytest.mark.asyncio
async def test_max_call_duration_says_goodbye_even_while_the_caller_talks(voices) -> None:  # type: ignore[no-untyped-def]
    tts: list[ScriptedTTS] = []
    limits = CallLimits(max_call_s=1.5, goodbye=GOODBYE)
    server = CarrierServer(lambda info: tts.append(ScriptedTTS(voices)) or [tts[-1]], carriers=["twilio"],
                           host="127.0.0.1", port=0, limits=limits)
    await server.start()
    try:
        async with TwilioTestClient(server.media_url("twilio")) as client:
            talk = speech_8k("I keep talking and talking about my account and my order and more.")
            start = time.monotonic()
            try:
                await client.say(np.tile(talk, 3))
            except Exception:
                pass
            elapsed = time.monotonic() - start
    finally:
        await server.stop()
    assert tts[0].spoken == [GOODBYE] and tts[0].ended == "max_duration"
    assert best_correlation(voices[GOODBYE], client.heard())[0] > 0.99
    assert 1.5 + len(voices[GOODBYE]) / 8000 < elapsed < 1.5 + len(voices[GOODBYE]) / 8000 + 1.5
