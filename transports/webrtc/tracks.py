"""Audio between aiortc and the graph: the caller's track in, the bot's track out.

``WebRTCInput`` reads the browser's decoded Opus (48 kHz stereo), mixes it to
mono, resamples it to the graph's rate and pushes it into the call. Lost Opus
packets are concealed by the decoder (``jitter.py`` asks for it); any other gap
in the RTP timestamps (a long outage, G.711, aiortc's own jitter buffer) becomes
silence here: the VAD and STT keep counting media time correctly under loss.

``BotAudioTrack`` is what aiortc sends. aiortc's sender asks it for one frame
at a time; it waits until that frame is due on its own 20 ms clock and only
then takes the next chunk from the output's playout buffer (pull mode). Audio
is therefore never queued ahead of the wire: an interrupt empties the buffer
and the very next frame sent is silence.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections.abc import Callable

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from agent.audio import Resampler, float_to_int16, to_mono
from agent.frames import EndFrame, Frame, StartFrame
from transports.base import InputTransport, OutputTransport

logger = logging.getLogger(__name__)

OPUS_RATE = 48000
FRAME_MS = 20
#: Late by more than this (a stalled event loop), the clock restarts instead of
#: bursting the backlog: a burst would only overflow the browser's jitter buffer.
_MAX_LATE_S = 0.2
#: Gaps in the caller's RTP timestamps up to this long are filled with silence.
_MAX_GAP_S = 1.0


class WebRTCInput(InputTransport):
    """Caller audio from an aiortc remote track into the graph."""

    def __init__(self, *, sample_rate: int | None = None, name: str | None = None) -> None:
        super().__init__(sample_rate=sample_rate, name=name or "webrtc-in")
        self.track: MediaStreamTrack | None = None
        self.frames_received = 0
        self.gap_samples_filled = 0
        self.on_track_ended: Callable[[], None] | None = None
        self._graph_started = False
        self._reader: asyncio.Task[None] | None = None
        # 48 kHz decoded Opus → the graph's rate. Not ``_resampler``: that name is the base
        # class's own converter, and sharing it reset this one on every chunk pushed.
        self._decoded_resampler: Resampler | None = None
        self._next_pts: int | None = None

    def attach_track(self, track: MediaStreamTrack) -> None:
        """Read this track (the first audio track of the peer connection)."""
        if self.track is not None:
            return
        self.track = track
        if self._graph_started:
            self._start_reader()

    async def process(self, frame: Frame, direction: int) -> None:
        await super().process(frame, direction)
        if isinstance(frame, StartFrame):
            self._graph_started = True
            if self.track is not None:
                self._start_reader()

    def _start_reader(self) -> None:
        if self._reader is None:
            self._reader = self.spawn(self._read(), interruptible=False)

    async def _read(self) -> None:
        assert self.track is not None
        while True:
            try:
                frame = await self.track.recv()
            except MediaStreamError:
                break
            self.frames_received += 1
            await self._push_frame(frame)
        logger.debug("caller track ended after %d frames", self.frames_received)
        if self.on_track_ended is not None:
            self.on_track_ended()

    async def _push_frame(self, frame: AudioFrame) -> None:
        rate = frame.sample_rate
        mono = _mono_int16(frame)
        if self._decoded_resampler is None or self._decoded_resampler.in_rate != rate:
            self._decoded_resampler = Resampler(rate, self.sample_rate or 16000)
            self._next_pts = None
        if frame.pts is not None:
            if self._next_pts is not None:
                gap = frame.pts - self._next_pts
                if 0 < gap <= _MAX_GAP_S * rate:
                    self.gap_samples_filled += gap
                    await self._push(np.zeros(gap, dtype=np.int16))
            self._next_pts = frame.pts + frame.samples
        await self._push(mono)

    async def _push(self, samples: np.ndarray) -> None:
        assert self._decoded_resampler is not None
        out = self._decoded_resampler.process(samples)
        if len(out):
            await self.push_audio(out.tobytes(), self._decoded_resampler.out_rate)


def _mono_int16(frame: AudioFrame) -> np.ndarray:
    """A decoded frame as mono int16 (aiortc's Opus decoder gives packed s16 stereo)."""
    channels = len(frame.layout.channels)
    data = frame.to_ndarray()
    frames = data.reshape(channels, -1).T if frame.format.is_planar else data.reshape(-1, channels)
    if data.dtype == np.int16:
        return to_mono(np.ascontiguousarray(frames).reshape(-1), channels)
    if np.issubdtype(data.dtype, np.floating):
        return float_to_int16(frames.mean(axis=1))
    raise ValueError(f"unsupported sample format from the decoder: {frame.format.name}")


class WebRTCOutput(OutputTransport):
    """The bot's voice for one peer connection: a playout buffer read by a track."""

    def __init__(self, *, max_buffer_s: float = 1.0, name: str | None = None) -> None:
        super().__init__(
            sample_rate=OPUS_RATE, chunk_ms=FRAME_MS, max_buffer_s=max_buffer_s, pull=True, name=name or "webrtc-out"
        )
        self.track = BotAudioTrack(self)

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, EndFrame):
            await self._drain_playout()
        await super().process(frame, direction)

    async def _drain_playout(self) -> None:
        """A graceful end waits until the track has sent the queued goodbye.

        (The base class waits for its own pacer; in pull mode the pacer is the
        track, so the wait is here, bounded by what is queued.)
        """
        playout = self.playout
        if playout is None:
            return
        playout.flush_partial()
        deadline = time.monotonic() + playout.buffered_s + 1.0
        while len(playout) and self.track.readyState == "live" and time.monotonic() < deadline:
            await asyncio.sleep(self.chunk_ms / 1000.0)


class BotAudioTrack(MediaStreamTrack):
    """An aiortc audio track whose frames come from a ``WebRTCOutput``, in real time."""

    kind = "audio"

    def __init__(self, output: OutputTransport) -> None:
        super().__init__()
        self._output = output
        self._rate = output.sample_rate or OPUS_RATE
        self._samples = self._rate * FRAME_MS // 1000
        self._silence = bytes(2 * self._samples)
        self._time_base = fractions.Fraction(1, self._rate)
        self._clock_start: float | None = None
        self._timestamp = 0
        self.frames_sent = 0
        self.audio_frames_sent = 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._wait_until_due()
        pcm = await self._take()
        if pcm is None or len(pcm) != len(self._silence):
            pcm = self._silence
        else:
            self.audio_frames_sent += 1
        self.frames_sent += 1
        frame = AudioFrame(format="s16", layout="mono", samples=self._samples)
        frame.planes[0].update(pcm)
        frame.pts = self._timestamp
        frame.sample_rate = self._rate
        frame.time_base = self._time_base
        return frame

    async def _wait_until_due(self) -> None:
        now = time.monotonic()
        if self._clock_start is None:
            self._clock_start = now
            return
        self._timestamp += self._samples
        due = self._clock_start + self._timestamp / self._rate
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > _MAX_LATE_S:
            self._clock_start = now - self._timestamp / self._rate

    async def _take(self) -> bytes | None:
        """The chunk due now; a failure upstream must not kill aiortc's sender loop."""
        try:
            return await self._output.pull()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("bot audio pull failed; sending silence")
            return None
