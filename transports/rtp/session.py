"""One call's RTP stream over UDP: symmetric, G.711, RFC 4733 digits.

Symmetric RTP (RFC 4961): we send from the socket we receive on, and we send
*to* the address the far end's packets come from once one arrives, not only
to the address its SDP named. Softphones such as PJSIP lock onto the source
of our packets, and NATs rewrite theirs, so both halves matter. The learned
address is kept while it is live; another source can take over only after
two seconds of silence from the first, so a stray packet cannot hijack the
call.

Incoming audio is decoded into the jitter buffer; outgoing audio is whatever
the caller of :meth:`send_audio` paces (the output transport's clock).
Digits queued with :meth:`send_dtmf` replace audio packets until sent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agent.audio import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from transports.rtp import dtmf, packet
from transports.rtp.jitter import JitterBuffer

logger = logging.getLogger(__name__)

CLOCK_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms
_RELATCH_AFTER_S = 2.0
_CODECS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "PCMU": (ulaw_encode, ulaw_decode),
    "PCMA": (alaw_encode, alaw_decode),
}


@dataclass(slots=True)
class RtpCounters:
    packets_in: int = 0
    packets_out: int = 0
    bad_packets: int = 0
    ignored_packets: int = 0
    dtmf_in: int = 0
    dtmf_out: int = 0


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: RtpSession) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.owner._received(data, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable etc.
        logger.debug("rtp %s: socket error %s", self.owner.local_port, exc)


class RtpSession:
    """A bound UDP port plus the RTP state of one direction pair."""

    def __init__(
        self,
        *,
        codec: str = "PCMU",
        payload_type: int = 0,
        dtmf_payload_type: int | None = 101,
        on_dtmf: Callable[[str], None] | None = None,
        jitter: JitterBuffer | None = None,
    ) -> None:
        if codec not in _CODECS:
            raise ValueError(f"unsupported codec {codec!r}; use PCMU or PCMA")
        self.codec = codec
        self.payload_type = payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self.on_dtmf = on_dtmf
        self.jitter = jitter or JitterBuffer(clock_rate=CLOCK_RATE, frame_samples=FRAME_SAMPLES)
        self.counters = RtpCounters()
        self.remote: tuple[str, int] | None = None
        self.local_port = 0
        self._encode, self._decode = _CODECS[codec]
        self._transport: asyncio.DatagramTransport | None = None
        self._dtmf_receiver = dtmf.DtmfReceiver()
        self._dtmf_queue: deque[tuple[bytes, bool]] = deque()
        self._latched_at = 0.0
        self._remote_ssrc: int | None = None
        self._ssrc = random.getrandbits(32)
        self._sequence = random.getrandbits(16)
        self._timestamp = random.getrandbits(32)
        self._last_send = 0.0
        self._dtmf_timestamp: int | None = None
        self.send_enabled = True
        #: When a list, the monotonic time of every packet sent (benchmarks set it).
        self.send_log: list[float] | None = None

    # ------------------------------------------------------------- lifecycle

    async def open(self, host: str = "0.0.0.0", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(host, port)
        )
        self._transport = transport
        self.local_port = transport.get_extra_info("sockname")[1]
        return self.local_port

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def set_codec(self, codec: str, payload_type: int, dtmf_payload_type: int | None) -> None:
        """Apply a renegotiated answer (re-INVITE)."""
        self.codec, self.payload_type, self.dtmf_payload_type = codec, payload_type, dtmf_payload_type
        self._encode, self._decode = _CODECS[codec]

    def set_remote(self, host: str, port: int) -> None:
        """The address from SDP; replaced by the first packet's real source."""
        if self.remote is None or time.monotonic() - self._latched_at > _RELATCH_AFTER_S:
            self.remote = (host, port)

    # -------------------------------------------------------------- receive

    def _received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.monotonic()
        if packet.is_rtcp(data):
            return  # RTCP is optional here; reports are not used
        try:
            pkt = packet.parse(data)
        except packet.RtpError as exc:
            self.counters.bad_packets += 1
            logger.debug("rtp %s: dropped bad packet from %s: %s", self.local_port, addr, exc)
            return
        if self._latched_at and addr != self.remote and now - self._latched_at < _RELATCH_AFTER_S:
            self.counters.ignored_packets += 1
            return
        if addr != self.remote or not self._latched_at:
            self.remote = addr  # symmetric RTP: answer where the media comes from
        self._latched_at = now
        self.counters.packets_in += 1
        if pkt.payload_type == self.dtmf_payload_type:
            self._received_dtmf(pkt)
        elif pkt.payload_type == self.payload_type:
            if pkt.ssrc != self._remote_ssrc:
                if self._remote_ssrc is not None:
                    self.jitter.reset()  # a new stream (re-INVITE, transfer)
                self._remote_ssrc = pkt.ssrc
            samples = np.frombuffer(self._decode(pkt.payload), dtype=np.int16)
            self.jitter.push(pkt.timestamp, samples, arrival=now)
        else:
            self.counters.ignored_packets += 1  # comfort noise or an unnegotiated codec

    def _received_dtmf(self, pkt: packet.RtpPacket) -> None:
        try:
            digit = self._dtmf_receiver.feed(pkt.timestamp, pkt.payload)
        except dtmf.DtmfError as exc:
            self.counters.bad_packets += 1
            logger.debug("rtp %s: bad telephone-event: %s", self.local_port, exc)
            return
        if digit is not None:
            self.counters.dtmf_in += 1
            if self.on_dtmf is not None:
                self.on_dtmf(digit)

    def read_frame(self) -> tuple[np.ndarray, bool]:
        """The next 20 ms of caller audio (8 kHz int16) and whether it is real."""
        return self.jitter.pop()

    # ----------------------------------------------------------------- send

    def send_dtmf(self, digit: str, duration_ms: int = 160) -> bool:
        """Queue a key press; False when the far end did not offer telephone-event."""
        if self.dtmf_payload_type is None:
            return False
        self._dtmf_queue.extend(dtmf.press_payloads(digit, duration_ms=duration_ms))
        self.counters.dtmf_out += 1
        return True

    @property
    def has_pending_dtmf(self) -> bool:
        return bool(self._dtmf_queue)

    def send_audio(self, pcm: bytes) -> None:
        """Send one 20 ms frame of 8 kHz int16 PCM (or a queued digit's packet)."""
        now = time.monotonic()
        marker = False
        gap = now - self._last_send
        if self._last_send and gap > 0.1:
            # After silence the timestamp jumps by the wall-clock gap (RFC 3551 §4.1).
            self._timestamp += int(round(gap * CLOCK_RATE / FRAME_SAMPLES)) * FRAME_SAMPLES - FRAME_SAMPLES
            marker = True
        self._last_send = now
        if self._dtmf_queue:
            payload, first = self._dtmf_queue.popleft()
            if first or self._dtmf_timestamp is None:
                self._dtmf_timestamp = self._timestamp
            self._send(self.dtmf_payload_type or 101, self._dtmf_timestamp, payload, first)
            self._timestamp += FRAME_SAMPLES
            if not self._dtmf_queue:
                self._dtmf_timestamp = None
            return
        self._send(self.payload_type, self._timestamp, self._encode(pcm), marker)
        self._timestamp += len(pcm) // 2

    def send_silence(self) -> None:
        """Keep a queued digit moving while no audio is playing."""
        if self._dtmf_queue:
            self.send_audio(b"\x00" * (FRAME_SAMPLES * 2))

    def _send(self, payload_type: int, timestamp: int, payload: bytes, marker: bool) -> None:
        if self._transport is None or self.remote is None or not self.send_enabled:
            return
        pkt = packet.RtpPacket(payload_type, self._sequence, timestamp, self._ssrc, payload, marker)
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._transport.sendto(pkt.serialize(), self.remote)
        self.counters.packets_out += 1
        if self.send_log is not None:
            self.send_log.append(time.monotonic())
