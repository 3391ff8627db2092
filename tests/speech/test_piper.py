"""The bot's answer, spoken by piper, reaches the line early, clean, and as what it meant."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest
import soxr

import tts.piper
from agent import Session
from agent.audio import ulaw_decode, ulaw_encode
from agent.frames import (
    Frame,
    InterruptFrame,
    LLMTextFrame,
    LLMTurnEndFrame,
    OutputAudioFrame,
    SpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from stt import transcribe
from tts.piper import PiperTTSNode, PiperVoiceNotFound
from tests.speech.helpers import word_error_rate

ANSWER = "Sure, let me check that for you. Your appointment is on Tuesday at ten in the morning. Is there anything else?"


class Bot:
    """A session around a TTS node; records what leaves it, with arrival times."""

    def __init__(self, node: PiperTTSNode, output_rate: int) -> None:
        self.node = node
        self.session = Session([node], output_sample_rate=output_rate)
        self.frames: list[tuple[float, Frame]] = []
        self._arrived = asyncio.Event()
        self.session.subscribe(self._observe)

    def _observe(self, frame: Frame, direction: int) -> None:
        self.frames.append((time.monotonic(), frame))
        self._arrived.set()

    async def __aenter__(self) -> Bot:
        self._task = asyncio.create_task(self.session.run())
        await asyncio.wait_for(self.session.started.wait(), 20)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.end()
        await asyncio.wait_for(self._task, 10)

    def of(self, cls: type) -> list:
        return [f for _, f in self.frames if isinstance(f, cls)]

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 15.0) -> float:
        async with asyncio.timeout(timeout):
            while not condition():
                self._arrived.clear()
                await self._arrived.wait()
        return time.monotonic()

    async def say_streamed(self, text: str, turn_id: int, delta: int = 4) -> None:
        for i in range(0, len(text), delta):
            await self.session.push(LLMTextFrame(text=text[i : i + delta], turn_id=turn_id))
        await self.session.push(LLMTurnEndFrame(text=text, turn_id=turn_id))


def audio_of(frames: list[OutputAudioFrame]) -> np.ndarray:
    return np.frombuffer(b"".join(f.pcm for f in frames), dtype=np.int16)


def heard(audio: np.ndarray, rate: int, whisper_model) -> str:  # type: ignore[no-untyped-def]
    return transcribe(whisper_model, soxr.resample(audio, rate, 16000), language="en")[0]


@pytest.mark.asyncio
async def test_streamed_answer_comes_back_as_the_words_it_meant(piper_voice, whisper_model) -> None:
    async with Bot(PiperTTSNode(), 16000) as bot:
        await bot.say_streamed(ANSWER, turn_id=3)
        await bot.wait_for(lambda: bot.of(LLMTurnEndFrame))
    frames = bot.of(OutputAudioFrame)
    assert {len(f.pcm) for f in frames} == {640} and {f.sample_rate for f in frames} == {16000}
    assert all(f.turn_id == 3 for f in frames)
    assert np.allclose(np.diff([f.pts for f in frames]), 0.02)
    assert "".join(f.text for f in frames).strip() == ANSWER
    audio = audio_of(frames)
    assert np.abs(audio).max() <= 0.62 * 32767  # scaled down from piper's full-scale peaks
    assert word_error_rate(ANSWER, heard(audio, 16000, whisper_model)) <= 0.1
    kinds = [type(f) for _, f in bot.frames if isinstance(f, (TTSStartedFrame, OutputAudioFrame, TTSStoppedFrame, LLMTurnEndFrame))]
    assert kinds[0] is TTSStartedFrame and kinds[-2:] == [TTSStoppedFrame, LLMTurnEndFrame]


@pytest.mark.asyncio
async def test_phone_line_output_in_40ms_frames_survives_mulaw(piper_voice, whisper_model) -> None:
    text = "Your card has been blocked, so please call your bank today."
    async with Bot(PiperTTSNode(frame_ms=40), 8000) as bot:
        await bot.say_streamed(text, turn_id=1)
        await bot.wait_for(lambda: bot.of(LLMTurnEndFrame))
    frames = bot.of(OutputAudioFrame)
    assert {len(f.pcm) for f in frames} == {640} and {f.sample_rate for f in frames} == {8000}
    line = np.frombuffer(ulaw_decode(ulaw_encode(audio_of(frames))), dtype=np.int16)
    assert word_error_rate(text, heard(line, 8000, whisper_model)) <= 0.2


@pytest.mark.asyncio
async def test_first_clause_is_spoken_before_the_llm_finishes(piper_voice) -> None:
    async with Bot(PiperTTSNode(), 16000) as bot:
        sent = time.monotonic()
        await bot.session.push(LLMTextFrame(text="Okay, your visit on Tuesday,", turn_id=1))
        first_audio = await bot.wait_for(lambda: bot.of(OutputAudioFrame), timeout=5)
        assert not bot.of(LLMTurnEndFrame)
        # Piper speaks this clause in ~50 ms on this CPU; allow for a busy machine.
        assert first_audio - sent < 1.0
        await bot.say_streamed(" at nine is confirmed.", turn_id=1)
        await bot.wait_for(lambda: bot.of(LLMTurnEndFrame))
    assert "".join(f.text for f in bot.of(OutputAudioFrame)).split() == "Okay, your visit on Tuesday, at nine is confirmed.".split()


@pytest.mark.asyncio
async def test_interrupt_stops_the_answer_and_the_next_one_plays(piper_voice) -> None:
    long_answer = " ".join(["This is a long answer that the caller will not wait for."] * 4)
    async with Bot(PiperTTSNode(), 16000) as bot:
        await bot.say_streamed(long_answer, turn_id=1)
        await bot.wait_for(lambda: bot.of(OutputAudioFrame))
        await bot.session.push(InterruptFrame(turn_id=1))
        interrupted_at = time.monotonic()
        await asyncio.sleep(0.5)  # anything still being synthesized would arrive by now
        late = [f for t, f in bot.frames if t > interrupted_at and isinstance(f, OutputAudioFrame)]
        assert late == []
        spoken = sum(f.duration for f in bot.of(OutputAudioFrame))
        assert spoken < 5.0  # one clause of the ~12 s answer
        await bot.say_streamed("How can I help?", turn_id=2)
        await bot.wait_for(lambda: any(f.turn_id == 2 for f in bot.of(OutputAudioFrame)))
        await bot.wait_for(lambda: any(f.turn_id == 2 for f in bot.of(TTSStoppedFrame)))
    second = [f for f in bot.of(OutputAudioFrame) if f.turn_id == 2]
    assert "".join(f.text for f in second).strip() == "How can I help?"


@pytest.mark.asyncio
async def test_uninterruptible_speech_survives_an_interrupt(piper_voice) -> None:
    notice = "This call is recorded. Please stay on the line."
    async with Bot(PiperTTSNode(), 8000) as bot:
        await bot.session.push(SpeakFrame(text=notice, uninterruptible=True, turn_id=7))
        await bot.wait_for(lambda: bot.of(OutputAudioFrame))
        await bot.session.push(InterruptFrame())
        await bot.wait_for(lambda: bot.of(TTSStoppedFrame))
    frames = bot.of(OutputAudioFrame)
    assert all(f.uninterruptible for f in frames)
    assert "".join(f.text for f in frames).strip() == notice


@pytest.mark.asyncio
async def test_calls_share_one_loaded_voice(piper_voice) -> None:
    loads = tts.piper.load_count
    first, second = PiperTTSNode(), PiperTTSNode()
    async with Bot(first, 16000), Bot(second, 8000):
        assert first.voice is second.voice is piper_voice
    assert tts.piper.load_count == loads


def test_missing_voice_says_how_to_install(tmp_path) -> None:
    with pytest.raises(PiperVoiceNotFound, match="pip install piper-tts"):
        PiperTTSNode(voice=tmp_path / "missing.onnx")
    (tmp_path / "voice.onnx").write_bytes(b"")
    with pytest.raises(PiperVoiceNotFound, match="no config"):
        PiperTTSNode(voice=tmp_path / "voice.onnx")


@pytest.mark.asyncio
async def test_a_graceful_end_speaks_the_goodbye_first(piper_voice) -> None:
    bot = Bot(PiperTTSNode(), 8000)
    async with bot:
        await bot.session.push(SpeakFrame(text="Thank you for calling. Goodbye!", turn_id=9))
    # __aexit__ ended the session right after the push; the goodbye still went out.
    assert "".join(f.text for f in bot.of(OutputAudioFrame)).strip() == "Thank you for calling. Goodbye!"
    assert bot.session.result is not None and bot.session.result.reason == "completed"
