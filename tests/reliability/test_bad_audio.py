"""Audio of the wrong rate, width or channel count handed to the audio nodes.

A transport or a bot author can get the format wrong (8-bit samples, a rate of
0, a channel count that does not divide the buffer, stereo bot audio). The
contract: an odd but usable format is converted (any positive rate, stereo
input, a rate change the node can follow); an unusable one ends *that* call
with an error naming the node and the problem, and a call running beside it
in the same process carries on untouched. Caller audio is checked once, where
it enters (``InputTransport.push_audio``), so in a real graph the error names
the transport and no node downstream ever sees the bad frame; the nodes' own
checks below are the second line, for frames injected past the transport.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest

from agent.frames import ErrorFrame, Frame, InputAudioFrame, OutputAudioFrame, TTSStoppedFrame
from agent.node import Node
from agent.session import Session
from agent.vad import VADNode
from stt.whisper import WhisperSTTNode
from tests.reliability.helpers import leftover_tasks
from transports.base import InputTransport
from transports.local import RecordingOutput, ScriptedInput, Segment

pytestmark = pytest.mark.asyncio(loop_scope="session")

TONE = (3000 * np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000)).astype(np.int16)


def caller(pcm_bytes: int = 640, rate: int = 16000, channels: int = 1, pts: float = 0.0) -> InputAudioFrame:
    pcm = (TONE.tobytes() * 2)[:pcm_bytes]
    return InputAudioFrame(pcm=pcm, sample_rate=rate, channels=channels, pts=pts)


def frames(*made: InputAudioFrame, repeat: int = 1) -> list[InputAudioFrame]:
    return [f for _ in range(repeat) for f in made]


NODES: dict[str, Callable[[], Node]] = {
    "vad": VADNode,
    "stt": lambda: WhisperSTTNode(interims="off", speculative=False),
}

# (case, frames, for each node: None = accepted, or a regex the error must match)
INPUT_CASES: list[tuple[str, list[InputAudioFrame], dict[str, str | None]]] = [
    ("8-bit width (odd byte count)", frames(caller(641)),
     {"vad": r"641 bytes is not whole 1-channel int16", "stt": r"ValueError: buffer size must be a multiple"}),
    ("rate 0", frames(caller(rate=0)), {"vad": r"[Ss]ample rate", "stt": r"[Ss]ample rate"}),
    ("negative rate", frames(caller(rate=-8000)), {"vad": r"[Ss]ample rate", "stt": r"[Ss]ample rate"}),
    ("3 channels in a 2-channel buffer", frames(caller(640, channels=3)),
     {"vad": r"not whole 3-channel int16", "stt": r"ValueError"}),
    ("0 channels", frames(caller(channels=0)), {"vad": r"ZeroDivisionError", "stt": r"ValueError"}),
    ("rate changes mid-call", frames(caller(rate=16000), caller(rate=8000, pts=0.02)),
     {"vad": r"input sample rate changed mid-call \(16000 → 8000 Hz\)", "stt": None}),
    ("11.025 kHz", frames(caller(441 * 2, rate=11025), repeat=10), {"vad": None, "stt": None}),
    ("44.1 kHz", frames(caller(1764, rate=44100), repeat=10), {"vad": None, "stt": None}),
    ("48 kHz stereo", frames(caller(3840, rate=48000, channels=2), repeat=10), {"vad": None, "stt": None}),
    ("8 kHz", frames(caller(320, rate=8000), repeat=10), {"vad": None, "stt": None}),
    ("empty frames", frames(caller(0), repeat=5), {"vad": None, "stt": None}),
    ("NaN media time", frames(caller(pts=float("nan")), repeat=5), {"vad": None, "stt": None}),
]


async def run_beside_a_healthy_call(bad: Session, made: list[Frame]) -> tuple[object, object]:
    """Run ``bad`` (fed ``made``) while an identical healthy call runs beside it."""
    good_out = RecordingOutput()
    good = Session([ScriptedInput([Segment(TONE[:6400])], end_after_s=0.05), *bad_graph_twin(bad), good_out])
    good_task = asyncio.create_task(good.run())
    bad_task = asyncio.create_task(bad.run())
    await bad.started.wait()
    for frame in made:
        await bad.push(frame)
        if bad_task.done():
            break
    await asyncio.sleep(0.15)
    if not bad_task.done():
        await bad.cancel("test_done")
    bad_result = await asyncio.wait_for(bad_task, 10)
    good_result = await asyncio.wait_for(good_task, 10)
    assert good_result.reason == "script_finished" and len(good_out.played) >= 18  # heard all its 0.4 s
    assert not leftover_tasks(bad)
    return bad_result, good_result


def bad_graph_twin(bad: Session) -> list[Node]:
    """A fresh copy of the node under test, for the healthy neighbour."""
    return [NODES[bad.session_id.split("-")[0]]()] + [EchoOut()]


class EchoOut(Node):
    """Turns caller audio into bot audio, so the healthy call has something to hear."""

    async def process(self, frame: Frame, direction: int) -> None:
        await self.emit(frame, direction)
        if isinstance(frame, InputAudioFrame):
            await self.emit(OutputAudioFrame(pcm=frame.pcm, sample_rate=frame.sample_rate))


@pytest.mark.parametrize("node", sorted(NODES))
@pytest.mark.parametrize(("case", "made", "expect"), INPUT_CASES, ids=[c[0] for c in INPUT_CASES])
async def test_bad_caller_audio_ends_only_its_own_call(node: str, case: str, made: list[InputAudioFrame],
                                                       expect: dict[str, str | None], tally: Counter[str]) -> None:
    under_test = NODES[node]()
    bad = Session([under_test], session_id=f"{node}-bad")
    result, _ = await run_beside_a_healthy_call(bad, made)
    tally["audio frames to nodes"] += len(made)
    pattern = expect[node]
    if pattern is None:
        assert result.reason == "test_done", result.error  # converted and carried on
    else:
        assert result.reason == "error" and (result.error or "").startswith(under_test.name), result.error
        assert re.search(pattern, result.error or ""), result.error


async def test_bot_audio_at_another_rate_is_resampled_for_the_caller(tally: Counter[str]) -> None:
    output = RecordingOutput(sample_rate=16000)
    session = Session([output], output_sample_rate=16000)
    task = asyncio.create_task(session.run())
    await session.started.wait()
    for rate in (8000, 22050, 24000, 48000):
        second = np.zeros(rate, dtype=np.int16).tobytes()
        await session.push(OutputAudioFrame(pcm=second, sample_rate=rate))
        tally["audio frames to nodes"] += 1
    await session.end()
    result = await asyncio.wait_for(task, 10)
    played_s = sum(len(c.pcm) for c in output.played) / 32000
    # A new source rate ends the previous rate's stream and the end of the call ends the last, so
    # every resampler's held-back tail is played: 4 s exactly (plus the padding of the last chunk).
    assert result.reason == "completed" and 4.0 <= played_s <= 4.02


async def test_unusable_bot_audio_ends_only_its_call(tally: Counter[str]) -> None:
    output = RecordingOutput(sample_rate=16000)
    session = Session([output], output_sample_rate=16000, session_id="out-bad")
    task = asyncio.create_task(session.run())
    await session.started.wait()
    await session.push(OutputAudioFrame(pcm=b"\x01\x00" * 320, sample_rate=0))
    result = await asyncio.wait_for(task, 5)
    tally["audio frames to nodes"] += 1
    assert result.reason == "error" and re.match(r"RecordingOutput: ValueError: bot audio: sample rate 0 Hz",
                                                 result.error or "")


def dominant_hz(pcm: bytes, rate: int) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


@pytest.mark.parametrize("rate", [16000, 24000])
async def test_stereo_bot_audio_is_not_played_garbled(rate: int) -> None:
    """Stereo played as mono would last twice as long at half the pitch; it is down-mixed instead."""
    output = RecordingOutput(sample_rate=16000)
    session = Session([output], output_sample_rate=16000)
    task = asyncio.create_task(session.run())
    await session.started.wait()
    tone = (3000 * np.sin(np.arange(rate) * 2 * np.pi * 440 / rate)).astype(np.int16)
    stereo_second = np.column_stack([tone, tone]).reshape(-1).tobytes()  # L R L R ...
    await session.push(OutputAudioFrame(pcm=stereo_second, sample_rate=rate, channels=2))
    await session.end()
    result = await asyncio.wait_for(task, 10)
    played = b"".join(c.pcm for c in output.played)
    assert result.reason == "completed"
    assert len(played) / 32000 == pytest.approx(1.0, abs=0.021)  # one second, to the 20 ms chunk
    assert dominant_hz(played, 16000) == pytest.approx(440, abs=2)


async def test_malformed_stereo_bot_audio_ends_only_its_call() -> None:
    output = RecordingOutput(sample_rate=16000)
    session = Session([output], output_sample_rate=16000)
    task = asyncio.create_task(session.run())
    await session.started.wait()
    await session.push(OutputAudioFrame(pcm=b"\x01\x00" * 321, sample_rate=16000, channels=2))
    result = await asyncio.wait_for(task, 5)
    assert result.reason == "error"
    assert result.error == "RecordingOutput: ValueError: bot audio: 642 bytes is not whole 2-channel int16 samples " \
                           "(8-bit or truncated audio?)"


async def test_the_end_of_each_utterance_is_played_to_the_last_millisecond() -> None:
    """Bot audio at 24 kHz into a 16 kHz output: the resampler's held-back tail is flushed per utterance."""
    output = RecordingOutput(sample_rate=16000)
    session = Session([output], output_sample_rate=16000)
    task = asyncio.create_task(session.run())
    await session.started.wait()
    # Loud to the very last sample, then the end of the utterance; 0.9 s = 45 whole 20 ms chunks.
    tone = (8000 * np.sin(np.arange(21600) * 2 * np.pi * 300 / 24000)).astype(np.int16)
    for i in range(0, len(tone), 480):
        await session.push(OutputAudioFrame(pcm=tone[i : i + 480].tobytes(), sample_rate=24000, turn_id=1))
    await session.push(TTSStoppedFrame(turn_id=1))
    await session.end()
    result = await asyncio.wait_for(task, 10)
    played = np.frombuffer(b"".join(c.pcm for c in output.played), dtype=np.int16)
    loud = np.flatnonzero(np.abs(played) > 1000)
    assert result.reason == "completed" and len(played) == 14400  # 0.9 s, not one sample more or less
    assert loud[-1] >= len(played) - 16, f"the last {(len(played) - loud[-1]) / 16:.1f} ms were lost"


# ------------------------------------------------------------ at the transport


class Pusher(InputTransport):
    """A transport whose audio the test pushes by hand."""


class Seen(Node):
    def __init__(self) -> None:
        super().__init__(name="seen")
        self.audio: list[InputAudioFrame] = []

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, InputAudioFrame):
            self.audio.append(frame)
        await self.emit(frame, direction)


# (case, chunks as (bytes, rate, channels), the error, or None when converted and passed on)
TRANSPORT_CASES: list[tuple[str, list[tuple[int, int | None, int]], str | None]] = [
    ("odd byte count", [(640, None, 1), (641, None, 1)], r"caller audio: 641 bytes is not whole 1-channel int16"),
    ("0 channels", [(640, None, 0)], r"caller audio: channel count 0 is not usable"),
    ("3 channels in a 2-channel buffer", [(640, None, 3)], r"caller audio: 640 bytes is not whole 3-channel int16"),
    ("rate 0", [(640, 0, 1)], r"caller audio: sample rate 0 Hz is not usable"),
    ("negative rate", [(640, -8000, 1)], r"caller audio: sample rate -8000 Hz is not usable"),
    ("48 kHz stereo on a 16 kHz line", [(3840, 48000, 2)] * 50, None),
    ("8 kHz on a 16 kHz line", [(320, 8000, 1)] * 50, None),
    ("rate changes mid-call", [(640, None, 1)] * 25 + [(320, 8000, 1)] * 25, None),
]


@pytest.mark.parametrize(("case", "chunks", "expect"), TRANSPORT_CASES, ids=[c[0] for c in TRANSPORT_CASES])
async def test_caller_audio_is_checked_once_where_it_enters(
    case: str, chunks: list[tuple[int, int | None, int]], expect: str | None, tally: Counter[str], caplog
) -> None:  # type: ignore[no-untyped-def]
    transport, seen = Pusher(sample_rate=16000, name="pusher"), Seen()
    session = Session([transport, seen, VADNode(), WhisperSTTNode(interims="off", speculative=False)])
    errors: list[ErrorFrame] = []
    session.subscribe(lambda f, _d: errors.append(f) if isinstance(f, ErrorFrame) else None)
    caplog.set_level(logging.WARNING)
    task = asyncio.create_task(session.run())
    await session.started.wait()
    for size, rate, channels in chunks:
        await transport.push_audio((TONE.tobytes() * 2)[:size], rate, channels)
        await transport.push_audio((TONE.tobytes() * 2)[:size], rate, channels)  # a second bad one: no 2nd error
    tally["audio chunks to transports"] += 2 * len(chunks)
    await asyncio.sleep(0.05)
    if not task.done():
        await session.end("test_done")
    result = await asyncio.wait_for(task, 10)
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if expect is not None:
        # The transport names the problem; no node behind it ever saw the frame (no numpy error).
        assert result.reason == "error" and re.match(rf"pusher: ValueError: {expect}", result.error or ""), result.error
        assert len(errors) == 1 and errors[0].fatal and errors[0].node == "pusher"
        assert len(logged) == 1 and "pusher" in logged[0] and "Traceback" not in caplog.text
        assert all(f.sample_rate == 16000 and f.channels == 1 for f in seen.audio)
    else:
        # Converted to what the line promised: mono at 16 kHz, the same duration, one log line per kind.
        assert result.reason == "test_done", result.error
        assert all(f.sample_rate == 16000 and f.channels == 1 for f in seen.audio)
        heard_s = sum(f.duration for f in seen.audio)
        sent_s = 2 * sum(size / (2 * ch * (rate or 16000)) for size, rate, ch in chunks)
        assert heard_s == pytest.approx(sent_s, abs=0.002)
        assert seen.audio[-1].pts + seen.audio[-1].duration == pytest.approx(heard_s)  # media time runs on
        assert 1 <= len(logged) <= 2 and all("pusher: caller audio" in m for m in logged), logged
        assert not errors
