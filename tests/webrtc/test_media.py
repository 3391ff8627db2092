"""Units of the media path: caller frames in, bot frames out, events to the page."""

from __future__ import annotations

import asyncio
import fractions
import json
import time

import numpy as np
import pytest
from av import AudioFrame

from agent.frames import (
    BotStoppedSpeakingFrame,
    InputAudioFrame,
    OutputAudioFrame,
    PlayoutProgressFrame,
    StartFrame,
    TranscriptionFrame,
)
from agent.node import Node
from transports.webrtc import BotAudioTrack, WebRTCInput, WebRTCOutput, frame_event, parse_message
from transports.webrtc.events import BadMessage


class Sink(Node):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list = []

    async def process(self, frame, direction):  # type: ignore[no-untyped-def]
        self.frames.append(frame)


def opus_like_frame(pts: int, value: int = 1000) -> AudioFrame:
    """What aiortc's Opus decoder yields: 20 ms of packed s16 stereo at 48 kHz."""
    frame = AudioFrame(format="s16", layout="stereo", samples=960)
    frame.planes[0].update(np.full(1920, value, dtype=np.int16).tobytes())
    frame.pts, frame.sample_rate, frame.time_base = pts, 48000, fractions.Fraction(1, 48000)
    return frame


@pytest.mark.asyncio
async def test_caller_frames_become_graph_rate_mono_and_lost_packets_become_silence() -> None:
    source = WebRTCInput(sample_rate=16000)
    sink = Sink()
    source.link(sink.receive, None)
    for pts in (0, 960, 960 * 4, 960 * 5):  # two 20 ms packets lost after the second
        await source._push_frame(opus_like_frame(pts))
    audio = [f for f in sink.frames if isinstance(f, InputAudioFrame)]
    assert {(f.sample_rate, f.channels) for f in audio} == {(16000, 1)}
    samples = np.concatenate([f.samples for f in audio])
    assert source.gap_samples_filled == 960 * 2
    # 6 frames' worth of media time at 16 kHz, minus what the resampler still holds (< 30 ms)
    assert 6 * 320 - 480 <= len(samples) <= 6 * 320
    assert audio[-1].pts == pytest.approx(sum(len(f.samples) for f in audio[:-1]) / 16000)


@pytest.mark.asyncio
async def test_planar_float_frames_are_mixed_down_too() -> None:
    source = WebRTCInput(sample_rate=48000)
    sink = Sink()
    source.link(sink.receive, None)
    frame = AudioFrame.from_ndarray(np.full((2, 960), 0.25, dtype=np.float32), format="fltp", layout="stereo")
    frame.pts, frame.sample_rate, frame.time_base = 0, 48000, fractions.Fraction(1, 48000)
    await source._push_frame(frame)
    (audio,) = [f for f in sink.frames if isinstance(f, InputAudioFrame)]
    assert audio.channels == 1 and abs(int(audio.samples[-1]) - 8192) <= 1


@pytest.mark.asyncio
async def test_the_bot_track_is_paced_and_plays_silence_when_nothing_is_queued() -> None:
    output = WebRTCOutput()
    await output.receive(StartFrame(output_sample_rate=48000))
    tone = (np.ones(4800) * 3000).astype(np.int16).tobytes()  # 100 ms of bot audio
    await output.receive(OutputAudioFrame(pcm=tone, sample_rate=48000, text="hi "))
    track: BotAudioTrack = output.track
    started = time.monotonic()
    frames = [await track.recv() for _ in range(26)]
    elapsed = time.monotonic() - started
    assert 0.45 < elapsed < 0.65  # 25 periods of 20 ms after the first frame
    levels = [int(np.abs(f.to_ndarray()).max()) for f in frames]
    assert levels[:5] == [3000] * 5 and set(levels[5:]) == {0}
    assert [f.pts for f in frames[:3]] == [0, 960, 1920] and frames[0].sample_rate == 48000
    track.stop()


def test_page_messages_are_validated() -> None:
    assert parse_message('{"type": "text", "text": " hi "}') == {"type": "text", "text": "hi"}
    assert parse_message('{"type": "dtmf", "digit": "a"}') == {"type": "dtmf", "digit": "A"}
    for bad in (b"\x00", "[]", '{"type": 1}', '{"type": "text", "text": ""}', '{"type": "text", "text": 5}',
                '{"type": "dtmf", "digit": "55"}', '{"type": "shell"}', "x" * 5000,
                json.dumps({"type": "text", "text": "y" * 1001})):
        with pytest.raises(BadMessage):
            parse_message(bad)


def test_frames_map_to_page_events() -> None:
    assert frame_event(TranscriptionFrame(text="hello", final=False, turn_id=3)) == {
        "type": "transcript", "text": "hello", "final": False, "turn_id": 3, "language": None, "source": "voice"}
    assert frame_event(BotStoppedSpeakingFrame(turn_id=2, interrupted=True))["interrupted"] is True
    assert frame_event(PlayoutProgressFrame(turn_id=1, text_heard="a")) is None  # sent only when the words change
    assert frame_event(InputAudioFrame(pcm=b"", sample_rate=16000)) is None


def test_silence_is_sent_before_the_call_starts() -> None:
    async def scenario() -> int:
        output = WebRTCOutput()
        frame = await output.track.recv()
        return int(np.abs(frame.to_ndarray()).max())

    assert asyncio.run(scenario()) == 0
