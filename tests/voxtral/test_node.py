"""The Voxtral node in a call: answers, pipelining and pacing, barge-in, faults.

The graph is the node feeding a real-time output transport; the server is the
protocol emulator speaking with piper. What is asserted is what a caller notices:
audio that says the words, how soon it starts, how long silences last, how fast
it stops.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
import pytest
import pytest_asyncio

from agent import Node, Pipeline, Session
from agent.frames import (
    ErrorFrame,
    Frame,
    InterruptFrame,
    LLMTextFrame,
    LLMTurnEndFrame,
    MetricsFrame,
    OutputAudioFrame,
)
from tests.voxtral.conftest import API_KEY, RecordingOutput, transcribe
from tts.piper import PiperTTSNode
from tts.voxtral.emulator import VoxtralEmulator
from tts.voxtral.node import INTERRUPT_METRIC, REQUEST_METRIC, VoxtralTTSNode

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Call:
    def __init__(self, node: VoxtralTTSNode, output: RecordingOutput, session: Session) -> None:
        self.node, self.output, self.session = node, output, session
        self.events: list[tuple[float, object, int]] = []
        self.audio_frames: list[OutputAudioFrame] = []
        session.subscribe(lambda frame, direction: self.events.append((time.monotonic(), frame, direction)))

    def of(self, cls: type) -> list:
        return [frame for _, frame, _ in self.events if isinstance(frame, cls)]

    async def say(self, text: str, turn_id: int = 1, word_delay: float = 0.0) -> float:
        """Stream ``text`` as LLM deltas; returns when the first delta went in."""
        started = time.monotonic()
        for word in text.split(" "):
            await self.session.push(LLMTextFrame(text=word + " ", turn_id=turn_id))
            if word_delay:
                await asyncio.sleep(word_delay)
        await self.session.push(LLMTurnEndFrame(turn_id=turn_id))
        return started

    async def until_quiet(self, timeout: float = 15.0, quiet: float = 0.4) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            last = self.output.last_audio_at()
            if last is not None and time.monotonic() - last > quiet and not self.node._fetches and not self.node._queue:
                return
        raise AssertionError("the bot never went quiet")


class Tap(Node):
    """Notes the bot audio frames on their way to the output."""

    frames: list[OutputAudioFrame]

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, OutputAudioFrame):
            self.frames.append(frame)
        await self.emit(frame, direction)


async def warm(emulator: VoxtralEmulator, text: str) -> None:
    """Have the emulator's speech for ``text`` ready (it caches it), so its first audio is immediate.

    The emulator synthesizes a whole sentence before sending any of it; on a busy machine that
    can outlast the node's hedge, and a test about a later fault would become a hedging test.
    """
    from agent.workers import run_blocking

    await run_blocking(emulator.speech, text, pool="tts")


@asynccontextmanager
async def call(emulator: VoxtralEmulator, **node_args) -> AsyncIterator[Call]:  # type: ignore[no-untyped-def]
    node = VoxtralTTSNode(emulator.url, emulator.dialect, api_key=API_KEY, **node_args)
    output = RecordingOutput(16000)

    tap = Tap()
    session = Session(Pipeline([node, tap, output]), output_sample_rate=16000)
    running = Call(node, output, session)
    tap.frames = running.audio_frames
    task = asyncio.create_task(session.run())
    await asyncio.wait({task, asyncio.ensure_future(session.started.wait())}, timeout=30,
                       return_when=asyncio.FIRST_COMPLETED)  # voices loaded: the clock starts now
    try:
        yield running
    finally:
        await session.cancel()
        await task


@pytest.mark.parametrize(("dialect", "voice"), [("vllm-omni", "neutral_female"), ("mistral", "gb_jane_neutral")])
async def test_answers_in_the_chosen_voice_with_words_on_the_frames(emulators, whisper, dialect, voice) -> None:  # type: ignore[no-untyped-def]
    emulator = emulators[dialect]
    text = "Sure, I can help with that. Your balance is forty dollars."
    async with call(emulator, voice=voice) as c:
        started = await c.say(text, word_delay=0.02)
        await c.until_quiet()
    first_out = c.output.first_audio_at()
    assert first_out is not None and first_out - started < 1.5
    assert {r.body.get("voice") or r.body.get("voice_id") for r in emulator.requests if r.body} == {voice}
    assert "".join(f.text for f in c.audio_frames).split() == text.split()  # every word, once, in order
    heard = await transcribe(whisper, c.output.audio, 16000)
    assert "balance" in heard and ("forty" in heard or "40" in heard)
    rows = [m.data for m in c.of(MetricsFrame) if m.name == REQUEST_METRIC]
    assert len(rows) == len(emulator.requests) and all(r["completed"] for r in rows)
    assert all(r["framework_delay_ms"] is not None and r["framework_delay_ms"] < 50 for r in rows)
    assert all(r["ttfa_ms"] > 0 and r["rtf"] > 0 for r in rows)


async def test_next_sentence_is_fetched_while_this_one_plays_but_not_too_far_ahead(emulators) -> None:  # type: ignore[no-untyped-def]
    emulator = emulators["vllm-omni"]
    emulator.faults.update({"ttfa_s": 0.25})
    sentences = [
        "This is the first sentence of a longer answer.",
        "Here is the second one, right behind it.",
        "And a third sentence ends the turn.",
    ]
    async with call(emulator, voice="casual_male", max_ahead_s=1.5) as c:
        await c.say(" ".join(sentences))
        await c.until_quiet(timeout=25)
    requests = emulator.requests
    assert [r.body["input"] for r in requests] == sentences
    first_out = c.output.first_audio_at()
    assert first_out is not None
    first_len = requests[0].audio_bytes_total / 48000
    # Pipelined: the second request went out long before the first sentence finished playing.
    assert requests[1].t_received < first_out + first_len - 0.5
    # Paced: the third waited until less than ~1.5 s was left to hear.
    second_len = requests[1].audio_bytes_total / 48000
    assert requests[2].t_received > first_out + first_len + second_len - 1.5 - 0.4
    # ... and no audible gap between sentences despite a 250 ms server TTFA.
    assert c.output.longest_silence_s() < 0.45


async def test_barge_in_closes_every_stream_at_once(emulators) -> None:  # type: ignore[no-untyped-def]
    emulator = emulators["mistral"]
    emulator.rtf = 0.6  # slow server: both requests are still streaming when the caller barges in
    text = (
        "Let me read you the full list of opening hours for every one of our clinics in the city. "
        "The downtown clinic opens at eight in the morning on weekdays and closes at six."
    )
    async with call(emulator, voice="en_paul_neutral", max_ahead_s=10) as c:
        await c.say(text)
        while c.output.first_audio_at() is None or len(emulator.requests) < 2:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        in_flight = [r for r in emulator.requests if not r.completed]
        assert len(in_flight) == 2
        interrupted_at = time.monotonic()
        await c.session.push(InterruptFrame(turn_id=1))
        await asyncio.sleep(0.3)
    report = c.node.interrupts[0]
    assert report["streams"] == 2 and report["closed_ms"] < 20
    assert all(r.client_disconnected and not r.completed for r in in_flight)
    assert max(r.t_finished for r in in_flight) - interrupted_at < 0.1  # the server stopped generating
    metric = [m for m in c.of(MetricsFrame) if m.name == INTERRUPT_METRIC][0]
    assert metric.data["wasted_bytes"] == report["wasted_bytes"]
    last_audio = c.output.last_audio_at()
    assert last_audio is not None and last_audio - interrupted_at < 0.05


async def test_server_failure_mid_sentence_falls_back_to_the_local_voice(emulators, whisper) -> None:  # type: ignore[no-untyped-def]
    emulator = emulators["vllm-omni"]
    emulator.faults.update({"drop_after_bytes": 40000})  # two 400 ms chunks, then the connection dies
    text = "Your next appointment is on Tuesday at three in the afternoon with doctor Patel."
    await warm(emulator, text)
    async with call(emulator, voice="casual_female", fallback=PiperTTSNode()) as c:
        await c.say(text)
        await c.until_quiet(timeout=20)
    errors = c.of(ErrorFrame)
    assert errors and not errors[0].fatal and "mid-sentence" in errors[0].message
    assert c.output.longest_silence_s() < 1.0
    heard = await transcribe(whisper, c.output.audio, 16000)
    assert "afternoon" in heard and {"doctor", "dr"} & set(heard.split())  # spoken by piper after the cut
    assert len(emulator.requests) == 1  # the rest of the turn did not hammer the broken server


async def test_a_stalled_stream_is_cut_before_the_caller_hears_a_long_silence(emulators) -> None:  # type: ignore[no-untyped-def]
    emulator = emulators["mistral"]
    emulator.faults.update({"stall_after_bytes": 40000})
    await warm(emulator, "Please hold while I transfer you to the billing department.")
    async with call(emulator, voice="en_paul_neutral", fallback=PiperTTSNode(), read_timeout=10) as c:
        await c.say("Please hold while I transfer you to the billing department.")
        await c.until_quiet(timeout=20)
    assert "no audio" in c.of(ErrorFrame)[0].message
    assert c.output.longest_silence_s() < 1.1
    assert emulator.requests[0].client_disconnected


async def test_cloning_on_open_weights_server_is_reported_and_the_fallback_speaks(emulators) -> None:  # type: ignore[no-untyped-def]
    from tests.voxtral.test_emulator import _spoken_clip

    emulator = emulators["vllm-omni"]
    async with call(emulator, ref_audio=(_spoken_clip(), 16000), fallback=PiperTTSNode()) as c:
        await c.say("Hello, this is the clinic.")
        await c.until_quiet(timeout=20)
    assert "voice cloning is not available on this server" in c.of(ErrorFrame)[0].message
    assert len(c.output.audio) > 16000 * 0.5


async def test_a_hosted_voice_id_on_an_open_weights_server_ends_the_call_clearly(emulators) -> None:  # type: ignore[no-untyped-def]
    node = VoxtralTTSNode(emulators["vllm-omni"].url, "vllm-omni", voice="en_paul_neutral")
    session = Session(Pipeline([node, RecordingOutput(16000)]))
    result = await asyncio.wait_for(session.run(), 5)
    assert result.reason == "error" and "Mistral API voice id" in (result.error or "")


async def test_an_unreachable_server_still_gets_the_caller_an_answer(emulators) -> None:  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as probe:  # a port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    node = VoxtralTTSNode(f"http://127.0.0.1:{port}", "vllm-omni", voice="casual_female", fallback=PiperTTSNode())
    output = RecordingOutput(16000)
    session = Session(Pipeline([node, output]), output_sample_rate=16000)
    errors: list[ErrorFrame] = []
    session.subscribe(lambda frame, _d: errors.append(frame) if isinstance(frame, ErrorFrame) else None)
    task = asyncio.create_task(session.run())
    started = time.monotonic()
    await session.push(LLMTextFrame(text="One moment please.", turn_id=1))
    await session.push(LLMTurnEndFrame(turn_id=1))
    while output.first_audio_at() is None and time.monotonic() - started < 5:
        await asyncio.sleep(0.05)
    await session.cancel()
    await task
    assert output.first_audio_at() is not None and output.first_audio_at() - started < 1.0
    assert "cannot reach Voxtral server" in errors[0].message and not errors[0].fatal


# ------------------------------------------------------------------ hedging
# The server below speaks a pure 1 kHz tone instead of words, so every 20 ms the
# caller heard can be told apart: the server's voice (tone) or piper's (speech).

TONE_HZ = 1000.0


def _tone_speech(text: str) -> np.ndarray:
    """The emulated server's 'voice': a steady tone as long as the text would be spoken."""
    t = np.arange(int(24000 * 0.065 * max(len(text), 1))) / 24000
    return (0.3 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)


def _voice_of(pcm: bytes, rate: int = 16000) -> str | None:
    """'server' for the tone, 'fallback' for speech, None for (near) silence."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    if np.sqrt(np.mean(samples**2)) < 100:
        return None
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    near_tone = spectrum[np.abs(freqs - TONE_HZ) <= 150].sum() / spectrum.sum()
    return "server" if near_tone > 0.8 else "fallback"


class SlowPiper(PiperTTSNode):
    """Piper that needs ``delay`` s more per clause, and notes whether its work was cut off."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.cancelled = 0

    async def synthesize(self, text: str) -> AsyncIterator[np.ndarray]:
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        async for chunk in super().synthesize(text):
            yield chunk


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tone_server() -> AsyncIterator[VoxtralEmulator]:
    emulator = VoxtralEmulator("vllm-omni", speech=_tone_speech, rtf=0.05)
    await emulator.start()
    yield emulator
    await emulator.close()


@pytest.mark.parametrize(("server", "ttfa_s"), [("silent", 30.0), ("slow", 1.2)])
async def test_a_silent_or_slow_server_is_covered_by_the_fallback_within_a_second(
    tone_server: VoxtralEmulator, server: str, ttfa_s: float
) -> None:
    tone_server.faults.__init__()  # type: ignore[misc]
    tone_server.requests.clear()
    tone_server.faults.update({"ttfa_s": ttfa_s})
    text = "Your appointment is on Tuesday at three in the afternoon."
    try:
        async with call(tone_server, voice="casual_female", fallback=PiperTTSNode()) as c:
            said = await c.say(text)
            await c.until_quiet(timeout=10, quiet=1.5)  # long enough for a slow server's late audio to show
    finally:
        tone_server.faults.__init__()  # type: ignore[misc]
    voices = [(t, _voice_of(pcm)) for t, pcm in c.output.ticks if pcm]
    heard = [t for t, voice in voices if voice is not None]
    print(f"\n{server} server: fallback heard {heard[0] - said:.3f} s after the clause")
    # End to end — from the clause to the first sound the caller hears — within a second.
    assert heard and heard[0] - said <= 1.0
    # One voice for the clause: the server's late audio was dropped, never played after piper's.
    assert {voice for _, voice in voices} - {None} == {"fallback"}
    assert len(c.output.audio) / 16000 > 2.0  # the whole sentence, not a fragment
    assert c.node.hedges == {"started": 1, "fallback_won": 1, "server_won": 0}
    errors = c.of(ErrorFrame)
    assert len(errors) == 1 and not errors[0].fatal and "fallback voice was ready first" in errors[0].message
    assert len(tone_server.requests) == 1 and tone_server.requests[0].client_disconnected
    assert tone_server.requests[0].audio_bytes_sent == 0


async def test_a_server_that_answers_during_the_hedge_still_speaks_alone(tone_server: VoxtralEmulator) -> None:
    """The fallback started but the server's audio came first: only the server is heard."""
    tone_server.faults.__init__()  # type: ignore[misc]
    tone_server.requests.clear()
    tone_server.faults.update({"ttfa_s": 0.7})  # after the hedge starts (0.4 s), before the slow fallback
    fallback = SlowPiper(delay=0.8)
    try:
        async with call(tone_server, voice="casual_female", fallback=fallback) as c:
            said = await c.say("Your appointment is on Tuesday at three.")
            await c.until_quiet(timeout=10, quiet=1.0)
    finally:
        tone_server.faults.__init__()  # type: ignore[misc]
    voices = [(t, _voice_of(pcm)) for t, pcm in c.output.ticks if pcm]
    heard = [t for t, voice in voices if voice is not None]
    assert heard and heard[0] - said <= 1.0
    assert {voice for _, voice in voices} - {None} == {"server"}
    assert c.node.hedges == {"started": 1, "fallback_won": 0, "server_won": 1}
    assert fallback.cancelled == 1  # the loser's synthesis was stopped, not left running
    assert not c.of(ErrorFrame) and tone_server.requests[0].completed
