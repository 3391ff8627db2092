"""RFC 4733 telephone-event payloads: keypad digits carried in RTP, not audio.

Every packet of one key press shares the RTP timestamp of the press's start;
the duration field grows as the key is held and the last packets set the
End bit (sent three times, since UDP may lose one). So a press is identified
by its timestamp, and a receiver reports it once however many of its packets
arrive, including when the first ones were lost.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

EVENT_DIGITS = "0123456789*#ABCD"
_EVENT = struct.Struct("!BBH")
END_REPEATS = 3


class DtmfError(ValueError):
    """A telephone-event payload or a digit is not valid."""


@dataclass(slots=True, frozen=True)
class DtmfEvent:
    digit: str
    end: bool
    volume: int
    duration: int  # in RTP timestamp units


def digit_to_event(digit: str) -> int:
    index = EVENT_DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise DtmfError(f"{digit!r} is not a DTMF digit (0-9, *, #, A-D)")
    return index


def parse_event(payload: bytes) -> DtmfEvent:
    """Decode one telephone-event payload (the first 4 bytes; RFC 4733 §2.3)."""
    if len(payload) < 4:
        raise DtmfError(f"telephone-event payload of {len(payload)} bytes, need 4")
    event, flags, duration = _EVENT.unpack_from(payload)
    if event >= len(EVENT_DIGITS):
        raise DtmfError(f"telephone-event {event} is not a keypad event")
    return DtmfEvent(
        digit=EVENT_DIGITS[event],
        end=bool(flags & 0x80),
        volume=flags & 0x3F,
        duration=duration,
    )


def build_event(digit: str, *, duration: int, end: bool, volume: int = 10) -> bytes:
    flags = (0x80 if end else 0) | (volume & 0x3F)
    return _EVENT.pack(digit_to_event(digit), flags, min(duration, 0xFFFF))


def press_payloads(
    digit: str,
    *,
    duration_ms: int = 160,
    ptime_ms: int = 20,
    clock_rate: int = 8000,
    volume: int = 10,
) -> list[tuple[bytes, bool]]:
    """The (payload, marker) sequence for one key press, one per ptime.

    The caller sends them at the audio packet rate with the press's start
    timestamp on every packet; only the first carries the marker bit.
    """
    step = clock_rate * ptime_ms // 1000
    total = max(step, clock_rate * duration_ms // 1000)
    packets: list[tuple[bytes, bool]] = []
    elapsed = step
    while elapsed < total:
        packets.append((build_event(digit, duration=elapsed, end=False, volume=volume), not packets))
        elapsed += step
    final = build_event(digit, duration=total, end=True, volume=volume)
    packets.append((final, not packets))
    packets.extend((final, False) for _ in range(END_REPEATS - 1))
    return packets


class DtmfReceiver:
    """Turns a stream of telephone-event packets into one digit per press."""

    def __init__(self) -> None:
        self._last_press: tuple[int, str] | None = None

    def feed(self, timestamp: int, payload: bytes) -> str | None:
        """Return the digit when this packet starts a new press, else None.

        Reporting at the first packet (not the End packet) gives the bot the
        key ~duration earlier; duplicates and the End repeats are absorbed.
        """
        event = parse_event(payload)
        press = (timestamp, event.digit)
        if press == self._last_press:
            return None
        self._last_press = press
        return event.digit
