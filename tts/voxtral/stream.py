"""One streaming synthesis request: open, iterate int16 samples, close.

Closing a ``SpeechStream`` closes its connection, which is how both servers
learn to stop generating (neither has a cancel endpoint).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from tts.voxtral.errors import (
    VoxtralCloningUnavailable,
    VoxtralConnectError,
    VoxtralError,
    VoxtralProtocolError,
    VoxtralStreamError,
)
from tts.voxtral.protocol import (
    SAMPLE_RATE,
    SPEECH_PATH,
    AudioDelta,
    Dialect,
    PcmDecoder,
    ProtocolViolation,
    SpeechDone,
    SpeechFailed,
    SseEvent,
    SseParser,
    WavHeaderSkipper,
    interpret_sse,
    is_cloning_gated,
)

if TYPE_CHECKING:
    from tts.voxtral.client import VoxtralClient

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RequestStats:
    """Timestamps (``time.monotonic``) and byte counts of one synthesis request."""

    text: str
    t_sent: float = 0.0
    t_headers: float | None = None
    t_first_byte: float | None = None  # first body bytes (before any decoding)
    t_first_audio: float | None = None
    t_done: float | None = None
    wire_bytes: int = 0
    samples: int = 0
    completed: bool = False
    closed_early: bool = False
    usage: dict[str, Any] = field(default_factory=dict)

    @property
    def ttfa(self) -> float | None:
        """Server time to first audio byte, as seen by the client."""
        return None if self.t_first_audio is None else self.t_first_audio - self.t_sent

    @property
    def audio_seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    @property
    def rtf(self) -> float | None:
        """Generation wall time / audio duration (< 1 is faster than real time)."""
        if self.t_done is None or not self.samples:
            return None
        return (self.t_done - self.t_sent) / self.audio_seconds


class SpeechStream:
    """One streaming request; iterate it for int16 24 kHz mono sample arrays."""

    def __init__(self, client: VoxtralClient, body: dict[str, Any], *, cloning: bool) -> None:
        self._client = client
        self._body = body
        self._cloning = cloning
        self._response: httpx.Response | None = None
        self._mode = ""
        self.stats = RequestStats(text=body["input"])

    async def __aenter__(self) -> SpeechStream:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Send the request and wait for the status line and headers."""
        client = self._client
        request = client.http.build_request(
            "POST", client.url(SPEECH_PATH), json=self._body, headers=client.headers
        )
        self.stats.t_sent = time.monotonic()
        try:
            response = await client.http.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise client.map_timeout(exc, "waiting for the response headers") from exc
        except httpx.TransportError as exc:
            raise VoxtralConnectError(f"cannot reach Voxtral server at {client.base_url}: {exc!r}") from exc
        self.stats.t_headers = time.monotonic()
        self._response = response
        if response.status_code >= 400:
            try:
                raw = await response.aread()
            except httpx.HTTPError:
                raw = b""
            finally:
                await response.aclose()
            raise client.http_error(response.status_code, raw, cloning=self._cloning)
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in ("audio/pcm", "audio/l16", "application/octet-stream"):
            self._mode = "pcm"
        elif content_type in ("audio/wav", "audio/x-wav", "audio/wave"):
            self._mode = "wav"
        elif content_type == "text/event-stream":
            self._mode = "sse"
        else:
            await response.aclose()
            raise VoxtralProtocolError(
                f"expected audio/pcm or text/event-stream from {client.url(SPEECH_PATH)}, "
                f"got {content_type or 'no content-type'!r}"
            )

    async def __aiter__(self) -> AsyncIterator[np.ndarray]:
        if self._response is None:
            await self.open()
        assert self._response is not None
        if self._mode == "sse":
            chunks = self._sse_audio()
        else:
            chunks = self._raw_audio()
        decoder = PcmDecoder(self._client.dialect.pcm_dtype if self._mode == "sse" else "<i2")
        stats = self.stats
        try:
            async for payload in chunks:
                if stats.t_first_audio is None:
                    stats.t_first_audio = time.monotonic()
                stats.wire_bytes += len(payload)
                samples = decoder.feed(payload)
                if samples.size:
                    stats.samples += samples.size
                    yield samples
        except httpx.TimeoutException as exc:
            raise self._client.map_timeout(exc, f"after {stats.audio_seconds:.2f} s of audio") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise self._broken(f"connection dropped ({exc.__class__.__name__})") from exc
        finally:
            await chunks.aclose()
        stats.t_done = time.monotonic()
        stats.completed = True
        if decoder.pending_bytes:
            log.warning("Voxtral stream ended with %d byte(s) of a partial sample", decoder.pending_bytes)

    async def _raw_audio(self) -> AsyncIterator[bytes]:
        assert self._response is not None
        header = WavHeaderSkipper() if self._mode == "wav" else None
        async for data in self._response.aiter_bytes():
            if self.stats.t_first_byte is None:
                self.stats.t_first_byte = time.monotonic()
            if header is not None:
                data = header.feed(data)
            if data:
                yield data

    async def _sse_audio(self) -> AsyncIterator[bytes]:
        assert self._response is not None
        parser = SseParser()
        dialect = self._client.dialect
        done = False
        async for data in self._response.aiter_bytes():
            if self.stats.t_first_byte is None:
                self.stats.t_first_byte = time.monotonic()
            for event in parser.feed(data):
                outcome = self._interpret(dialect, event)
                if isinstance(outcome, AudioDelta):
                    if outcome.audio:
                        yield outcome.audio
                elif isinstance(outcome, SpeechDone):
                    self.stats.usage = outcome.usage
                    done = True
                elif isinstance(outcome, SpeechFailed):
                    raise self._failed(outcome)
        for event in parser.close():
            outcome = self._interpret(dialect, event)
            if isinstance(outcome, SpeechDone):
                self.stats.usage = outcome.usage
                done = True
            elif isinstance(outcome, SpeechFailed):
                raise self._failed(outcome)
        if not done:
            raise self._broken("event stream ended without speech.audio.done")

    @staticmethod
    def _interpret(dialect: Dialect, event: SseEvent) -> object:
        try:
            return interpret_sse(dialect, event)
        except ProtocolViolation as exc:
            raise VoxtralProtocolError(str(exc)) from exc

    def _failed(self, failure: SpeechFailed) -> VoxtralError:
        if self._cloning and is_cloning_gated(failure.message):
            return VoxtralCloningUnavailable(failure.code or 500, failure.message)
        return VoxtralStreamError(
            f"server reported a synthesis error mid-stream: {failure.message}",
            samples_received=self.stats.samples,
        )

    def _broken(self, why: str) -> VoxtralStreamError:
        hint = ""
        if self._cloning and self._client.dialect is Dialect.VLLM_OMNI and not self.stats.samples:
            hint = " (vLLM-Omni's public checkpoint cannot encode ref_audio; cloning may be unavailable)"
        return VoxtralStreamError(
            f"audio stream stopped mid-sentence after {self.stats.audio_seconds:.2f} s: {why}{hint}",
            samples_received=self.stats.samples,
        )

    async def aclose(self) -> None:
        """Close the connection now; the server sees the disconnect and stops."""
        response = self._response
        if response is None or response.is_closed:
            return
        if not self.stats.completed:
            self.stats.closed_early = True
            self.stats.t_done = self.stats.t_done or time.monotonic()
        await response.aclose()
