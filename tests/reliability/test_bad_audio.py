"""Audio of the wrong rate, width or channel count handed to the audio nodes.

A transport or a bot author can get the format wrong (8-bit samples, a rate of
0, a channel count that does not divide the buffer, stereo bot audio). The
contract: an odd but usable format is converted (any positive rate, stereo
input, a rate change the node can follow); an unusable one ends *that* call
with an error naming the node and the problem, and a call running beside it
in the same process carries on untouched.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest

from agent.frames import Frame, InputAudioFrame, OutputAudioFrame
from agent.node import Node
from agent.session import Session
from agent.vad import VADNode
from stt.whisper import WhisperSTTNode
from tests.reliability.helpers import leftover_tasks
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
    # Each rate's streaming resampler keeps its last few ms (never flushed): up to ~30 ms per rate.
    assert result.reason == "completed" and 3.85 <= played_s <= 4.0


async def test_unusable_bot_audio_ends_only_its_call(tally: Counter[str]) -> None:
    output = RecordingOutput(sample_rate=16000)
    session = Session([output], output_sample_rate=16000, session_id="out-bad")
    task = asyncio.create_task(session.run())
    await session.started.wait()
    await session.push(OutputAudioFrame(pcm=b"\x01\x00" * 320, sample_rate=0))
    result = await asyncio.wait_for(task, 5)
    tally["audio frames to nodes"] += 1
    assert result.reason == "error" and re.match(r"RecordingOutput: ValueError: [Ss]ample rate", result.error or "")


@pytest.mark.xfail(strict=True, reason="OutputTransport ignores OutputAudioFrame.channels: stereo bot audio is "
                   "played as mono at twice its length (garbled); it should down-mix with to_mono or refuse")
async def test_stereo_bot_audio_is_not_played_garbled() -> None:
    output = RecordingOutput(sample_rate=16000)
    session = Session([output], output_sample_rate=16000)
    task = asyncio.create_task(session.run())
    await session.started.wait()
    stereo_second = np.zeros(16000 * 2, dtype=np.int16).tobytes()
    await session.push(OutputAudioFrame(pcm=stereo_second, sample_rate=16000, channels=2))
    await session.end()
    result = await asyncio.wait_for(task, 10)
    played_s = sum(len(c.pcm) for c in output.played) / 32000
    assert result.reason == "error" or played_s == pytest.approx(1.0, abs=0.05)
