"""Wire-level pieces, fed bytes exactly as shared/docs/voxtral-protocols.md shows them."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import soundfile

from tts.voxtral.emulator_speech import vllm_chunk_frames
from tts.voxtral.errors import ReferenceClipError, VoiceError
from tts.voxtral.protocol import (
    AudioDelta,
    Dialect,
    PcmDecoder,
    SpeechDone,
    SpeechFailed,
    SseParser,
    build_speech_body,
    error_message_from_body,
    float32_to_int16,
    interpret_sse,
    is_cloning_gated,
)
from tts.voxtral.voices import check_voice, load_reference

# ------------------------------------------------------------------ PCM decoding


def test_s16_sample_split_across_reads_is_kept_not_dropped() -> None:
    samples = np.arange(-500, 500, dtype="<i2")
    wire = samples.tobytes()
    decoder = PcmDecoder("<i2")
    out, position = [], 0
    for size in (1, 2, 3, 5, 7, 11, 999, 1, 971):  # every split lands mid-sample at some point
        out.append(decoder.feed(wire[position : position + size]))
        position += size
    assert position == len(wire)
    assert np.array_equal(np.concatenate(out), samples)
    assert decoder.pending_bytes == 0


def test_float32_remainder_carries_across_chunks() -> None:
    samples = np.linspace(-0.9, 0.9, 1001, dtype="<f4")
    wire = samples.tobytes()
    decoder = PcmDecoder("<f4")
    # Mistral deltas of 1,001 and 2,003 bytes: neither is a multiple of 4.
    parts = [decoder.feed(wire[i : i + 1001]) for i in range(0, len(wire), 1001)]
    got = np.concatenate(parts)
    assert len(got) == 1001  # Pipecat/LiveKit would have dropped a sample per chunk
    assert np.array_equal(got, np.rint(samples * 32767).astype(np.int16))


def test_float32_conversion_clips_overshoot() -> None:
    got = float32_to_int16(np.array([1.5, -1.5, 1.0, -1.0, 0.5], dtype=np.float32))
    assert got.tolist() == [32767, -32767, 32767, -32767, 16384]


# --------------------------------------------------------------------------- SSE


def test_sse_parser_handles_comments_crlf_multiline_and_odd_splits() -> None:
    stream = (
        b": keep-alive comment\r\n\r\n"
        b"event: speech.audio.delta\r\n"
        b'data: {"type":"speech.audio.delta",\r\n'
        b'data: "audio":"AAAA"}\r\n\r\n'
        b"event: speech.audio.done\r"
        b'data: {"type":"speech.audio.done","usage":{"input_tokens":3}}\r\r'
    )
    parser = SseParser()
    events = []
    for i in range(len(stream)):  # byte by byte: every CR/LF pair gets split once
        events += parser.feed(stream[i : i + 1])
    events += parser.close()
    assert [e.event for e in events] == ["speech.audio.delta", "speech.audio.done"]
    assert json.loads(events[0].data) == {"type": "speech.audio.delta", "audio": "AAAA"}
    assert json.loads(events[1].data)["usage"] == {"input_tokens": 3}


def test_sse_last_event_without_blank_line_is_kept_at_eof() -> None:
    parser = SseParser()
    events = parser.feed(b'event: speech.audio.done\ndata: {"type":"speech.audio.done"}')
    assert events == []
    assert [e.event for e in parser.close()] == ["speech.audio.done"]


def test_sse_events_per_dialect_key() -> None:
    pcm = np.array([1, -2, 3], dtype="<i2").tobytes()
    vllm = SseParser().feed(
        b'event: speech.audio.delta\ndata: {"type":"speech.audio.delta","audio":"'
        + base64.b64encode(pcm)
        + b'","response_format":"pcm"}\n\n'
    )[0]
    assert interpret_sse(Dialect.VLLM_OMNI, vllm) == AudioDelta(pcm)
    # Mistral: key audio_data; the event name may be missing and ``type`` decides.
    mistral = SseParser().feed(
        b'data: {"type":"speech.audio.delta","audio_data":"' + base64.b64encode(pcm) + b'"}\n\n'
    )[0]
    assert interpret_sse(Dialect.MISTRAL, mistral) == AudioDelta(pcm)
    done = SseParser().feed(
        b'event: speech.audio.done\ndata: {"type":"speech.audio.done","usage":'
        b'{"prompt_tokens":56,"completion_tokens":94080,"total_tokens":94136}}\n\n'
    )[0]
    assert interpret_sse(Dialect.MISTRAL, done) == SpeechDone(
        {"prompt_tokens": 56, "completion_tokens": 94080, "total_tokens": 94136}
    )


def test_sse_error_event_carries_the_server_message() -> None:
    event = SseParser().feed(
        b'event: speech.audio.error\ndata: {"type":"speech.audio.error","error":{"message":"CUDA out of memory",'
        b'"type":"server_error","param":null,"code":500}}\n\n'
    )[0]
    assert interpret_sse(Dialect.VLLM_OMNI, event) == SpeechFailed("CUDA out of memory", 500)


# ---------------------------------------------------------------------- requests


def test_request_bodies_use_each_dialects_field_names() -> None:
    vllm = build_speech_body(Dialect.VLLM_OMNI, "Hi.", voice="casual_female", model="m")
    assert vllm == {
        "input": "Hi.",
        "response_format": "pcm",
        "model": "m",
        "voice": "casual_female",
        "stream": True,
        "stream_format": "audio",
    }
    mistral = build_speech_body(Dialect.MISTRAL, "Hi.", ref_audio="UklGR...")
    assert mistral == {"input": "Hi.", "response_format": "pcm", "ref_audio": "UklGR...", "stream": True}
    with pytest.raises(ValueError):
        build_speech_body(Dialect.MISTRAL, "  ", voice="en_paul_neutral")


def test_error_bodies_of_both_shapes() -> None:
    vllm = (
        b'{"error":{"message":"Invalid speaker \'bob\'. Supported: ...",'
        b'"type":"BadRequestError","param":null,"code":400}}'
    )
    assert error_message_from_body(vllm).startswith("Invalid speaker 'bob'")
    assert "Field required" in error_message_from_body(b'{"detail":[{"loc":["body","input"],"msg":"Field required"}]}')
    assert error_message_from_body(b"<html>Bad gateway</html>") == "<html>Bad gateway</html>"
    assert is_cloning_gated(
        "encode_waveforms requires encoder weights which are not available in the open-source checkpoint."
    )


def test_vllm_chunk_cadence_matches_the_pr_3065_log() -> None:
    # 7.28 s = 91 frames: 400, 400, 400, 400, 400, 2000, 2000, 1280 ms.
    assert [n * 80 for n in vllm_chunk_frames(91)] == [400, 400, 400, 400, 400, 2000, 2000, 1280]
    assert vllm_chunk_frames(3) == [3]


# ------------------------------------------------------------------------ voices


def test_voice_families_are_never_mixed_silently() -> None:
    with pytest.raises(VoiceError, match="open-weights preset"):
        check_voice(Dialect.MISTRAL, "neutral_female", ["en_paul_neutral", "gb_jane_neutral"])
    with pytest.raises(VoiceError, match="Mistral API voice id"):
        check_voice(Dialect.VLLM_OMNI, "en_paul_neutral", ["casual_female", "neutral_female"])
    with pytest.raises(VoiceError, match="not offered"):
        check_voice(Dialect.VLLM_OMNI, "robot", ["casual_female"])
    assert check_voice(Dialect.VLLM_OMNI, "Casual_Female", ["casual_female"]) == "casual_female"
    assert check_voice(Dialect.MISTRAL, "voice_592", None) == "voice_592"  # server list unknown


def _tone(seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_reference_clip_is_trimmed_resampled_and_encoded_per_dialect() -> None:
    rate = 44100
    clip = np.concatenate([np.zeros(rate * 2, np.float32), _tone(4.0, rate), np.zeros(rate, np.float32)])
    stereo = np.stack([clip, clip], axis=1)
    wav = io.BytesIO()
    soundfile.write(wav, stereo, rate, format="WAV")
    ref = load_reference(wav.getvalue())
    assert 4.0 <= ref.duration <= 4.4  # 3 s of silence trimmed, a little padding kept
    assert ref.trimmed_seconds > 2.5
    vllm = ref.encode(Dialect.VLLM_OMNI)
    assert vllm.startswith("data:audio/wav;base64,")
    mistral = ref.encode(Dialect.MISTRAL)
    data, sr = soundfile.read(io.BytesIO(base64.b64decode(mistral)))
    assert sr == 24000 and abs(len(data) / sr - ref.duration) < 0.01


def test_reference_clip_length_is_validated() -> None:
    with pytest.raises(ReferenceClipError, match="3–25 s"):
        load_reference(_tone(2.0, 16000), sample_rate=16000)
    with pytest.raises(ReferenceClipError, match="at most 25 s"):
        load_reference((_tone(30.0, 16000), 16000))
    with pytest.raises(ReferenceClipError, match="silent"):
        load_reference(np.zeros(16000 * 5, dtype=np.int16), sample_rate=16000)
    with pytest.raises(ReferenceClipError, match="cannot decode"):
        load_reference(b"definitely not audio")
    assert load_reference((np.asarray(_tone(5.0, 8000) * 32767, dtype=np.int16), 8000)).duration >= 4.9
