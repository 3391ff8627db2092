"""Async HTTP client for Voxtral TTS servers (vLLM-Omni and the Mistral API).

Speech goes through ``SpeechStream`` (one request each); voices are listed,
validated and, on the Mistral API, created and managed here.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import httpx
import numpy as np

from tts.voxtral.errors import (
    VoxtralCloningUnavailable,
    VoxtralConnectError,
    VoxtralError,
    VoxtralHTTPError,
    VoxtralProtocolError,
    VoxtralTimeout,
)
from tts.voxtral.protocol import (
    MISTRAL_BASE_URL,
    SPEECH_PATH,
    VOICES_PATH,
    Dialect,
    build_speech_body,
    error_message_from_body,
    is_cloning_gated,
    request_headers,
)
from tts.voxtral.stream import SpeechStream
from tts.voxtral.voices import ReferenceClip

log = logging.getLogger(__name__)


class VoxtralClient:
    """HTTP client for one Voxtral endpoint in one dialect.

    ``base_url`` may end in ``/v1`` or not. For the Mistral dialect the key comes
    from ``api_key`` or ``MISTRAL_API_KEY`` and the URL defaults to the hosted API.
    ``read_timeout`` bounds every gap between bytes, so a stalled stream fails
    instead of leaving the caller in silence.
    """

    def __init__(
        self,
        base_url: str | None = None,
        dialect: Dialect | str = Dialect.VLLM_OMNI,
        *,
        api_key: str | None = None,
        model: str | None = None,
        sse: bool = False,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        http: httpx.AsyncClient | None = None,
        max_connections: int = 16,
    ) -> None:
        self.dialect = Dialect.parse(dialect)
        if base_url is None:
            if self.dialect is not Dialect.MISTRAL:
                raise ValueError("a vLLM-Omni base_url is required (e.g. http://localhost:8091)")
            base_url = MISTRAL_BASE_URL
        self.base_url = _normalise_base_url(base_url)
        if api_key is None and self.dialect is Dialect.MISTRAL:
            api_key = os.environ.get("MISTRAL_API_KEY")
            if not api_key and self.base_url == MISTRAL_BASE_URL:
                raise ValueError("the Mistral API needs a key: set MISTRAL_API_KEY or pass api_key")
        self.model = model if model is not None else self.dialect.default_model
        self.sse = sse
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.headers = request_headers(self.dialect, api_key)
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
            ),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    def url(self, path: str) -> str:
        return self.base_url + path

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    async def __aenter__(self) -> VoxtralClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ----------------------------------------------------------------- speech

    def speech(
        self,
        text: str,
        *,
        voice: str | None = None,
        ref_audio: ReferenceClip | str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> SpeechStream:
        """A stream for ``text`` in a preset ``voice`` or cloned from ``ref_audio``.

        Use as ``async with client.speech(...) as stream: async for pcm in stream``.
        """
        encoded = ref_audio.encode(self.dialect) if isinstance(ref_audio, ReferenceClip) else ref_audio
        # A vLLM-Omni cloning failure happens inside the engine after the 200; only
        # the SSE form can carry its message back, so cloning requests use SSE.
        sse = self.sse or (encoded is not None and self.dialect is Dialect.VLLM_OMNI)
        body = build_speech_body(
            self.dialect, text, voice=voice, ref_audio=encoded, model=self.model, sse=sse, extra=extra
        )
        return SpeechStream(self, body, cloning=encoded is not None)

    async def synthesize(
        self, text: str, *, voice: str | None = None, ref_audio: ReferenceClip | str | None = None
    ) -> np.ndarray:
        """Whole utterance as int16 24 kHz samples (streams underneath)."""
        parts: list[np.ndarray] = []
        async with self.speech(text, voice=voice, ref_audio=ref_audio) as stream:
            async for pcm in stream:
                parts.append(pcm)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    # ----------------------------------------------------------------- voices

    async def list_voices(self) -> list[str]:
        """Names usable as ``voice`` on this server (presets and custom voices)."""
        if self.dialect is Dialect.VLLM_OMNI:
            payload = await self._json("GET", VOICES_PATH)
            names: list[str] = []
            for entry in list(payload.get("voices") or []) + list(payload.get("uploaded_voices") or []):
                name = entry.get("name") if isinstance(entry, dict) else entry
                if isinstance(name, str):
                    names.append(name.lower())
            return names
        names = []
        for item in await self.list_voice_records():
            for key in ("id", "slug"):
                value = item.get(key)
                if isinstance(value, str) and value and value not in names:
                    names.append(value)
        return names

    async def list_voice_records(self, *, kind: str = "all", page_size: int = 100) -> list[dict[str, Any]]:
        """Mistral: every ``VoiceResponse`` item, following the pagination."""
        self._require_mistral("listing voice records")
        items: list[dict[str, Any]] = []
        offset = 0
        for _ in range(100):
            page = await self._json(
                "GET", VOICES_PATH, params={"limit": page_size, "offset": offset, "type": kind}
            )
            batch = [item for item in page.get("items") or [] if isinstance(item, dict)]
            items.extend(batch)
            offset += len(batch)
            total = page.get("total")
            if not batch or (isinstance(total, int) and offset >= total):
                break
        return items

    async def create_voice(self, name: str, clip: ReferenceClip, **fields: Any) -> dict[str, Any]:
        """Mistral: save a custom voice from a reference clip; returns the ``VoiceResponse``."""
        self._require_mistral("creating voices")
        body = {"name": name, "sample_audio": clip.base64_wav(), "sample_filename": "reference.wav", **fields}
        return await self._json("POST", VOICES_PATH, json=body)

    async def get_voice(self, voice_id: str) -> dict[str, Any]:
        self._require_mistral("reading voices")
        return await self._json("GET", f"{VOICES_PATH}/{voice_id}")

    async def update_voice(self, voice_id: str, **fields: Any) -> dict[str, Any]:
        self._require_mistral("updating voices")
        return await self._json("PATCH", f"{VOICES_PATH}/{voice_id}", json=fields)

    async def delete_voice(self, voice_id: str) -> None:
        self._require_mistral("deleting voices")
        await self._request("DELETE", f"{VOICES_PATH}/{voice_id}")

    async def voice_sample(self, voice_id: str) -> bytes:
        """Mistral: the stored sample of a voice, as WAV bytes."""
        self._require_mistral("reading voice samples")
        return (await self._request("GET", f"{VOICES_PATH}/{voice_id}/sample")).content

    # ---------------------------------------------------------------- helpers

    def http_error(self, status: int, body: bytes, *, cloning: bool = False) -> VoxtralHTTPError:
        message = error_message_from_body(body) or "(empty body)"
        if cloning and is_cloning_gated(message):
            return VoxtralCloningUnavailable(status, message, url=self.url(SPEECH_PATH))
        if status in (401, 403) and self.dialect is Dialect.MISTRAL:
            message += " (check MISTRAL_API_KEY)"
        return VoxtralHTTPError(status, message, url=self.base_url)

    def map_timeout(self, exc: httpx.TimeoutException, when: str) -> VoxtralError:
        if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
            return VoxtralConnectError(
                f"no connection to {self.base_url} within {self.connect_timeout:.1f} s"
            )
        return VoxtralTimeout(f"server silent for {self.read_timeout:.1f} s {when}")

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.http.request(method, self.url(path), headers=self.headers, **kwargs)
        except httpx.TimeoutException as exc:
            raise self.map_timeout(exc, f"on {method} {path}") from exc
        except httpx.TransportError as exc:
            raise VoxtralConnectError(f"cannot reach Voxtral server at {self.base_url}: {exc!r}") from exc
        if response.status_code >= 400:
            raise self.http_error(response.status_code, response.content)
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._request(method, path, **kwargs)
        try:
            payload = response.json()
        except ValueError as exc:
            raise VoxtralProtocolError(f"{method} {path} did not return JSON") from exc
        if not isinstance(payload, dict):
            raise VoxtralProtocolError(f"{method} {path} returned {type(payload).__name__}, not an object")
        return payload

    def _require_mistral(self, what: str) -> None:
        if self.dialect is not Dialect.MISTRAL:
            raise VoxtralError(
                f"{what} is a Mistral API feature; vLLM-Omni's Voxtral adapter ignores uploaded voices"
            )


def _normalise_base_url(url: str) -> str:
    url = url.rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url
