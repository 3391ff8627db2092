"""Voicemail detection on an outbound-style call: greeting shape, the beep, leaving a message."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.telephony.bots import ScriptedTTS
from tests.telephony.helpers import best_correlation, speech_8k
from tests.telephony.twilio_client import TwilioTestClient
from transports.telephony.amd import AnsweringMachineDetector
from transports.telephony.server import CarrierServer

MESSAGE = "Please call the clinic back."


@pytest.fixture(scope="module")
def voices() -> dict[str, np.ndarray]:
    return {MESSAGE: speech_8k(MESSAGE)}


def _beep(seconds: float, freq: float = 1000.0) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000
    return (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


async def _call(voices, caller_audio: np.ndarray, tail_s: float):  # type: ignore[no-untyped-def]
    nodes: list[tuple[AnsweringMachineDetector, ScriptedTTS]] = []

    def factory(info):  # type: ignore[no-untyped-def]
        nodes.append((AnsweringMachineDetector(voicemail_message=MESSAGE), ScriptedTTS(voices)))
        return list(nodes[-1])

    server = CarrierServer(factory, carriers=["twilio"], host="127.0.0.1", port=0)
    await server.start()
    try:
        async with TwilioTestClient(server.media_url("twilio")) as client:
            start = time.monotonic()
            try:
                await client.say(caller_audio)
                await client.silence(tail_s)
            except Exception:
                pass  # the bot hung up after leaving its message
    finally:
        await server.stop()
    return nodes[0], client, start


@pytest.mark.asyncio
async def test_voicemail_greeting_and_beep_get_a_message_after_the_beep(voices) -> None:  # type: ignore[no-untyped-def]
    greeting = speech_8k("You have reached Sam Smith. Please leave a message after the tone.")
    beep_at = len(greeting) / 8000 + 0.3
    audio = np.concatenate([greeting, np.zeros(2400, dtype=np.int16), _beep(0.5), np.zeros(800, dtype=np.int16)])
    (amd, tts), client, start = await _call(voices, audio, len(voices[MESSAGE]) / 8000 + 2.0)
    assert amd.result == "machine"
    assert amd.beep_at is not None and 0.1 < amd.beep_at - (start + beep_at) < 0.4
    assert tts.spoken == [MESSAGE] and tts.ended == "voicemail_left"
    assert client.got.first_media_at is not None and client.got.first_media_at > start + beep_at
    assert best_correlation(voices[MESSAGE], client.heard())[0] > 0.99


@pytest.mark.asyncio
async def test_a_person_saying_hello_is_human_and_gets_no_voicemail(voices) -> None:  # type: ignore[no-untyped-def]
    (amd, tts), client, _ = await _call(voices, speech_8k("Hello?"), 1.6)
    assert amd.result == "human" and amd.beep_at is None
    assert tts.spoken == [] and client.got.media_bytes == 0


def test_speech_is_not_mistaken_for_a_beep() -> None:
    import asyncio

    from agent.frames import InputAudioFrame

    async def run() -> AnsweringMachineDetector:
        amd = AnsweringMachineDetector()
        talk = speech_8k("Hello, how are you doing today? I am calling about the order you placed last week.")
        for i in range(len(talk) // 160):
            await amd.process(InputAudioFrame(pcm=talk[i * 160 : (i + 1) * 160].tobytes(), sample_rate=8000), 0)
        return amd

    assert asyncio.run(run()).beep_at is None
