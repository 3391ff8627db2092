"""Opus packet framing (RFC 6716 §3): read a packet's TOC, join frames into one packet.

Why this exists: aiortc hands its decoder exactly one encoded frame per RTP
packet received, so a jitter buffer in front of it can release at most one
packet each time one arrives. Joining the frames of several packets into one
Opus packet (code 3, up to 120 ms) lets the buffer catch up after a wait in a
single release, and a frame of length zero in such a packet makes libopus run
its packet loss concealment for that frame — the only way to reach the
decoder's PLC through aiortc. Joining is lossless: the decoder produces the
same samples as for the separate packets.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Opus timestamps are always at 48 kHz, whatever the coded bandwidth.
CLOCK_RATE = 48000
#: The longest packet Opus allows (RFC 6716 §3.2.5), in 48 kHz samples.
MAX_PACKET_SAMPLES = 5760
#: Frames in one code 3 packet (a 6-bit count).
MAX_FRAMES = 48
#: The longest frame Opus allows, in bytes (RFC 6716 §3.2.1, R2).
MAX_FRAME_BYTES = 1275

_SILK_SAMPLES = (480, 960, 1920, 2880)  # 10, 20, 40, 60 ms
_HYBRID_SAMPLES = (480, 960)  # 10, 20 ms
_CELT_SAMPLES = (120, 240, 480, 960)  # 2.5, 5, 10, 20 ms


@dataclass(frozen=True, slots=True)
class Toc:
    """What the first byte of an Opus packet says."""

    config: int  # mode, bandwidth and frame size together (0-31)
    stereo: bool
    code: int  # 0: one frame, 1: two equal, 2: two different, 3: arbitrary count

    @property
    def frame_samples(self) -> int:
        """The duration of each frame, in 48 kHz samples."""
        if self.config < 12:
            return _SILK_SAMPLES[self.config % 4]
        if self.config < 16:
            return _HYBRID_SAMPLES[self.config % 2]
        return _CELT_SAMPLES[self.config % 4]


def parse_toc(packet: bytes) -> Toc | None:
    """The TOC of ``packet``, or None when it is empty (not an Opus packet)."""
    if not packet:
        return None
    toc = packet[0]
    return Toc(config=toc >> 3, stereo=bool(toc & 0x04), code=toc & 0x03)


def single_frame(packet: bytes) -> bytes | None:
    """The frame of a one-frame (code 0) packet, or None when it holds another layout.

    Only such packets are joined: it is what browsers send (one 20 ms frame per
    packet), and it needs no parsing of frame lengths or padding.
    """
    toc = parse_toc(packet)
    if toc is None or toc.code != 0 or len(packet) - 1 > MAX_FRAME_BYTES:
        return None
    return packet[1:]


def _frame_length(n: int) -> bytes:
    """A frame length in the one- or two-byte form of RFC 6716 §3.2.1."""
    if n < 252:
        return bytes((n,))
    first = 252 + ((n - 252) & 3)
    return bytes((first, (n - first) >> 2))


def max_frames(toc: Toc) -> int:
    """How many frames of this TOC's size fit in one packet."""
    return min(MAX_FRAMES, MAX_PACKET_SAMPLES // toc.frame_samples)


def join(toc_byte: int, frames: list[bytes]) -> bytes:
    """One code 3 (VBR) packet holding ``frames`` in order; an empty frame is concealed by the decoder.

    ``toc_byte`` is the first byte of a code 0 packet whose configuration every
    frame shares. The caller keeps the count within ``max_frames``.
    """
    if not frames:
        raise ValueError("an Opus packet needs at least one frame")
    toc = parse_toc(bytes((toc_byte,)))
    assert toc is not None
    if len(frames) > max_frames(toc):
        raise ValueError(f"{len(frames)} frames of {toc.frame_samples} samples exceed 120 ms")
    if len(frames) == 1:  # code 0; a TOC alone is one lost frame
        return bytes((toc_byte & 0xFC,)) + frames[0]
    head = bytes((toc_byte | 0x03, 0x80 | len(frames)))  # code 3; VBR, no padding, the count
    lengths = b"".join(_frame_length(len(f)) for f in frames[:-1])  # the last length is implied
    return head + lengths + b"".join(frames)
