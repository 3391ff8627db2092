"""Audio utilities: G.711 is bit-exact, resampling is seamless, chunks lose nothing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from agent.audio import (
    Rechunker,
    Resampler,
    alaw_decode,
    alaw_encode,
    float_to_int16,
    int16_to_float,
    ulaw_decode,
    ulaw_encode,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop  # the reference implementation, gone in 3.13
    except ImportError:  # pragma: no cover - newer Pythons
        audioop = None

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)


@pytest.mark.skipif(audioop is None, reason="audioop reference not available on this Python")
def test_g711_matches_the_reference_codec_for_every_sample() -> None:
    pcm = ALL_SAMPLES.tobytes()
    assert ulaw_encode(pcm) == audioop.lin2ulaw(pcm, 2)
    assert alaw_encode(pcm) == audioop.lin2alaw(pcm, 2)
    codes = bytes(range(256))
    assert ulaw_decode(codes) == audioop.ulaw2lin(codes, 2)
    assert alaw_decode(codes) == audioop.alaw2lin(codes, 2)


def test_g711_round_trip_error_is_within_the_segment_step() -> None:
    tone = (np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000) * 12000).astype(np.int16)
    for enc, dec in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        back = np.frombuffer(dec(enc(tone)), dtype=np.int16).astype(np.int32)
        assert np.max(np.abs(back - tone)) <= 512
        assert abs(np.corrcoef(back, tone)[0, 1]) > 0.999


def test_streaming_resampler_matches_one_shot_and_has_no_edge_clicks() -> None:
    rate_in, rate_out = 24000, 8000
    t = np.arange(rate_in) / rate_in
    tone = (np.sin(2 * np.pi * 300 * t) * 10000).astype(np.int16)
    stream = Resampler(rate_in, rate_out)
    pieces = [stream.process(tone[i : i + 480]) for i in range(0, len(tone), 480)]
    pieces.append(stream.process(np.zeros(0, dtype=np.int16), last=True))
    out = np.concatenate(pieces).astype(np.float64)
    assert abs(len(out) - rate_out) <= 2
    expected = np.sin(2 * np.pi * 300 * np.arange(len(out)) / rate_out) * 10000
    # Skip the filter's start-up; afterwards the stream is the same clean tone.
    mid = slice(200, len(out) - 200)
    lag = int(np.argmax(np.correlate(out[mid][:400], expected[:800], mode="valid")))
    err = out[mid] - expected[lag : lag + len(out[mid])]
    assert np.max(np.abs(np.diff(out[mid]))) < 2700  # no discontinuity at 20 ms edges
    assert np.sqrt(np.mean(err**2)) < 150


@pytest.mark.parametrize("quality", ["HQ", "QQ"])
@pytest.mark.parametrize(("rate_in", "rate_out"), [(24000, 16000), (22050, 16000), (8000, 16000), (16000, 8000),
                                                   (44100, 48000), (48000, 16000)])
def test_a_flushed_stream_is_as_long_as_its_input_and_the_resampler_is_reusable(
    rate_in: int, rate_out: int, quality: str
) -> None:
    """The filter holds up to ~65 ms back; flushed, nothing of an utterance's end is lost."""
    stream = Resampler(rate_in, rate_out, quality=quality)
    for seconds in (0.73, 1.5):  # two utterances through one resampler
        n = int(rate_in * seconds)
        tone = (np.sin(2 * np.pi * 300 * np.arange(n) / rate_in) * 10000).astype(np.int16)
        step = rate_in // 50
        got = sum(len(stream.process(tone[i : i + step])) for i in range(0, n, step)) + len(stream.flush())
        assert abs(got / rate_out - n / rate_in) <= 0.001, f"{got} samples for {n / rate_in:.3f} s"


def test_pcm_problem_names_unusable_formats() -> None:
    from agent.audio import pcm_problem

    assert pcm_problem(640, 16000, 1) is None and pcm_problem(0, 8000, 2) is None
    assert pcm_problem(640, np.int64(16000), 1) is None  # numpy ints from a transport are fine
    assert "sample rate 0 Hz" in (pcm_problem(640, 0, 1) or "")
    assert "sample rate 16000.5 Hz" in (pcm_problem(640, 16000.5, 1) or "")
    assert "channel count 0" in (pcm_problem(640, 16000, 0) or "")
    assert "641 bytes is not whole 1-channel" in (pcm_problem(641, 16000, 1) or "")
    assert "642 bytes is not whole 2-channel" in (pcm_problem(642, 16000, 2) or "")


def test_resampler_is_a_no_op_at_equal_rates() -> None:
    data = np.arange(100, dtype=np.int16)
    assert np.array_equal(Resampler(16000, 16000).process(data), data)


def test_rechunker_cuts_fixed_frames_and_keeps_the_remainder() -> None:
    chunker = Rechunker(8000, frame_ms=20)
    data = bytes(range(256)) * 10  # 2560 bytes = 1280 samples = 160 ms
    frames = []
    for i in range(0, len(data), 333):
        frames.extend(chunker.push(data[i : i + 333]))
    assert all(len(f) == 320 for f in frames)
    assert b"".join(frames) == data[: 320 * len(frames)]
    assert chunker.pending_bytes == len(data) - 320 * len(frames)


def test_float_int16_conversion_clips_and_round_trips() -> None:
    floats = np.array([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5], dtype=np.float32)
    ints = float_to_int16(floats)
    assert ints.tolist() == [-32767, -32767, -16384, 0, 16384, 32767, 32767]
    assert np.allclose(int16_to_float(ints), np.clip(floats, -1, 1), atol=1e-4)
