"""RTP header, RFC 4733 events and the jitter buffer, against hand-built packets."""

from __future__ import annotations

import numpy as np
import pytest

from transports.rtp import dtmf, packet
from transports.rtp.jitter import JitterBuffer


def test_rtp_round_trip_and_wrap() -> None:
    pkt = packet.RtpPacket(payload_type=0, sequence=70000, timestamp=2**32 + 5, ssrc=0xDEADBEEF,
                           payload=b"\xff" * 160, marker=True)
    parsed = packet.parse(pkt.serialize())
    assert (parsed.sequence, parsed.timestamp, parsed.marker) == (70000 & 0xFFFF, 5, True)
    assert parsed.payload == b"\xff" * 160 and parsed.ssrc == 0xDEADBEEF


def test_rtp_skips_csrc_extension_and_padding() -> None:
    header = bytes([0x80 | 0x20 | 0x10 | 0x01, 0x00]) + b"\x00\x01" + b"\x00" * 8
    csrc = b"\x00\x00\x00\x07"
    extension = b"\xbe\xde\x00\x01" + b"\x11\x22\x33\x44"
    payload = b"\x55" * 10
    padding = b"\x00\x00\x03"
    parsed = packet.parse(header + csrc + extension + payload + padding)
    assert parsed.payload == payload


@pytest.mark.parametrize(
    "data, why",
    [
        (b"\x80\x00", "shorter"),
        (b"\x40" + b"\x00" * 11, "version"),
        (bytes([0x80 | 0x0F]) + b"\x00" * 11, "longer than the datagram"),
        (bytes([0xA0]) + b"\x00" * 11 + b"\x00", "padding length of zero"),
    ],
)
def test_rtp_rejects_malformed(data: bytes, why: str) -> None:
    with pytest.raises(packet.RtpError, match=why):
        packet.parse(data)


def test_rtcp_is_recognised() -> None:
    assert packet.is_rtcp(bytes([0x81, 200]) + b"\x00" * 6)
    assert not packet.is_rtcp(bytes([0x80, 0]) + b"\x00" * 10)


def test_sequence_and_timestamp_deltas_wrap() -> None:
    assert packet.seq_delta(2, 65534) == 4
    assert packet.seq_delta(65534, 2) == -4
    assert packet.ts_delta(100, 2**32 - 60) == 160


def test_dtmf_press_payloads_follow_rfc4733() -> None:
    payloads = dtmf.press_payloads("#", duration_ms=100)
    events = [dtmf.parse_event(p) for p, _ in payloads]
    assert [m for _, m in payloads] == [True] + [False] * (len(payloads) - 1)
    assert all(e.digit == "#" for e in events)
    assert [e.duration for e in events if not e.end] == [160, 320, 480, 640]
    assert [e.end for e in events][-3:] == [True, True, True]
    assert events[-1].duration == 800


def test_dtmf_receiver_reports_each_press_once_even_if_start_is_lost() -> None:
    receiver = dtmf.DtmfReceiver()
    first = dtmf.press_payloads("5")
    second = dtmf.press_payloads("5")
    digits = [receiver.feed(1000, p) for p, _ in first[2:]]  # first two packets lost
    digits += [receiver.feed(5000, p) for p, _ in second]
    assert [d for d in digits if d] == ["5", "5"]


def test_dtmf_rejects_bad_input() -> None:
    with pytest.raises(dtmf.DtmfError):
        dtmf.parse_event(b"\x01")
    with pytest.raises(dtmf.DtmfError):
        dtmf.parse_event(bytes([40, 0, 0, 0]))
    with pytest.raises(dtmf.DtmfError):
        dtmf.press_payloads("x")


def _tone(start: int, count: int) -> np.ndarray:
    n = np.arange(start, start + count)
    return (8000 * np.sin(2 * np.pi * 440 * n / 8000)).astype(np.int16)


def test_jitter_buffer_reorders_and_plays_every_sample() -> None:
    jb = JitterBuffer()
    order = [0, 2, 1, 3, 5, 4, 6, 7, 8, 9]
    played = []
    for tick, i in enumerate(order + [None, None]):  # one packet per 20 ms tick
        if i is not None:
            jb.push(1000 + i * 160, _tone(i * 160, 160), arrival=tick * 0.02)
        frame, real = jb.pop()
        if real:
            played.append(frame)
    assert np.array_equal(np.concatenate(played), _tone(0, 1600))
    assert jb.stats.late == 0 and jb.stats.skipped_frames == 0


def _simulate(jb: JitterBuffer, arrivals: list[tuple[float, int, np.ndarray]], ticks: int):
    """Pop one frame per 20 ms tick while packets arrive at their own times."""
    results = []
    pending = sorted(arrivals, key=lambda a: a[0])
    for tick in range(ticks):
        now = tick * 0.02
        while pending and pending[0][0] <= now + 1e-9:
            at, ts, samples = pending.pop(0)
            jb.push(ts, samples, arrival=at)
        results.append(jb.pop())
    return results


def test_jitter_buffer_accepts_30ms_packets_and_plays_20ms_frames() -> None:
    jb = JitterBuffer()
    arrivals = [(i * 0.03, i * 240, _tone(i * 240, 240)) for i in range(8)]
    results = _simulate(jb, arrivals, 16)
    played = np.concatenate([frame for frame, real in results if real])
    assert np.array_equal(played, _tone(0, 1920))


def test_jitter_buffer_conceals_a_lost_packet_then_resumes() -> None:
    jb = JitterBuffer()
    arrivals = [(i * 0.02, i * 160, _tone(i * 160, 160)) for i in range(10) if i != 4]
    results = _simulate(jb, arrivals, 11)
    start = next(i for i, (_, real) in enumerate(results) if real)
    flags = [real for _, real in results[start : start + 9]]
    assert flags == [True] * 4 + [False] + [True] * 4
    concealed = results[start + 4][0]
    assert 0 < np.abs(concealed).max() < 8000  # faded repetition, not silence or a jump
    assert np.array_equal(results[start + 5][0], _tone(800, 160))
    assert jb.stats.concealed_frames == 1


def test_jitter_buffer_grows_after_underrun_and_stays_stable() -> None:
    """A 100 ms stall is absorbed: the cursor holds, then plays every sample."""
    jb = JitterBuffer()
    played: list[np.ndarray] = []
    t = 0.0
    for tick in range(60):
        t = tick * 0.02
        if not 20 <= tick < 25:  # packets 20..24 arrive late, all at tick 25
            if tick == 25:
                for late in range(20, 25):
                    jb.push(late * 160, _tone(late * 160, 160), arrival=t)
            jb.push(tick * 160, _tone(tick * 160, 160), arrival=t)
        frame, real = jb.pop()
        if real:
            played.append(frame)
    joined = np.concatenate(played)
    assert np.array_equal(joined, _tone(0, len(joined)))  # nothing dropped or reordered
    assert jb.stats.late == 0 and jb.stats.jitter_ms > 1.0


def test_jitter_buffer_shrinks_when_far_behind() -> None:
    jb = JitterBuffer()
    for i in range(30):  # a 600 ms burst arrives at once
        jb.push(i * 160, np.zeros(160, dtype=np.int16), arrival=0.0)
    pops = 0
    while jb.buffered > jb.target_delay + 2 * 160:
        jb.pop()
        pops += 1
    assert pops <= 14  # caught up at about twice real time
    assert jb.stats.skipped_frames >= 8


def test_jitter_buffer_resyncs_after_a_timestamp_jump() -> None:
    jb = JitterBuffer()
    for i in range(5):
        jb.push(i * 160, _tone(0, 160), arrival=i * 0.02)
    for _ in range(8):
        jb.pop()
    base = 8000 * 30  # 30 s later (hold / silence suppression)
    for i in range(5):
        jb.push(base + i * 160, _tone(i * 160, 160), arrival=1.0 + i * 0.02)
    frames = [jb.pop() for _ in range(5)]
    assert sum(real for _, real in frames) >= 3 and jb.stats.resyncs == 1
