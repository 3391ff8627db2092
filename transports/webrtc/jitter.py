"""The caller's audio jitter buffer, in place of aiortc's.

aiortc 1.16's audio buffer (16 packets, prefetch 4) stops at a missing packet
until it is full, then throws away the good packets queued before the hole as
well: each lost packet costs about five frames. Measured with
``bench/impaired.py --transport webrtc`` (5 % loss, 40 ± 10 ms jitter) that
was a quarter of the caller's audio and +21 to +34 points of WER.

``AudioJitterBuffer`` has the interface aiortc's receiver calls —
``add(packet) -> (pli_flag, JitterFrame | None)``, once per RTP packet, with
``packet._data`` set — and releases packets in sequence order as soon as they
can be: nothing downstream plays in real time (the graph takes caller audio as
fast as it comes), so there is no prefetch. At a hole it waits a bounded time
for the missing packet (adaptive: a little more than the recent lateness of
reordered packets), then gives up on just that packet. Lost Opus frames are
concealed by the decoder's own PLC and a backlog is released in one packet
(``opus_packets``), because aiortc decodes exactly one frame per packet added.
Other gaps become a jump in timestamps, which ``WebRTCInput`` fills with
silence. Sequence numbers are unwrapped (16-bit wrap-around), duplicates and
packets arriving after their slot was given up are dropped and counted, a new
SSRC or a run of packets from behind resynchronises, and at most ``max_held``
packets are ever held.

``install_jitter_buffers(pc)`` puts one on each audio receiver. aiortc keeps
the buffer in a private attribute, so the install checks the aiortc version
and the attributes first, and otherwise logs one warning and leaves aiortc's
buffer alone: a call never fails over it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiortc
from aiortc.jitterbuffer import JitterBuffer as AiortcJitterBuffer
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket

from transports.webrtc import opus_packets as opus

logger = logging.getLogger(__name__)

#: The aiortc release whose receiver internals this was written against (pyproject pins 1.16.0).
TESTED_AIORTC = "1.16."
_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"
_CODECS_ATTR = "_RTCRtpReceiver__codecs"

_TS_MASK = 0xFFFFFFFF
#: Codecs whose packets are plain sample streams: joining them is concatenating them.
_BYTE_STREAM_CODECS = frozenset({"pcmu", "pcma", "g722"})
#: 120 ms at an 8 kHz RTP clock: the most a joined G.711/G.722 release carries.
_MAX_JOINED_TICKS = 960
#: A packet further behind the release point than this (2 s of 20 ms packets) is no late packet:
#: two in a row mean the sender restarted its sequence numbers behind ours.
_MAX_MISORDER = 100
_STALE_RESYNC = 2
#: A hole this long (20 s of 20 ms packets) is a sender that restarted ahead, not loss.
_JUMP_RESYNC = 1000
#: Given-up sequence numbers remembered, to tell a late packet from a duplicate.
_GIVEN_UP_KEPT = 64
#: Lateness samples the adaptive wait is taken from.
_LATENESS_KEPT = 64


@dataclass(slots=True)
class JitterStats:
    """What the buffer did with the caller's packets, for logs and benches."""

    received: int = 0  # packets stored for release
    released: int = 0  # of those, handed to the decoder
    concealed: int = 0  # lost frames the decoder concealed (Opus PLC)
    skipped: int = 0  # lost packets given up without concealment (silence downstream)
    late: int = 0  # arrived after their slot was given up
    duplicates: int = 0
    joined: int = 0  # releases carrying more than one frame (catching up, or PLC)
    resyncs: int = 0  # new SSRC or sequence numbers restarted
    dropped: int = 0  # held packets discarded at a resync, and empty payloads
    wait_ms: float = 0.0  # how long a hole is waited for now


class AudioJitterBuffer:
    """Sequence-ordered release with a bounded, adaptive wait at holes (aiortc's JitterBuffer interface)."""

    def __init__(
        self,
        *,
        codec_of: Callable[[int], str | None] = lambda payload_type: None,
        clock: Callable[[], float] = time.monotonic,
        initial_wait_s: float = 0.06,
        min_wait_s: float = 0.02,
        max_wait_s: float = 0.16,
        max_held: int = 24,
        max_conceal: int = 5,
    ) -> None:
        """``codec_of`` names the codec of a payload type ("opus", "pcmu", ...); None: no joining."""
        if not 0 < min_wait_s <= initial_wait_s <= max_wait_s:
            raise ValueError("need 0 < min_wait_s <= initial_wait_s <= max_wait_s")
        if max_held < 1 or max_conceal < 0:
            raise ValueError("max_held must be at least 1 and max_conceal not negative")
        self._codec_of = codec_of
        self._clock = clock
        self._min_wait = min_wait_s
        self._max_wait = max_wait_s
        self._max_held = max_held
        self._max_conceal = max_conceal
        self._wait = initial_wait_s
        self.stats = JitterStats(wait_ms=initial_wait_s * 1000)
        self._held: dict[int, tuple[RtpPacket, float]] = {}  # unwrapped sequence → (packet, arrival)
        self._head: int | None = None  # unwrapped sequence number released next
        self._start = 0  # where the stream (re)started: anything before it came too late
        self._highest = 0
        self._ssrc: int | None = None
        self._next_ts: int | None = None  # RTP timestamp right after the last released audio
        self._given_up: OrderedDict[int, float] = OrderedDict()  # sequence → when its hole was noticed
        self._lateness: deque[float] = deque(maxlen=_LATENESS_KEPT)
        self._stale_run = 0
        self._warned_empty = False

    @property
    def capacity(self) -> int:
        """The most packets ever held (aiortc's buffers expose their size under this name)."""
        return self._max_held

    def __len__(self) -> int:
        return len(self._held)

    # ------------------------------------------------------------------ input

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        """Take one packet; return (False, the next encoded frame for the decoder, if one is ready)."""
        now = self._clock()
        data = _payload(packet)
        if self._head is None or packet.ssrc != self._ssrc:
            if self._head is not None:
                self._resync(f"new SSRC {packet.ssrc}")
            self._ssrc = packet.ssrc
            self._head = self._highest = self._start = packet.sequence_number
        seq = self._unwrap(packet.sequence_number)
        if not data:
            # An empty packet would reach the decoder as an end-of-stream marker; its slot is a hole.
            self.stats.dropped += 1
            if not self._warned_empty:
                self._warned_empty = True
                logger.info("caller sent an empty RTP payload (seq %d); treated as lost", packet.sequence_number)
        elif seq < self._head:
            self._stale(seq, now)
            if self._stale_run >= _STALE_RESYNC:
                self._resync(f"sequence numbers went back to {packet.sequence_number}")
                self._head = self._highest = self._start = seq
                self._store(seq, packet, now)
        elif seq in self._held:
            self.stats.duplicates += 1
        else:
            self._store(seq, packet, now)
        return False, self._release(now)

    def _unwrap(self, seq16: int) -> int:
        delta = (seq16 - self._highest) & 0xFFFF
        return self._highest + (delta - 0x10000 if delta >= 0x8000 else delta)

    def _store(self, seq: int, packet: RtpPacket, now: float) -> None:
        self._stale_run = 0
        later = [arrival for s, (_, arrival) in self._held.items() if s > seq]
        if later:  # it fills a hole that was noticed when the first packet after it came
            self._observe_lateness(now - min(later))
        self._held[seq] = (packet, now)
        self._highest = max(self._highest, seq)
        self.stats.received += 1

    def _stale(self, seq: int, now: float) -> None:
        """A packet from before the release point: late (its slot was given up) or a duplicate."""
        assert self._head is not None
        self._stale_run = self._stale_run + 1 if self._head - seq > _MAX_MISORDER else 0
        noticed = self._given_up.pop(seq, None)
        if noticed is not None:
            self.stats.late += 1
            self._observe_lateness(now - noticed)
        elif seq < self._start:  # overtaken by the packet the stream started from
            self.stats.late += 1
        else:
            self.stats.duplicates += 1

    def _observe_lateness(self, lateness_s: float) -> None:
        """Wait a little more than recent reordered packets were late (their 95th percentile)."""
        self._lateness.append(min(max(lateness_s, 0.0), 2 * self._max_wait))
        ordered = sorted(self._lateness)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        self._wait = min(self._max_wait, max(self._min_wait, 1.25 * p95 + 0.01))
        self.stats.wait_ms = round(self._wait * 1000, 1)

    def _resync(self, why: str) -> None:
        logger.info("caller audio resynchronised: %s (%d held packets dropped)", why, len(self._held))
        self.stats.resyncs += 1
        self.stats.dropped += len(self._held)
        self._held.clear()
        self._given_up.clear()
        self._next_ts = None
        self._stale_run = 0

    # ---------------------------------------------------------------- release

    def _release(self, now: float) -> JitterFrame | None:
        if not self._held:
            return None
        assert self._head is not None
        lost = 0
        if self._head not in self._held:
            noticed = min(arrival for _, arrival in self._held.values())
            if now - noticed < self._wait and len(self._held) < self._max_held:
                return None  # the missing packet may still come
            first = min(self._held)
            lost = first - self._head
            for seq in range(max(self._head, first - _GIVEN_UP_KEPT), first):
                self._given_up[seq] = noticed
            while len(self._given_up) > _GIVEN_UP_KEPT:
                self._given_up.popitem(last=False)
            self._head = first
            if lost > _JUMP_RESYNC:
                logger.info("caller audio resynchronised: sequence numbers jumped %d ahead", lost)
                self.stats.resyncs += 1
                self._next_ts = None
                lost = 0
        packet = self._take()
        codec = self._codec_of(packet.payload_type)
        if codec == "opus":
            return self._release_opus(packet, lost)
        if codec in _BYTE_STREAM_CODECS:
            return self._release_samples(packet, lost)
        self.stats.skipped += lost
        self._next_ts = None
        return JitterFrame(data=_payload(packet), timestamp=packet.timestamp)

    def _take(self) -> RtpPacket:
        assert self._head is not None
        packet, _ = self._held.pop(self._head)
        self._head += 1
        self.stats.released += 1
        return packet

    def _release_opus(self, packet: RtpPacket, lost: int) -> JitterFrame:
        data = _payload(packet)
        frame = opus.single_frame(data)
        toc = opus.parse_toc(data)
        if frame is None or toc is None:  # not a one-frame packet: passed on as it is
            self.stats.skipped += lost
            self._next_ts = None
            return JitterFrame(data=data, timestamp=packet.timestamp)
        size, room = toc.frame_samples, opus.max_frames(toc)
        conceal = 0
        if 0 < lost <= self._max_conceal and lost < room:
            conceal = lost
            if self._next_ts is not None:  # no more than the timestamps leave room for
                gap = (packet.timestamp - self._next_ts) & _TS_MASK
                conceal = min(conceal, gap // size if gap < 0x80000000 else 0)
        self.stats.concealed += conceal
        self.stats.skipped += lost - conceal
        frames = [b""] * conceal + [frame]
        next_ts = (packet.timestamp + size) & _TS_MASK
        while len(frames) < room and self._head in self._held:  # catch up in the same release
            following = _payload(self._held[self._head][0])
            if following[:1] != data[:1] or self._held[self._head][0].timestamp != next_ts:
                break
            more = opus.single_frame(following)
            if more is None:
                break
            self._take()
            frames.append(more)
            next_ts = (next_ts + size) & _TS_MASK
        self._next_ts = next_ts
        if len(frames) == 1:
            return JitterFrame(data=data, timestamp=packet.timestamp)
        self.stats.joined += 1
        start = (packet.timestamp - conceal * size) & _TS_MASK
        return JitterFrame(data=opus.join(data[0], frames), timestamp=start)

    def _release_samples(self, packet: RtpPacket, lost: int) -> JitterFrame:
        """G.711/G.722: one byte per clock tick, so contiguous packets simply concatenate."""
        self.stats.skipped += lost
        parts = [_payload(packet)]
        ticks = len(parts[0])
        while self._head in self._held and ticks < _MAX_JOINED_TICKS:
            following = self._held[self._head][0]
            if following.timestamp != (packet.timestamp + ticks) & _TS_MASK:
                break
            self._take()
            parts.append(_payload(following))
            ticks += len(parts[-1])
        if len(parts) > 1:
            self.stats.joined += 1
        self._next_ts = (packet.timestamp + ticks) & _TS_MASK
        return JitterFrame(data=b"".join(parts), timestamp=packet.timestamp)


def _payload(packet: RtpPacket) -> bytes:
    """The depayloaded bytes aiortc's receiver sets before ``add`` (the RTP payload, for audio)."""
    data = getattr(packet, "_data", None)
    return packet.payload if data is None else data


# ------------------------------------------------------------------- install

_warned = False


def install_jitter_buffers(pc: Any) -> int:
    """Put an ``AudioJitterBuffer`` on each audio receiver of ``pc``; how many now have one. Never raises."""
    installed = 0
    try:
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio" and _install(transceiver.receiver):
                installed += 1
    except Exception as exc:  # an internal aiortc change: keep its buffer, keep the call
        _warn_once(f"{type(exc).__name__}: {exc}")
    return installed


def _install(receiver: Any) -> bool:
    problem = _unsupported(receiver)
    if problem is not None:
        _warn_once(problem)
        return False
    if isinstance(getattr(receiver, _BUFFER_ATTR), AudioJitterBuffer):
        return True
    codecs: Mapping[int, Any] = getattr(receiver, _CODECS_ATTR)  # filled in place when the receiver starts
    setattr(receiver, _BUFFER_ATTR, AudioJitterBuffer(codec_of=lambda pt: _codec_name(codecs, pt)))
    return True


def _unsupported(receiver: Any) -> str | None:
    """Why aiortc's buffer cannot be replaced on this receiver, or None."""
    version = str(getattr(aiortc, "__version__", "unknown"))
    if not version.startswith(TESTED_AIORTC):
        return f"aiortc {version} is not the {TESTED_AIORTC}x release whose receiver this replacement fits"
    if not isinstance(getattr(receiver, _BUFFER_ATTR, None), (AiortcJitterBuffer, AudioJitterBuffer)):
        return "the receiver keeps no jitter buffer where aiortc 1.16 does"
    if not isinstance(getattr(receiver, _CODECS_ATTR, None), dict):
        return "the receiver keeps no codec table where aiortc 1.16 does"
    return None


def _codec_name(codecs: Mapping[int, Any], payload_type: int) -> str | None:
    codec = codecs.get(payload_type)
    return str(codec.name).lower() if codec is not None else None


def _warn_once(problem: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        logger.warning("WebRTC: keeping aiortc's own audio jitter buffer (%s); under packet loss it "
                       "discards about five frames per lost packet", problem)


def jitter_stats(pc: Any) -> list[JitterStats]:
    """The stats of the ``AudioJitterBuffer``s installed on ``pc``'s audio receivers."""
    found = []
    for transceiver in pc.getTransceivers():
        buffer = getattr(transceiver.receiver, _BUFFER_ATTR, None)
        if isinstance(buffer, AudioJitterBuffer):
            found.append(buffer.stats)
    return found
