"""The client against hand-built HTTP responses taken from the protocol document.

No emulator here: each response is the bytes the doc shows, delivered in the
awkward splits a real network produces, so the client cannot pass by agreeing
with our own server.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable

import httpx
import numpy as np
import pytest

from tts.voxtral import (
    VoxtralClient,
    VoxtralCloningUnavailable,
    VoxtralHTTPError,
    VoxtralProtocolError,
    VoxtralStreamError,
)
from tts.voxtral.protocol import FRAME_SAMPLES

pytestmark = pytest.mark.asyncio(loop_scope="session")

WAV_HEADER = bytes.fromhex("52494646ffffffff57415645666d74201000000001000100c05d000080bb00000200100064617461ffffffff")


def _speech(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(-20000, 20000, n, dtype=np.int16)


def _odd_splits(data: bytes, sizes: tuple[int, ...] = (7, 19193, 1, 4095, 3)) -> list[bytes]:
    out, position, i = [], 0, 0
    while position < len(data):
        size = sizes[i % len(sizes)]
        out.append(data[position : position + size])
        position += size
        i += 1
    return out


def _client(
    dialect: str, handler: Callable[[httpx.Request], httpx.Response], seen: list[httpx.Request]
) -> VoxtralClient:
    async def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(record))
    return VoxtralClient("http://voxtral.test/v1", dialect, api_key="sk-test", http=http)


def _body(chunks: list[bytes], *, fail_with: Exception | None = None) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk
        if fail_with is not None:
            raise fail_with

    return gen()


def _sse(event: str, payload: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


async def test_vllm_raw_pcm_stream_with_doc_cadence_and_odd_splits() -> None:
    # §1.9: five 19,200 B chunks, a 96,000 B chunk, then k × 3,840 B — read in odd pieces.
    samples = _speech(5 * 9600 + 48000 + 4 * FRAME_SAMPLES)
    seen: list[httpx.Request] = []
    client = _client(
        "vllm-omni",
        lambda r: httpx.Response(
            200, headers={"content-type": "audio/pcm"}, content=_body(_odd_splits(samples.tobytes()))
        ),
        seen,
    )
    got = await client.synthesize("Hello, how are you?", voice="casual_female")
    assert np.array_equal(got, samples)
    body = json.loads(seen[0].content)
    assert seen[0].url.path == "/v1/audio/speech"
    assert body["stream_format"] == "audio" and body["response_format"] == "pcm" and body["voice"] == "casual_female"


async def test_vllm_streaming_wav_header_is_not_played_as_audio() -> None:
    samples = _speech(9600)
    client = _client(
        "vllm-omni",
        lambda r: httpx.Response(
            200,
            headers={"content-type": "audio/wav"},
            content=_body([WAV_HEADER[:10], WAV_HEADER[10:] + samples.tobytes()[:3], samples.tobytes()[3:]]),
        ),
        [],
    )
    assert np.array_equal(await client.synthesize("Hi.", voice="casual_female"), samples)


async def test_vllm_sse_form_with_audio_key_and_usage() -> None:
    samples = _speech(19200)
    raw = samples.tobytes()
    events = b": ping\n\n"
    for start in range(0, len(raw), 19200):
        events += _sse(
            "speech.audio.delta",
            {
                "type": "speech.audio.delta",
                "audio": base64.b64encode(raw[start : start + 19200]).decode(),
                "response_format": "pcm",
            },
        )
    usage = {
        "input_tokens": 6,
        "output_tokens": 20,
        "total_tokens": 26,
        "input_token_details": {"text_tokens": 6, "audio_tokens": 0},
    }
    events += _sse("speech.audio.done", {"type": "speech.audio.done", "usage": usage})
    client = _client(
        "vllm-omni",
        lambda r: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=_body(_odd_splits(events, (5, 333, 2)))
        ),
        [],
    )
    client.sse = True
    async with client.speech("Hello.", voice="casual_female") as stream:
        got = np.concatenate([pcm async for pcm in stream])
    assert np.array_equal(got, samples)
    assert stream.stats.usage == usage and stream.stats.completed


async def test_mistral_float32_deltas_split_mid_sample_keep_every_sample() -> None:
    floats = np.linspace(-0.8, 0.8, 24000, dtype="<f4")
    raw = floats.tobytes()
    cuts = [0, 4001, 38403, 60002, len(raw)]  # none on a 4-byte boundary
    events = b"".join(
        _sse("speech.audio.delta", {"type": "speech.audio.delta", "audio_data": base64.b64encode(raw[a:b]).decode()})
        for a, b in zip(cuts, cuts[1:])
    ).replace(b"\n", b"\r\n")
    events += _sse(
        "speech.audio.done",
        {
            "type": "speech.audio.done",
            "usage": {"prompt_tokens": 56, "completion_tokens": 94080, "total_tokens": 94136},
        },
    )
    seen: list[httpx.Request] = []
    client = _client(
        "mistral",
        lambda r: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=_body(_odd_splits(events))
        ),
        seen,
    )
    got = await client.synthesize("Bonjour.", voice="fr_marie_neutral")
    assert len(got) == 24000
    assert np.array_equal(got, np.rint(floats * 32767).astype(np.int16))
    assert seen[0].headers["authorization"] == "Bearer sk-test"
    assert json.loads(seen[0].content) == {
        "input": "Bonjour.",
        "response_format": "pcm",
        "model": "voxtral-mini-tts-2603",
        "voice_id": "fr_marie_neutral",
        "stream": True,
    }


async def test_server_error_event_mid_stream_is_raised_with_its_message() -> None:
    events = _sse(
        "speech.audio.delta", {"type": "speech.audio.delta", "audio_data": base64.b64encode(b"\0" * 8000).decode()}
    )
    events += _sse(
        "speech.audio.error",
        {
            "type": "speech.audio.error",
            "error": {"message": "engine died", "type": "server_error", "param": None, "code": 500},
        },
    )
    client = _client(
        "mistral",
        lambda r: httpx.Response(200, headers={"content-type": "text/event-stream"}, content=_body([events])),
        [],
    )
    with pytest.raises(VoxtralStreamError, match="engine died"):
        await client.synthesize("Hi.", voice="en_paul_neutral")


async def test_event_stream_that_ends_without_done_is_a_broken_stream() -> None:
    events = _sse(
        "speech.audio.delta", {"type": "speech.audio.delta", "audio": base64.b64encode(b"\0" * 3840).decode()}
    )
    client = _client(
        "vllm-omni",
        lambda r: httpx.Response(200, headers={"content-type": "text/event-stream"}, content=_body([events])),
        [],
    )
    client.sse = True
    with pytest.raises(VoxtralStreamError, match="mid-sentence"):
        await client.synthesize("Hi.", voice="casual_female")


async def test_raw_stream_cut_by_the_network_is_a_broken_stream() -> None:
    client = _client(
        "vllm-omni",
        lambda r: httpx.Response(
            200,
            headers={"content-type": "audio/pcm"},
            content=_body([b"\1\0" * 9600], fail_with=httpx.RemoteProtocolError("peer closed")),
        ),
        [],
    )
    with pytest.raises(VoxtralStreamError) as info:
        await client.synthesize("Hi.", voice="casual_female")
    assert info.value.samples_received == 9600


async def test_http_errors_carry_the_servers_message() -> None:
    body = {
        "error": {
            "message": "Invalid speaker 'bob'. Supported: casual_female, ...",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    }
    client = _client("vllm-omni", lambda r: httpx.Response(400, json=body), [])
    with pytest.raises(VoxtralHTTPError, match="Invalid speaker 'bob'") as info:
        await client.synthesize("Hi.", voice="bob")
    assert info.value.status == 400


async def test_wrong_content_type_is_a_protocol_error() -> None:
    client = _client(
        "vllm-omni", lambda r: httpx.Response(200, headers={"content-type": "text/html"}, content=b"<html>"), []
    )
    with pytest.raises(VoxtralProtocolError, match="text/html"):
        await client.synthesize("Hi.", voice="casual_female")


async def test_cloning_on_the_public_checkpoint_says_so() -> None:
    message = "encode_waveforms requires encoder weights which are not available in the open-source checkpoint."
    events = _sse(
        "speech.audio.error",
        {
            "type": "speech.audio.error",
            "error": {"message": message, "type": "server_error", "param": None, "code": 500},
        },
    )
    seen: list[httpx.Request] = []
    client = _client(
        "vllm-omni",
        lambda r: httpx.Response(200, headers={"content-type": "text/event-stream"}, content=_body([events])),
        seen,
    )
    with pytest.raises(VoxtralCloningUnavailable, match="voice cloning is not available on this server"):
        await client.synthesize("Hi.", ref_audio="data:audio/wav;base64,UklGRg==")
    # Cloning requests go out as SSE so the engine's message can come back at all.
    assert json.loads(seen[0].content)["stream_format"] == "sse"
