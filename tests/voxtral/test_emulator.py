"""The client against the protocol emulator, in both dialects: real speech, real HTTP."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import httpx
import numpy as np
import pytest
import soundfile

from tests.voxtral.conftest import API_KEY, transcribe
from tts.voxtral import (
    VoxtralClient,
    VoxtralCloningUnavailable,
    VoxtralHTTPError,
    load_reference,
)
from tts.voxtral.emulator import VoxtralEmulator

pytestmark = pytest.mark.asyncio(loop_scope="session")

VOICE = {"vllm-omni": "casual_female", "mistral": "en_paul_neutral"}


def _client(emulator: VoxtralEmulator, **kwargs) -> VoxtralClient:  # type: ignore[no-untyped-def]
    return VoxtralClient(emulator.url, emulator.dialect, api_key=API_KEY, **kwargs)


@pytest.mark.parametrize("dialect", ["vllm-omni", "mistral"])
async def test_speech_comes_back_and_says_the_text(emulators, whisper, dialect: str) -> None:  # type: ignore[no-untyped-def]
    emulator = emulators[dialect]
    async with _client(emulator) as client:
        samples = await client.synthesize("Your appointment is on Tuesday morning.", voice=VOICE[dialect])
    assert len(samples) / 24000 > 1.0
    assert len(samples) % 1920 == 0  # whole 80 ms codec frames
    heard = await transcribe(whisper, samples, 24000)
    assert "appointment" in heard and "tuesday" in heard
    record = emulator.requests[-1]
    assert record.completed
    assert record.content_type == ("audio/pcm" if dialect == "vllm-omni" else "text/event-stream")
    # Mistral's pcm is float32 on the wire: twice the bytes of the same audio in s16.
    assert record.audio_bytes_sent == len(samples) * (2 if dialect == "vllm-omni" else 4)


async def test_vllm_sse_deltas_follow_the_codec_chunk_cadence(emulators) -> None:  # type: ignore[no-untyped-def]
    emulator = emulators["vllm-omni"]
    body = {
        "input": "This sentence is long enough to need more than two seconds of speech to say it all.",
        "voice": "neutral_male",
        "stream": True,
        "response_format": "pcm",
    }
    sizes, last = [], None
    async with httpx.AsyncClient() as http:
        async with http.stream("POST", emulator.url + "/v1/audio/speech", json=body) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            text = (await response.aread()).decode()
    for block in text.strip().split("\n\n"):
        event, data = block.split("\n")
        payload = json.loads(data.removeprefix("data: "))
        if event == "event: speech.audio.delta":
            assert set(payload) == {"type", "audio", "response_format"}
            sizes.append(len(base64.b64decode(payload["audio"])))
        last = payload
    assert sizes[:5] == [19200] * 5 and sizes[5] == 96000
    assert all(size % 3840 == 0 for size in sizes)
    assert (
        last is not None
        and last["type"] == "speech.audio.done"
        and last["usage"]["output_tokens"] == sum(sizes) // 3840
    )


async def test_validation_errors_are_json_like_the_real_servers(emulators) -> None:  # type: ignore[no-untyped-def]
    vllm, mistral = emulators["vllm-omni"].url, emulators["mistral"].url
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient() as http:
        empty = await http.post(vllm + "/v1/audio/speech", json={"input": "  ", "voice": "casual_female"})
        assert empty.status_code == 400
        assert empty.json() == {
            "error": {"message": "Input text cannot be empty", "type": "BadRequestError", "param": None, "code": 400}
        }
        bad_voice = await http.post(vllm + "/v1/audio/speech", json={"input": "Hi.", "voice": "en_paul_neutral"})
        assert (
            bad_voice.status_code == 400 and "Invalid speaker 'en_paul_neutral'" in bad_voice.json()["error"]["message"]
        )
        mp3_stream = await http.post(
            vllm + "/v1/audio/speech",
            json={"input": "Hi.", "voice": "casual_female", "stream_format": "audio", "response_format": "mp3"},
        )
        assert mp3_stream.status_code == 400
        schema = await http.post(
            vllm + "/v1/audio/speech", json={"input": "Hi.", "voice": "casual_female", "response_format": "aac"}
        )
        assert schema.status_code == 422
        voices = await http.get(vllm + "/v1/audio/voices")
        assert voices.json()["uploaded_voices"] == [] and len(voices.json()["voices"]) == 20
        no_key = await http.post(mistral + "/v1/audio/speech", json={"input": "Hi.", "voice_id": "en_paul_neutral"})
        assert no_key.status_code == 401
        both = await http.post(
            mistral + "/v1/audio/speech",
            headers=auth,
            json={"input": "Hi.", "voice_id": "en_paul_neutral", "ref_audio": "AAAA"},
        )
        assert both.status_code == 400 and "mutually exclusive" in both.json()["message"]


async def test_client_surfaces_refusals_with_the_server_message(emulators) -> None:  # type: ignore[no-untyped-def]
    emulator = emulators["vllm-omni"]
    emulator.faults.update({"refuse_status": 503, "refuse_message": "GPU busy, retry later", "refuse_count": 1})
    async with _client(emulator) as client:
        with pytest.raises(VoxtralHTTPError, match="GPU busy") as info:
            await client.synthesize("Hi.", voice="casual_female")
        assert info.value.status == 503
        assert len(await client.synthesize("Hi.", voice="casual_female")) > 0  # refusal was one-shot


def _spoken_clip(seconds: float = 4.0) -> np.ndarray:
    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    voiced = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return np.concatenate([np.zeros(rate), voiced, np.zeros(rate // 2)]).astype(np.float32)


async def test_cloned_voice_request_carries_the_reference(emulators) -> None:  # type: ignore[no-untyped-def]
    clip = load_reference(_spoken_clip(), sample_rate=16000)
    mistral = emulators["mistral"]
    async with _client(mistral) as client:
        samples = await client.synthesize("Hello from a cloned voice.", ref_audio=clip)
    assert len(samples) > 0
    sent = mistral.requests[-1].body
    assert sent is not None and "voice_id" not in sent
    wav, rate = soundfile.read(io.BytesIO(base64.b64decode(sent["ref_audio"], validate=True)), dtype="float32")
    assert rate == 24000 and abs(len(wav) / rate - clip.duration) < 0.01
    assert np.allclose(wav, clip.samples, atol=1e-4)  # the trimmed clip, not the raw file
    assert mistral.requests[-1].extra["ref_audio_seconds"] == pytest.approx(clip.duration, abs=0.01)

    vllm = emulators["vllm-omni"]
    async with _client(vllm) as client:
        with pytest.raises(VoxtralCloningUnavailable, match="cloning is not available on this server"):
            await client.synthesize("Hello from a cloned voice.", ref_audio=clip)
    assert vllm.requests[-1].body["ref_audio"].startswith("data:audio/wav;base64,")


async def test_mistral_voices_crud(emulators) -> None:  # type: ignore[no-untyped-def]
    clip = load_reference(_spoken_clip(), sample_rate=16000)
    async with _client(emulators["mistral"]) as client:
        created = await client.create_voice("Support desk", clip, languages=["en"])
        assert created["name"] == "Support desk" and created["id"] in await client.list_voices()
        assert "en_paul_neutral" in await client.list_voices()  # presets page through too
        renamed = await client.update_voice(created["id"], name="Front desk")
        assert renamed["name"] == "Front desk"
        sample = await client.voice_sample(created["id"])
        assert soundfile.info(io.BytesIO(sample)).samplerate == 24000
        assert len(await client.synthesize("Using my saved voice.", voice=created["id"])) > 0
        await client.delete_voice(created["id"])
        with pytest.raises(VoxtralHTTPError) as info:
            await client.get_voice(created["id"])
        assert info.value.status == 404


@pytest.mark.parametrize("dialect", ["vllm-omni", "mistral"])
async def test_closing_the_stream_stops_the_server(emulators, dialect: str) -> None:  # type: ignore[no-untyped-def]
    emulator = emulators[dialect]
    emulator.rtf = 0.5  # slow enough that most of the utterance is still unsent
    async with _client(emulator) as client:
        stream = client.speech(
            "A long answer that the caller is about to interrupt right in the middle.", voice=VOICE[dialect]
        )
        await stream.open()
        async for _ in stream:
            break
        await stream.aclose()
    record = emulator.requests[-1]
    for _ in range(50):
        if record.client_disconnected:
            break
        await asyncio.sleep(0.01)
    assert record.client_disconnected and not record.completed
    assert record.audio_bytes_sent < record.audio_bytes_total / 2


async def test_say_writes_what_the_stage_streamed(emulators, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import argparse

    from tts.voxtral import say

    parser = argparse.ArgumentParser()
    say.add_arguments(parser)
    out = tmp_path / "hello.wav"
    args = parser.parse_args(
        ["Hello there. How can I help?", "--voxtral-url", emulators["vllm-omni"].url, "--dialect", "vllm-omni",
         "--voice", "neutral_male", "--rate", "16000", "--out", str(out)]
    )  # fmt: skip
    summary = await say.say(args)
    info = soundfile.info(str(out))
    assert info.samplerate == 16000 and info.duration == pytest.approx(summary["audio_s"], abs=0.01)
    assert info.duration > 1.0 and [r["text"] for r in summary["requests"]] == ["Hello there.", "How can I help?"]
