"""Bots for the WebRTC tests and bench.

* ``echo_bot``: the caller's audio comes straight back as bot audio — the
  mouth-to-ear round trip of the transport with nothing else in the way.
* ``clinic``: the embedded demo bot (``agent.clinic:clinic_bot``: VAD →
  Whisper → turn-taking → rule-based desk → piper), what a developer meets first.
"""

from __future__ import annotations

from agent.calls import CallInfo
from agent.frames import Frame, InputAudioFrame, OutputAudioFrame
from agent.node import DOWNSTREAM, Node


class Echo(Node):
    """Caller audio back out as bot audio, frame for frame."""

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, InputAudioFrame) and direction == DOWNSTREAM:
            await self.emit(OutputAudioFrame(pcm=frame.pcm, sample_rate=frame.sample_rate, pts=frame.pts))
            return
        await self.emit(frame, direction)


def echo_bot(info: CallInfo) -> list[Node]:
    return [Echo()]


def clinic_bot(info: CallInfo) -> list[Node]:
    from agent.clinic import clinic_bot as build

    return build(info)
