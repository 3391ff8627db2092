"""RTP fixed header (RFC 3550 §5.1): parse what arrives, build what we send.

Only what a G.711 voice call needs: CSRCs and header extensions are skipped
on input (never produced), padding is stripped. RTCP packets that share the
port (RFC 5761 demux) are recognised so the caller can ignore them instead of
decoding them as audio.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
HEADER_SIZE = 12
_HEADER = struct.Struct("!BBHII")

# RFC 5761 §4: RTCP packet types 192-223 land in the second byte's low 7 bits
# as 64-95 when the marker bit is read as part of the payload type.
_RTCP_TYPES = range(192, 224)


class RtpError(ValueError):
    """A datagram is not a well-formed RTP packet."""


@dataclass(slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    def serialize(self) -> bytes:
        """Wire bytes; sequence/timestamp wrap to their field widths."""
        first = RTP_VERSION << 6
        second = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        header = _HEADER.pack(
            first,
            second,
            self.sequence & 0xFFFF,
            self.timestamp & 0xFFFFFFFF,
            self.ssrc & 0xFFFFFFFF,
        )
        return header + self.payload


def is_rtcp(data: bytes) -> bool:
    """True for an RTCP packet multiplexed on the RTP port."""
    return len(data) >= 2 and data[0] >> 6 == RTP_VERSION and data[1] in _RTCP_TYPES


def parse(data: bytes) -> RtpPacket:
    """Parse one datagram; raises :class:`RtpError` naming what is wrong."""
    if len(data) < HEADER_SIZE:
        raise RtpError(f"datagram of {len(data)} bytes is shorter than an RTP header")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {first >> 6}, expected 2")
    offset = HEADER_SIZE + 4 * (first & 0x0F)
    end = len(data)
    if first & 0x10:  # header extension: 16-bit profile, 16-bit length in words
        if end < offset + 4:
            raise RtpError("truncated RTP header extension")
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
    if offset > end:
        raise RtpError(f"RTP header longer than the datagram ({offset} header bytes with CSRCs and "
                       f"extension, {end} received)")
    if first & 0x20:  # padding: last byte says how many bytes to drop
        padding = data[-1]
        if padding == 0:
            raise RtpError("RTP padding length of zero")
        if padding > end - offset:
            raise RtpError(f"RTP padding of {padding} bytes exceeds the {end - offset}-byte payload")
        end -= padding
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(second & 0x80),
    )


def seq_delta(newer: int, older: int) -> int:
    """Signed distance between two 16-bit sequence numbers (wrap-aware)."""
    return ((newer - older + 0x8000) & 0xFFFF) - 0x8000


def ts_delta(newer: int, older: int) -> int:
    """Signed distance between two 32-bit RTP timestamps (wrap-aware)."""
    return ((newer - older + 0x80000000) & 0xFFFFFFFF) - 0x80000000
