"""The VAD hears a caller start and stop on time, in silence and in noise, and never in hum."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from agent.audio import ulaw_decode, ulaw_encode
from agent.frames import InputAudioFrame, UserStartedSpeakingFrame, UserStoppedSpeakingFrame
from agent.vad import SpeechDetector, VADNode, VADParams, find_silero_model
from agent.vad import silero
from tests.speech.helpers import add_noise, call, hum, silence, speech, true_bounds

UTTERANCES = [
    "Hello, I would like to book an appointment for next Tuesday, please.",
    "Can you tell me what time the clinic opens on Saturday?",
    "Yes.",
    "My date of birth is January third, nineteen eighty five.",
]


def detect(audio: np.ndarray, rate: int = 16000, params: VADParams | None = None, frame: int = 320):
    """Feed audio in 20 ms frames like a transport does; return (events in seconds, detector)."""
    detector = SpeechDetector(rate, params)
    events = []
    step = frame * rate // 16000
    for i in range(0, len(audio), step):
        events += [(e.kind, e.sample / rate) for e in detector.process(audio[i : i + step])]
    return events, detector


def trimmed(voice: np.ndarray, rate: int = 16000) -> np.ndarray:
    """The voice without piper's own lead-in and trailing silence (exact pauses)."""
    onset, offset = true_bounds(voice, rate)
    return voice[int(onset * rate) : int(offset * rate)]


def caller_turn(text: str, rate: int = 16000, lead: float = 1.5, tail: float = 1.5):
    voice = speech(text, rate)
    audio = np.concatenate([silence(lead, rate), voice, silence(tail, rate)])
    return audio, true_bounds(voice, rate, offset_s=lead)


def test_model_comes_from_the_wheel_without_importing_torch_code(silero_session) -> None:
    path = find_silero_model()
    assert path.name == "silero_vad.onnx" and path.is_file()
    assert "silero_vad" not in sys.modules  # its __init__ imports torch
    assert "torch" not in sys.modules


@pytest.mark.parametrize("noise_dbfs", [None, -35.0], ids=["clean", "noise-35dBFS"])
@pytest.mark.parametrize("gate", [True, False], ids=["gated", "silero-only"])
def test_onset_and_offset_are_dated_close_to_the_truth(silero_session, noise_dbfs, gate) -> None:
    for text in UTTERANCES:
        audio, (onset, offset) = caller_turn(text)
        if noise_dbfs is not None:
            audio = add_noise(audio, noise_dbfs)
        events, _ = detect(audio, params=VADParams(use_gate=gate))
        kinds = [kind for kind, _ in events]
        assert kinds == ["start", "stop"], (text, events)
        (_, start), (_, stop) = events
        # Onsets land within a window of the truth; Silero's tail makes offsets
        # late (measured over 64 takes: -7..+220 ms in noise, median +60 ms).
        assert -0.05 <= start - onset <= 0.06, (text, start, onset)
        assert -0.06 <= stop - offset <= 0.25, (text, stop, offset)


def test_gate_makes_silence_skip_silero_but_not_speech(silero_session) -> None:
    audio, _ = caller_turn(UTTERANCES[0], lead=3.0, tail=3.0)
    events, detector = detect(audio)
    assert [kind for kind, _ in events] == ["start", "stop"]
    silent_windows = 5.5 * 16000 / 512  # the 6 s of silence minus the hangover
    assert detector.windows_gated >= 0.9 * silent_windows


@pytest.mark.parametrize(
    "background",
    [lambda: hum(6.0, 16000, -25.0), lambda: add_noise(silence(6.0, 16000), -35.0)],
    ids=["hum-25dBFS", "white-noise-35dBFS"],
)
def test_no_speech_is_found_in_hum_or_noise(silero_session, background) -> None:
    events, _ = detect(background())
    assert events == []


def test_a_natural_pause_does_not_split_the_turn_but_a_long_one_does(silero_session) -> None:
    first, second = (trimmed(speech(t)) for t in ("I need to cancel my visit.", "Something came up at work."))
    short = np.concatenate([silence(1.0, 16000), first, silence(0.4, 16000), second, silence(1.5, 16000)])
    long = np.concatenate([silence(1.0, 16000), first, silence(1.2, 16000), second, silence(1.5, 16000)])
    assert [k for k, _ in detect(short)[0]] == ["start", "stop"]
    assert [k for k, _ in detect(long)[0]] == ["start", "stop", "start", "stop"]


def test_hangover_sets_how_long_after_speech_the_stop_is_declared(silero_session) -> None:
    audio, (_, offset) = caller_turn(UTTERANCES[1])
    for hangover in (300.0, 800.0):
        detector = SpeechDetector(16000, VADParams(hangover_ms=hangover))
        declared_at = None
        for i in range(0, len(audio), 320):
            if any(e.kind == "stop" for e in detector.process(audio[i : i + 320])):
                declared_at = (i + 320) / 16000
        assert declared_at is not None
        assert hangover / 1000 <= declared_at - offset <= hangover / 1000 + 0.25


@pytest.mark.asyncio
async def test_vad_node_in_a_call_at_telephone_rate(silero_session) -> None:
    """8 kHz μ-law like a phone line: two turns, dated in media time, audio untouched."""
    a, (onset_a, offset_a) = caller_turn(UTTERANCES[1], rate=8000, lead=1.0, tail=1.2)
    b, (onset_b, _) = caller_turn(UTTERANCES[2], rate=8000, lead=0.5, tail=1.2)
    audio = np.frombuffer(ulaw_decode(ulaw_encode(np.concatenate([a, b]))), dtype=np.int16)
    start_pts = 100.0  # a transport's media clock rarely starts at zero
    onset_b += len(a) / 8000

    def done(frames) -> bool:
        return len([f for f in frames if isinstance(f, UserStoppedSpeakingFrame)]) == 2

    frames = await call([VADNode()], audio, 8000, until=done, start_pts=start_pts)
    starts = [f for f in frames if isinstance(f, UserStartedSpeakingFrame)]
    stops = [f for f in frames if isinstance(f, UserStoppedSpeakingFrame)]
    assert [f.turn_id for f in starts] == [1, 2] and [f.turn_id for f in stops] == [1, 2]
    assert abs(starts[0].pts - start_pts - onset_a) < 0.06
    assert abs(starts[1].pts - start_pts - onset_b) < 0.06
    assert -0.06 < stops[0].pts - start_pts - offset_a < 0.25
    passed = [f for f in frames if isinstance(f, InputAudioFrame)]
    assert b"".join(f.pcm for f in passed) == audio[: len(passed) * 160].tobytes()


@pytest.mark.asyncio
async def test_vad_node_resamples_wideband_input_and_keeps_its_media_clock(silero_session) -> None:
    audio, (onset, offset) = caller_turn(UTTERANCES[0], rate=48000, lead=1.0, tail=1.0)
    frames = await call(
        [VADNode()], audio, 48000,
        until=lambda seen: any(isinstance(f, UserStoppedSpeakingFrame) for f in seen),
    )
    start = next(f for f in frames if isinstance(f, UserStartedSpeakingFrame))
    stop = next(f for f in frames if isinstance(f, UserStoppedSpeakingFrame))
    assert abs(start.pts - onset) < 0.06 and -0.06 < stop.pts - offset < 0.25


def test_every_stream_shares_one_onnx_session(silero_session) -> None:
    loads = silero.load_count
    streams = [silero.SileroStream(16000), silero.SileroStream(8000), SpeechDetector(16000)._silero]
    assert all(s._session is silero_session for s in streams)
    assert silero.load_count == loads == 1
    options = silero_session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1


def test_silero_needs_its_audio_context(silero_session) -> None:
    """Guards the v5/v6 ONNX contract: without the 64-sample context it hears nothing."""
    voice = speech(UTTERANCES[0])[: 512 * 60]
    stream = silero.SileroStream(16000)
    with_context = [stream(voice[i : i + 512]) for i in range(0, len(voice), 512)]
    state = np.zeros((2, 1, 128), dtype=np.float32)
    without = []
    for i in range(0, len(voice), 512):
        out, state = silero_session.run(
            None,
            {"input": voice[None, i : i + 512].astype(np.float32) / 32768, "state": state, "sr": np.array(16000)},
        )
        without.append(float(out[0, 0]))
    assert np.mean(np.array(with_context) > 0.5) > 0.5
    assert max(without) < 0.5
