"""The caller's audio jitter buffer: synthetic packet sequences through real Opus, and the install on calls.

Packets are real Opus (aiortc's encoder, a 440 Hz tone) decoded by aiortc's
own decoder, so "concealed" means the decoder really produced audio for the
lost frame, and "joined" means the decoder really took the packet.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import random
from collections.abc import Iterable
from functools import cache

import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterBuffer as AiortcJitterBuffer
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket
from av import AudioFrame
from hypothesis import given, settings
from hypothesis import strategies as st

from transports.webrtc import jitter as jitter_module
from transports.webrtc import opus_packets
from transports.webrtc.jitter import AudioJitterBuffer, install_jitter_buffers, jitter_stats

OPUS_PT = 111
SAMPLES = 960  # 20 ms at 48 kHz


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@cache
def opus_payloads(n: int = 120) -> tuple[bytes, ...]:
    """n packets of a 440 Hz tone, 20 ms each, from aiortc's Opus encoder."""
    encoder = OpusEncoder()
    t = np.arange(n * SAMPLES) / 48000
    tone = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    payloads: list[bytes] = []
    for i in range(n):
        frame = AudioFrame(format="s16", layout="mono", samples=SAMPLES)
        frame.planes[0].update(tone[i * SAMPLES:(i + 1) * SAMPLES].tobytes())
        frame.pts, frame.sample_rate, frame.time_base = i * SAMPLES, 48000, fractions.Fraction(1, 48000)
        payloads += encoder.encode(frame)[0]
    assert len(payloads) == n
    return tuple(payloads)


def rtp(index: int, payload: bytes, *, seq0: int = 1000, ts0: int = 5000, pt: int = OPUS_PT,
        ssrc: int = 7, ts_step: int = SAMPLES) -> RtpPacket:
    """The index-th packet of a stream, as aiortc's receiver hands it to the buffer (``_data`` set)."""
    packet = RtpPacket(payload_type=pt, sequence_number=(seq0 + index) & 0xFFFF,
                       timestamp=(ts0 + index * ts_step) & 0xFFFFFFFF, ssrc=ssrc, payload=payload)
    packet._data = payload  # type: ignore[attr-defined]
    return packet


def opus_buffer(clock: Clock, **options: float) -> AudioJitterBuffer:
    return AudioJitterBuffer(codec_of=lambda pt: "opus" if pt == OPUS_PT else None, clock=clock, **options)


def feed(buffer: AudioJitterBuffer, clock: Clock, arrivals: Iterable[tuple[float, RtpPacket]]) -> list[JitterFrame]:
    """Add packets at their arrival times (seconds from the start); the frames released, in order."""
    start = clock.t
    out = []
    for at, packet in arrivals:
        clock.t = start + at
        _, frame = buffer.add(packet)
        if frame is not None:
            out.append(frame)
    return out


def paced(indices: Iterable[int], *, late: dict[int, float] | None = None, **rtp_options: int) -> list[tuple[float, RtpPacket]]:
    """Packets sent every 20 ms in index order, some arriving ``late[i]`` seconds after their time."""
    payloads = opus_payloads()
    late = late or {}
    sent = [(i * 0.02 + late.get(i, 0.0), rtp(i, payloads[i % len(payloads)], **rtp_options)) for i in indices]
    return sorted(sent, key=lambda item: item[0])


def decode(frames: list[JitterFrame]) -> list[tuple[int, np.ndarray]]:
    """(pts, mono samples) per released frame, through aiortc's Opus decoder."""
    decoder = OpusDecoder()
    out = []
    for frame in frames:
        for audio in decoder.decode(frame):
            out.append((audio.pts, audio.to_ndarray().reshape(-1, 2)[:, 0].astype(np.float64)))
    return out


def assert_contiguous(decoded: list[tuple[int, np.ndarray]]) -> None:
    for (pts, pcm), (next_pts, _) in zip(decoded, decoded[1:]):
        assert next_pts == pts + len(pcm), "a gap or an overlap in the decoded audio"


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm**2)))


# --------------------------------------------------------------- in order


def test_packets_in_order_leave_at_once_unchanged() -> None:
    clock = Clock()
    buffer = opus_buffer(clock)
    for at, packet in paced(range(50)):
        clock.t = 100 + at
        _, frame = buffer.add(packet)
        # No prefetch: each packet goes to the decoder as it arrives, byte for byte.
        assert frame is not None and frame.data == packet.payload and frame.timestamp == packet.timestamp
    assert len(buffer) == 0 and buffer.stats.released == 50 and buffer.stats.concealed == 0


# ------------------------------------------------------------------- loss


def test_a_lost_packet_costs_one_frame_and_the_decoder_conceals_it() -> None:
    clock = Clock()
    buffer = opus_buffer(clock)
    frames = feed(buffer, clock, paced(i for i in range(50) if i != 20))
    decoded = decode(frames)
    assert_contiguous(decoded)  # no hole in media time: nothing for WebRTCInput to fill with silence
    total = sum(len(pcm) for _, pcm in decoded)
    assert total == 50 * SAMPLES
    assert buffer.stats.released == 49 and buffer.stats.concealed == 1 and buffer.stats.skipped == 0
    # The concealed 20 ms is tone-like audio, not silence (Opus PLC).
    pcm = np.concatenate([p for _, p in decoded])
    assert rms(pcm[20 * SAMPLES:21 * SAMPLES]) > 0.5 * rms(pcm[10 * SAMPLES:11 * SAMPLES])


def test_the_wait_for_a_missing_packet_is_bounded() -> None:
    clock = Clock()
    buffer = opus_buffer(clock, initial_wait_s=0.05)
    feed(buffer, clock, paced(range(10)))
    payloads = opus_payloads()
    released_at = []
    for i in range(11, 20):  # packet 10 never comes
        clock.t = 100 + i * 0.02
        _, frame = buffer.add(rtp(i, payloads[i]))
        if frame is not None:
            released_at.append((i, frame))
    first_i, first = released_at[0]
    # The hole was noticed when 11 came (0.22 s); at 14 (60 ms later, past the 50 ms wait) all go in one packet.
    assert first_i == 14
    assert [len(f) for f in [decode([first])[0][1]]] == [5 * SAMPLES]  # PLC for 10, then 11, 12, 13, 14
    assert buffer.stats.concealed == 1 and buffer.stats.joined == 1


def test_a_burst_of_losses_is_concealed_and_a_long_outage_is_left_as_a_gap() -> None:
    clock = Clock()
    buffer = opus_buffer(clock)
    frames = feed(buffer, clock, paced(i for i in range(80) if not 20 <= i < 23 and not 40 <= i < 60))
    decoded = decode(frames)
    total = sum(len(pcm) for _, pcm in decoded)
    assert buffer.stats.concealed == 3  # 60 ms is concealed
    assert buffer.stats.skipped == 20  # 400 ms is not: a timestamp gap, which WebRTCInput fills with silence
    assert total == (80 - 23 + 3) * SAMPLES  # 57 received, 3 concealed
    gaps = [nxt - (pts + len(pcm)) for (pts, pcm), (nxt, _) in zip(decoded, decoded[1:])]
    assert sorted(g for g in gaps if g) == [20 * SAMPLES]


# ------------------------------------------------------------- reordering


def test_reordered_packets_come_out_in_order_and_bit_exact() -> None:
    clock = Clock()
    buffer = opus_buffer(clock)
    late = {10: 0.035, 25: 0.05, 26: 0.021, 40: 0.03}
    frames = feed(buffer, clock, paced(range(60), late=late))
    reference = decode([JitterFrame(p.payload, p.timestamp) for _, p in paced(range(60))])
    decoded = decode(frames)
    assert np.array_equal(np.concatenate([p for _, p in decoded]), np.concatenate([p for _, p in reference]))
    assert buffer.stats.concealed == 0 and buffer.stats.late == 0 and len(buffer) == 0
    # Each backlog left in the same release as the packet it waited for.
    assert buffer.stats.joined == 3 and len(frames) == 60 - 1 - 2 - 1


def test_a_packet_later_than_the_wait_is_dropped_and_the_wait_grows() -> None:
    clock = Clock()
    buffer = opus_buffer(clock, initial_wait_s=0.04, min_wait_s=0.02, max_wait_s=0.16)
    frames = feed(buffer, clock, paced(range(40), late={10: 0.15}))
    assert buffer.stats.late == 1 and buffer.stats.concealed == 1
    assert buffer.stats.released == 39  # the late copy never reaches the decoder, out of order
    assert_contiguous(decode(frames))
    assert buffer.stats.wait_ms > 40  # it now waits longer for the next one
    assert buffer.stats.wait_ms <= 160


def test_the_wait_adapts_to_the_observed_lateness_within_its_bounds() -> None:
    clock = Clock()
    buffer = opus_buffer(clock, initial_wait_s=0.1, min_wait_s=0.02, max_wait_s=0.16)
    feed(buffer, clock, paced(range(200), late={i: 0.025 for i in range(5, 200, 10)}))
    assert 20 <= buffer.stats.wait_ms < 40  # ~5 ms of lateness, so it stops waiting 100 ms
    feed(buffer, clock, paced(range(200, 400), late={i: 0.5 for i in range(205, 400, 10)}))
    assert buffer.stats.wait_ms == 160  # never more than max_wait_s


# ------------------------------------------------------ sequence handling


def test_sequence_numbers_wrap_around() -> None:
    clock = Clock()
    buffer = opus_buffer(clock)
    # 65520 … 65535, 0 … 23, with 65535 lost and 0/1 swapped across the wrap
    arrivals = paced((i for i in range(40) if i != 15), late={16: 0.03}, seq0=65520, ts0=0xFFFFFFFF - 10 * SAMPLES)
    frames = feed(buffer, clock, arrivals)
    decoded = decode(frames)
    assert sum(len(p) for _, p in decoded) == 40 * SAMPLES
    assert buffer.stats.concealed == 1 and buffer.stats.released == 39 and buffer.stats.resyncs == 0


def test_duplicates_are_released_once() -> None:
    clock = Clock()
    buffer = opus_buffer(clock)
    arrivals = paced(range(30))
    doubled = sorted(arrivals + [(at + 0.005, p) for at, p in arrivals] + [(at + 0.1, p) for at, p in arrivals[:5]],
                     key=lambda item: item[0])
    frames = feed(buffer, clock, doubled)
    assert sum(len(p) for _, p in decode(frames)) == 30 * SAMPLES
    assert buffer.stats.released == 30 and buffer.stats.duplicates == 35 and buffer.stats.resyncs == 0


def test_a_new_ssrc_or_restarted_sequence_resynchronises() -> None:
    clock = Clock()
    buffer = opus_buffer(clock)
    feed(buffer, clock, paced(range(20)))
    # The sender restarts far behind: its first packet is dropped, then the new stream is followed.
    frames = feed(buffer, clock, [(0.5 + i * 0.02, p) for i, (_, p) in enumerate(paced(range(30), seq0=30000 - 40000))])
    assert buffer.stats.resyncs == 1 and len(frames) == 30 - 1
    frames = feed(buffer, clock, [(1.5 + i * 0.02, p) for i, (_, p) in enumerate(paced(range(20), ssrc=99))])
    assert buffer.stats.resyncs == 2 and len(frames) == 20
    # A jump far ahead is a restart too: released after one wait, not counted as 5000 lost packets.
    frames = feed(buffer, clock, [(2.5 + i * 0.02, p) for i, (_, p) in enumerate(paced(range(20), ssrc=99, seq0=9000))])
    assert buffer.stats.resyncs == 3 and buffer.stats.skipped == 0
    assert sum(len(pcm) for _, pcm in decode(frames)) == 20 * SAMPLES


def test_memory_is_bounded_when_a_burst_arrives_behind_a_hole() -> None:
    clock = Clock()
    buffer = opus_buffer(clock)
    payloads = opus_payloads()
    sizes = []
    released = 0
    for i in (j for j in range(1, 200) if j != 3):  # an event-loop stall: all at once, 3 missing
        _, frame = buffer.add(rtp(i, payloads[i % len(payloads)]))
        released += frame is not None
        sizes.append(len(buffer))
    assert max(sizes) < buffer.capacity
    assert buffer.stats.released + len(buffer) == 198 and buffer.stats.concealed + buffer.stats.skipped == 1


def test_empty_payloads_never_reach_the_decoder(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    buffer = opus_buffer(clock)
    arrivals = paced(range(30))
    for at, packet in arrivals[10:13]:
        packet._data = b""  # type: ignore[attr-defined]
    with caplog.at_level(logging.INFO, logger="transports.webrtc.jitter"):
        frames = feed(buffer, clock, arrivals)
    assert all(f.data for f in frames)
    decoded = decode(frames)
    assert_contiguous(decoded)
    assert buffer.stats.dropped == 3 and buffer.stats.concealed == 3
    assert sum("empty RTP payload" in r.getMessage() for r in caplog.records) == 1


def test_multi_frame_packets_pass_unjoined() -> None:
    clock = Clock()
    buffer = opus_buffer(clock)
    payloads = opus_payloads()
    two = [opus_packets.join(payloads[2 * i][0], [payloads[2 * i][1:], payloads[2 * i + 1][1:]]) for i in range(10)]
    arrivals = sorted([(i * 0.04 + (0.05 if i == 4 else 0), rtp(i, two[i], ts_step=2 * SAMPLES)) for i in range(10)],
                      key=lambda item: item[0])
    frames = feed(buffer, clock, arrivals)
    # In order and untouched; only joinable one-frame packets are joined, so one stays held for now.
    assert [f.data for f in frames] == two[:9] and len(buffer) == 1
    assert sum(len(p) for _, p in decode(frames)) == 18 * SAMPLES


def test_g711_packets_are_joined_by_concatenation_and_lost_ones_left_as_gaps() -> None:
    clock = Clock()
    buffer = AudioJitterBuffer(codec_of=lambda pt: "pcmu", clock=clock)
    arrivals = [(i * 0.02 + (0.03 if i == 5 else 0), rtp(i, bytes([i]) * 160, pt=0, ts_step=160))
                for i in range(20) if i != 12]
    frames = feed(buffer, clock, sorted(arrivals, key=lambda a: a[0]))
    data = b"".join(f.data for f in frames)
    assert data == b"".join(bytes([i]) * 160 for i in range(20) if i != 12)
    after_gap = next(f for f in frames if f.data[:1] == bytes([13]))
    assert after_gap.timestamp == 5000 + 13 * 160  # the lost 20 ms stays a gap in timestamps
    assert buffer.stats.skipped == 1 and buffer.stats.joined == 2


# ------------------------------------------------------------ properties


@settings(max_examples=150, deadline=None)
@given(
    seq0=st.integers(0, 0xFFFF),
    events=st.lists(st.tuples(st.sampled_from(["ok", "ok", "ok", "lost", "dup", "late"]),
                              st.floats(0.0, 0.2)), min_size=1, max_size=120),
)
def test_any_arrival_pattern_is_released_in_order_once_and_memory_stays_bounded(
    seq0: int, events: list[tuple[str, float]]
) -> None:
    clock = Clock()
    buffer = AudioJitterBuffer(codec_of=lambda pt: "pcmu", clock=clock, max_held=16)
    arrivals = []
    for i, (kind, delay) in enumerate(events):
        packet = rtp(i, i.to_bytes(2, "big") * 80, pt=0, seq0=seq0, ts_step=160)
        if kind == "lost":
            continue
        at = i * 0.02 + (delay if kind == "late" else 0.0)
        arrivals.append((at, packet))
        if kind == "dup":
            arrivals.append((at + delay, packet))
    arrivals.sort(key=lambda item: item[0])
    released: list[int] = []
    for at, packet in arrivals:
        clock.t = 100 + at
        _, frame = buffer.add(packet)
        assert len(buffer) < buffer.capacity
        if frame is not None:
            data = frame.data
            released += [int.from_bytes(data[k:k + 2], "big") for k in range(0, len(data), 160)]
    assert released == sorted(set(released)), "out of order or twice"
    sent = {i for i, (kind, _) in enumerate(events) if kind != "lost"}
    assert set(released) <= sent
    held = len(buffer)
    assert len(released) + held == len(sent) - buffer.stats.late
    assert buffer.stats.resyncs == 0


@settings(max_examples=40, deadline=None)
@given(lost=st.sets(st.integers(1, 58), max_size=12), late=st.dictionaries(st.integers(1, 58), st.floats(0.0, 0.05),
                                                                       max_size=8))
def test_opus_media_time_is_kept_whatever_is_lost(lost: set[int], late: dict[int, float]) -> None:
    clock = Clock()
    buffer = opus_buffer(clock)
    start = clock.t
    frames = feed(buffer, clock, paced((i for i in range(60) if i not in lost), late=late))
    clock.t = start
    # Then packets 0.1 s apart: whatever still waits behind a hole is given up and released.
    frames += feed(buffer, clock, [(1.5 + 0.1 * k, p) for k, (_, p) in enumerate(paced(range(60, 80)))])
    decoded = decode(frames)
    stats = buffer.stats
    assert len(buffer) == 0
    assert sum(len(p) for _, p in decoded) == (stats.released + stats.concealed) * SAMPLES
    assert stats.released + stats.late == 80 - len(lost)  # every packet sent was decoded or came too late
    assert stats.concealed + stats.skipped == len(lost) + stats.late  # every slot given up is accounted for
    if stats.skipped == 0:
        assert_contiguous(decoded)


# ------------------------------------------------------------- installing


def test_installed_on_audio_receivers_only_and_once() -> None:
    async def scenario() -> None:
        pc = RTCPeerConnection()
        pc.addTransceiver("audio")
        pc.addTransceiver("video")
        assert install_jitter_buffers(pc) == 1
        audio, video = (t.receiver for t in pc.getTransceivers())
        assert isinstance(audio._RTCRtpReceiver__jitter_buffer, AudioJitterBuffer)
        assert isinstance(video._RTCRtpReceiver__jitter_buffer, AiortcJitterBuffer)
        first = audio._RTCRtpReceiver__jitter_buffer
        assert install_jitter_buffers(pc) == 1 and audio._RTCRtpReceiver__jitter_buffer is first
        assert jitter_stats(pc) == [first.stats]
        await pc.close()

    asyncio.run(scenario())


def test_another_aiortc_keeps_its_own_buffer_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(jitter_module, "_warned", False)
    monkeypatch.setattr(jitter_module.aiortc, "__version__", "1.17.0")

    async def scenario() -> None:
        for _ in range(3):  # three calls, one warning
            pc = RTCPeerConnection()
            pc.addTransceiver("audio")
            assert install_jitter_buffers(pc) == 0
            assert isinstance(pc.getTransceivers()[0].receiver._RTCRtpReceiver__jitter_buffer, AiortcJitterBuffer)
            await pc.close()

    with caplog.at_level(logging.WARNING, logger="transports.webrtc.jitter"):
        asyncio.run(scenario())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "aiortc 1.17.0" in warnings[0]


def test_a_receiver_without_the_private_attribute_is_left_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(jitter_module, "_warned", False)

    class Receiver:
        pass

    class Transceiver:
        kind = "audio"
        receiver = Receiver()

    class BrokenPc:
        def getTransceivers(self) -> list[Transceiver]:
            return [Transceiver()]

    class RaisingPc:
        def getTransceivers(self) -> list[Transceiver]:
            raise RuntimeError("internals changed")

    with caplog.at_level(logging.WARNING, logger="transports.webrtc.jitter"):
        assert install_jitter_buffers(BrokenPc()) == 0
        assert install_jitter_buffers(RaisingPc()) == 0  # never raises into the call
    assert not hasattr(Transceiver.receiver, "_RTCRtpReceiver__jitter_buffer")
    assert ["no jitter buffer where aiortc" in r.getMessage() for r in caplog.records] == [True]


# ----------------------------------------------------------- through a call


@pytest.mark.asyncio
async def test_a_call_losing_every_tenth_caller_packet_still_hears_continuous_audio() -> None:
    """A Python caller over real WebRTC; the server's receiver drops and reorders packets before the buffer."""
    from agent.frames import InputAudioFrame
    from tests.webrtc.test_peer import Recorder, connected, running, until
    from tests.webrtc.webrtc_client import PyCaller

    recorder = Recorder()
    async with running(lambda info: [recorder]) as (server, _manager):
        caller = PyCaller()
        await connected(caller, server)
        call = next(iter(server.calls.values()))
        receiver = next(t.receiver for t in call.pc.getTransceivers() if t.kind == "audio")
        handle = receiver._handle_rtp_packet
        count = 0
        rng = random.Random(3)
        held: list[tuple[RtpPacket, int]] = []

        async def impaired(packet: RtpPacket, arrival_time_ms: int) -> None:
            nonlocal count
            count += 1
            if count % 10 == 0:
                return  # lost
            if rng.random() < 0.1:  # overtaken by the next one
                held.append((packet, arrival_time_ms))
                return
            await handle(packet, arrival_time_ms)
            while held:
                await handle(*held.pop())

        receiver._handle_rtp_packet = impaired
        await until(lambda: len(recorder.of(InputAudioFrame)) >= 150, timeout=10)
        assert call.input.gap_samples_filled == 0  # no silence inserted: every lost frame was concealed
        pcm = np.concatenate([f.samples for f in recorder.of(InputAudioFrame)[20:150]]).astype(np.float64) / 32768
        windows = pcm[: len(pcm) // 320 * 320].reshape(-1, 320)
        assert np.sqrt(np.mean(windows**2, axis=1)).min() > 0.05  # no 20 ms of the tone went quiet
        stats = jitter_stats(call.pc)[0]
        assert stats.concealed >= 10 and stats.skipped == 0
        await caller.close()
