"""The output transport: real-time playout, instant interrupt, pause/resume, what was heard."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from agent import UPSTREAM, Session
from agent.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterruptFrame,
    OutputAudioFrame,
    OutputPauseFrame,
    PlayoutProgressFrame,
    TTSStoppedFrame,
)
from tests.core.helpers import Collect
from transports.local import RecordingOutput

pytestmark = pytest.mark.asyncio
RATE = 16000


def words_audio(n_words: int, word_ms: int = 100) -> list[OutputAudioFrame]:
    """One frame per word; sample values encode the word index so order is checkable."""
    return [
        OutputAudioFrame(
            pcm=np.full(RATE * word_ms // 1000, i + 1, dtype=np.int16).tobytes(),
            sample_rate=RATE, text=f"w{i} ", turn_id=7,
        )
        for i in range(n_words)
    ]


async def run_with_output(max_buffer_s: float = 2.0):  # type: ignore[no-untyped-def]
    probe = Collect("probe")
    out = RecordingOutput(max_buffer_s=max_buffer_s)
    session = Session([probe, out], output_sample_rate=RATE)
    task = asyncio.create_task(session.run())
    await session.started.wait()
    return session, task, probe, out


async def test_audio_plays_in_real_time_and_reports_speaking_and_heard_text() -> None:
    session, task, probe, out = await run_with_output()
    began = time.monotonic()
    for frame in words_audio(5):
        await session.push(frame)
    await session.push(TTSStoppedFrame(turn_id=7))
    await session.end()
    await asyncio.wait_for(task, 3)
    elapsed = out.played[-1].t - out.played[0].t
    assert 0.42 <= elapsed <= 0.6  # 25 chunks of 20 ms, paced, not dumped at once
    assert out.played[0].t - began < 0.05
    played = out.audio()
    assert np.array_equal(np.unique(played, return_index=True)[0], np.arange(1, 6))
    assert len(probe.of(BotStartedSpeakingFrame, UPSTREAM)) == 1
    stops = probe.of(BotStoppedSpeakingFrame, UPSTREAM)
    assert len(stops) == 1 and not stops[0].interrupted
    assert probe.of(PlayoutProgressFrame, UPSTREAM)[-1].text_heard == "w0 w1 w2 w3 w4 "


async def test_interrupt_silences_the_output_within_one_frame() -> None:
    session, task, probe, out = await run_with_output()
    for frame in words_audio(10):  # 1 s queued
        await session.push(frame)
    await asyncio.sleep(0.33)
    interrupted_at = time.monotonic()
    await session.push(InterruptFrame(turn_id=7))
    await asyncio.sleep(0.2)
    after = [c for c in out.played if c.t > interrupted_at]
    assert len(after) == 0, f"{len(after)} chunks played after the interrupt"
    heard = probe.of(PlayoutProgressFrame, UPSTREAM)[-1]
    assert heard.text_heard in ("w0 w1 w2 ", "w0 w1 w2 w3 ")
    assert 0.28 <= heard.played_s <= 0.4
    stops = probe.of(BotStoppedSpeakingFrame, UPSTREAM)
    assert stops and stops[-1].interrupted
    await session.cancel()
    await task


async def test_pause_holds_playout_and_resume_continues_where_it_stopped() -> None:
    session, task, probe, out = await run_with_output()
    for frame in words_audio(5):
        await session.push(frame)
    await session.push(TTSStoppedFrame(turn_id=7))
    await asyncio.sleep(0.15)
    await session.push(OutputPauseFrame(paused=True))
    paused_at = time.monotonic()
    count = len(out.played)
    await asyncio.sleep(0.2)
    assert len(out.played) <= count + 1  # at most the chunk already on its way
    await session.push(OutputPauseFrame(paused=False))
    await session.end()
    await asyncio.wait_for(task, 3)
    played = out.audio()
    assert len(played) == 5 * RATE // 10  # nothing lost, nothing repeated
    assert np.all(np.diff(played.astype(int)) >= 0)  # still in order
    assert out.played[-1].t - paused_at >= 0.2 + 0.3 - 0.15 - 0.05
