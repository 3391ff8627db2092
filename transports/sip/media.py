"""Graph nodes at the two ends of a SIP call's RTP stream.

``RtpInput`` pulls one 20 ms frame from the jitter buffer per tick, on an
absolute schedule, and feeds it to the graph at the graph's rate: the graph
sees a steady real-time stream (concealment fills losses, silence fills the
time before the first packet), which is what VAD and endpointing assume.

``RtpOutput`` is an :class:`~transports.base.OutputTransport` in push mode:
the base class paces 20 ms chunks in real time, drops unsent audio on an
interrupt and reports playout upstream; here each chunk becomes one RTP
packet. Bot digits go out as RFC 4733 events, and a :class:`TransferFrame`
becomes a SIP REFER once the queued speech has been heard.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from agent.audio import Resampler
from agent.frames import DTMFFrame, Frame, StartFrame, TransferFrame
from transports.base import InputTransport, OutputTransport
from transports.rtp.session import CLOCK_RATE, RtpSession

if TYPE_CHECKING:
    from transports.sip.transport import SipCall

logger = logging.getLogger(__name__)
TICK_S = 0.02


class RtpInput(InputTransport):
    def __init__(self, call: SipCall) -> None:
        super().__init__(name="rtp-in")
        self.call = call
        self.rtp: RtpSession = call.rtp
        self._resampler: Resampler | None = None
        self.rtp.on_dtmf = self._digit

    async def process(self, frame: Frame, direction: int) -> None:
        await super().process(frame, direction)
        if isinstance(frame, StartFrame):
            # "QQ": soxr's higher qualities release output in ~100 ms blocks when fed
            # 20 ms chunks, which would make the graph's input bursty and late.
            self._resampler = Resampler(CLOCK_RATE, self.sample_rate or CLOCK_RATE, quality="QQ")
            self.spawn(self._tick(), interruptible=False)

    def _digit(self, digit: str) -> None:
        self.spawn(self._push_digit(digit), interruptible=False)

    async def _push_digit(self, digit: str) -> None:
        frame = DTMFFrame(digit=digit)
        self.call.caller_digit_ids.add(frame.id)
        await self.emit(frame)

    async def _tick(self) -> None:
        assert self._resampler is not None
        rate = self.sample_rate or CLOCK_RATE
        next_tick = time.monotonic()
        while True:
            samples, _real = self.rtp.read_frame()
            pcm = self._resampler.process(samples)
            if len(pcm):
                await self.push_audio(pcm.tobytes(), rate)
            next_tick += TICK_S
            delay = next_tick - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:  # the loop stalled: resume real time, the jitter buffer absorbs it
                next_tick = time.monotonic()


class RtpOutput(OutputTransport):
    def __init__(self, call: SipCall, *, max_buffer_s: float = 0.2) -> None:
        super().__init__(sample_rate=CLOCK_RATE, chunk_ms=20, max_buffer_s=max_buffer_s, name="rtp-out")
        self.call = call
        self.rtp: RtpSession = call.rtp
        self._digit_sender: asyncio.Task[None] | None = None

    async def write_audio(self, pcm: bytes) -> None:
        self.rtp.send_audio(pcm)

    async def write_silence(self) -> None:
        self.rtp.send_silence()

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, DTMFFrame) and frame.id not in self.call.caller_digit_ids:
            if self.rtp.send_dtmf(frame.digit, frame.duration_ms):
                self._ensure_digit_sender()
            else:
                logger.warning("call %s: far end has no telephone-event; digit %s not sent",
                               self.call.info.call_id, frame.digit)
        elif isinstance(frame, TransferFrame):
            self.spawn(self._transfer_when_heard(frame), interruptible=False)
        await super().process(frame, direction)

    def _ensure_digit_sender(self) -> None:
        if self._digit_sender is None or self._digit_sender.done():
            self._digit_sender = self.spawn(self._send_digits(), interruptible=False)

    async def _send_digits(self) -> None:
        """Pace digit packets when no speech is playing (speech ticks carry them otherwise)."""
        while self.rtp.has_pending_dtmf:
            if not self.speaking:
                self.rtp.send_silence()
            await asyncio.sleep(TICK_S)

    async def _transfer_when_heard(self, frame: TransferFrame) -> None:
        await self._wait_drained()
        await self.call.transfer(frame.target)
