"""A local emulator of the Voxtral TTS *serving protocols* (not of the model).

It answers like a vLLM-Omni server running Voxtral-4B-TTS-2603 or like the
Mistral API — same paths, fields, 400 JSON errors, content types, SSE event
names and keys, PCM encodings, chunk cadence, voices, cancel-on-disconnect — but
the voice is the local piper voice resampled to 24 kHz. It exists for offline
development, tests and benches; every response carries ``X-Voxwire-Emulator``.

    python -m tts.voxtral.emulator --port 8091 --dialect vllm-omni
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from aiohttp import web

from tts.voxtral.emulator_requests import Plan, RequestError, validate_mistral, validate_vllm
from tts.voxtral.emulator_speech import Faults, PiperSpeech, RequestRecord, quantise_to_frames, vllm_chunk_frames
from tts.voxtral.emulator_voices import MistralVoiceStore
from tts.voxtral.emulator_wire import (
    CONTENT_TYPES,
    RawSender,
    SseSender,
    encode_file,
    encode_pcm,
    misalign,
    split_frames,
    streaming_wav_header,
    usage,
)
from tts.voxtral.protocol import FRAME_SAMPLES, HOSTED_MODEL, OPEN_WEIGHTS_MODEL, SPEECH_PATH, VOICES_PATH, Dialect
from tts.voxtral.voices import OPEN_WEIGHTS_PRESETS

log = logging.getLogger(__name__)

LABEL = "voxtral-protocol-emulator; audio is piper, not the Voxtral model"
CLONING_GATED_MESSAGE = (
    "encode_waveforms requires encoder weights which are not available in the open-source checkpoint."
)
Speech = Callable[[str], np.ndarray]


class VoxtralEmulator:
    """One emulated server. ``rtf`` paces chunks (generation time / audio time)."""

    def __init__(
        self,
        dialect: Dialect | str,
        *,
        speech: Speech | None = None,
        rtf: float = 0.1,
        ttfa_s: float = 0.0,
        api_key: str | None = None,
        allow_cloning: bool | None = None,
        max_tokens: int = 2048,
    ) -> None:
        self.dialect = Dialect.parse(dialect)
        self.speech = speech or PiperSpeech()
        self.rtf = rtf
        self.faults = Faults(ttfa_s=ttfa_s)
        self.api_key = api_key
        # The public open-weights checkpoint cannot encode references; the API can.
        self.allow_cloning = self.dialect is Dialect.MISTRAL if allow_cloning is None else allow_cloning
        self.max_tokens = max_tokens
        self.model = OPEN_WEIGHTS_MODEL if self.dialect is Dialect.VLLM_OMNI else HOSTED_MODEL
        self.voices = MistralVoiceStore()
        self.requests: list[RequestRecord] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ------------------------------------------------------------------ app

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._label, self._auth], client_max_size=64 * 1024 * 1024)
        routes = [
            web.post(SPEECH_PATH, self.handle_speech),
            web.get(VOICES_PATH, self.handle_list_voices),
            web.get("/health", self.handle_health),
            web.get("/_emulator", self.handle_info),
            web.post("/_emulator/faults", self.handle_faults),
            web.get("/_emulator/requests", self.handle_requests),
        ]
        if self.dialect is Dialect.MISTRAL:
            routes += self.voices.routes(self._mistral_error)
        app.add_routes(routes)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in this event loop; returns the base URL (port 0 picks a free one).

        The voice is loaded and warmed first, so the first request's time to first
        audio is not a model load.
        """
        from agent.workers import run_blocking

        await run_blocking(self.speech, "Ready.", pool="tts")
        # handler_cancellation: a client disconnect cancels the handler, as
        # vLLM-Omni's ``@with_cancellation`` does, so generation stops at once.
        self._runner = web.AppRunner(self.app(), handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        bound = server.sockets[0].getsockname()[1]
        self.url = f"http://{host}:{bound}"
        log.info("Voxtral %s protocol emulator (piper voice, not Voxtral) on %s", self.dialect.value, self.url)
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _label(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response = await handler(request)
        if not response.prepared:
            response.headers["X-Voxwire-Emulator"] = LABEL
        return response

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.api_key and request.path.startswith("/v1/"):
            if request.headers.get("Authorization") != f"Bearer {self.api_key}":
                return self._error(401, "Unauthorized")
        return await handler(request)

    # -------------------------------------------------------------- errors

    def _error(self, status: int, message: str, field: str | None = None) -> web.Response:
        if self.dialect is Dialect.MISTRAL:
            return self._mistral_error(status, message)
        if status == 422:
            detail = [{"type": "value_error", "loc": ["body", field or ""], "msg": message}]
            return web.json_response({"detail": detail}, status=422)
        kind = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError"}.get(
            status, "InternalServerError" if status >= 500 else "BadRequestError"
        )
        body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
        return web.json_response(body, status=status)

    @staticmethod
    def _mistral_error(status: int, message: str) -> web.Response:
        # The Mistral error body is not in the protocol document; this shape is an assumption.
        body = {"object": "error", "message": message, "type": "invalid_request_error", "param": None, "code": None}
        return web.json_response(body, status=status)

    # ------------------------------------------------------------- handlers

    async def handle_health(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def handle_info(self, request: web.Request) -> web.Response:
        return web.json_response({"emulator": LABEL, "dialect": self.dialect.value, "model": self.model})

    async def handle_faults(self, request: web.Request) -> web.Response:
        try:
            self.faults.update(await request.json())
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(vars(self.faults))

    async def handle_requests(self, request: web.Request) -> web.Response:
        return web.json_response([record.as_json() for record in self.requests])

    async def handle_list_voices(self, request: web.Request) -> web.Response:
        if self.dialect is Dialect.VLLM_OMNI:
            return web.json_response({"voices": list(OPEN_WEIGHTS_PRESETS), "uploaded_voices": []})
        return await self.voices.handle_list(request)

    async def handle_speech(self, request: web.Request) -> web.StreamResponse:
        record = RequestRecord(
            method="POST", path=request.path, body=None,
            authorization=request.headers.get("Authorization"), t_received=time.monotonic(),
        )  # fmt: skip
        self.requests.append(record)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._finish_error(record, RequestError(400, "request body is not valid JSON"))
        if not isinstance(body, dict):
            return self._finish_error(record, RequestError(400, "request body must be a JSON object"))
        record.body = body
        refused = self.faults.take_refusal()
        if refused is not None:
            record.fault = "refuse"
            return self._finish_error(record, RequestError(refused, self.faults.refuse_message))
        try:
            if self.dialect is Dialect.VLLM_OMNI:
                plan = validate_vllm(
                    body, model=self.model, max_tokens=self.max_tokens, allow_cloning=self.allow_cloning
                )
            else:
                plan = validate_mistral(body, voice_exists=self.voices.exists, max_tokens=self.max_tokens)
        except RequestError as exc:
            return self._finish_error(record, exc)
        if plan.ref_audio_seconds is not None:
            record.extra["ref_audio_seconds"] = plan.ref_audio_seconds
        try:
            return await self._respond(request, record, plan)
        except asyncio.CancelledError:
            record.client_disconnected = True
            record.t_finished = time.monotonic()
            raise
        except ConnectionResetError:
            record.client_disconnected = True
            record.t_finished = time.monotonic()
            return web.Response(status=499)

    def _finish_error(self, record: RequestRecord, exc: RequestError) -> web.Response:
        record.status = exc.status
        record.t_finished = time.monotonic()
        return self._error(exc.status, exc.message, exc.field)

    # ------------------------------------------------------------- response

    async def _respond(self, request: web.Request, record: RequestRecord, plan: Plan) -> web.StreamResponse:
        from agent.workers import run_blocking

        started = time.monotonic()
        if not plan.streaming:
            return await self._whole_file(record, plan)
        # Like a StreamingResponse, the status line and headers leave before any
        # audio exists; time to first audio is measured to the first body byte.
        response = web.StreamResponse(status=200)
        response.content_type = "text/event-stream" if plan.mode == "sse" else CONTENT_TYPES[plan.format]
        response.headers["X-Voxwire-Emulator"] = LABEL
        response.enable_chunked_encoding()
        record.status, record.content_type = 200, response.content_type
        await response.prepare(request)
        send = SseSender(response, plan) if plan.mode == "sse" else RawSender(response)
        if plan.gated:
            return await self._fail_cloning(request, response, record, send)
        audio = quantise_to_frames(await run_blocking(self.speech, plan.text, pool="tts"), plan.max_frames)
        frames = len(audio) // FRAME_SAMPLES
        if plan.format in ("pcm", "wav"):
            dtype = plan.dtype if plan.format == "pcm" else "<i2"
            chunks = [encode_pcm(part, dtype) for part in split_frames(audio, vllm_chunk_frames(frames))]
        else:  # Mistral may stream a compressed file: one delta with the whole encoding
            chunks = [encode_file(audio, plan.format)]
        record.audio_bytes_total = sum(map(len, chunks))
        if self.faults.misalign:
            chunks = misalign(chunks)
        if plan.format == "wav":
            await send.audio(streaming_wav_header())  # its own chunk, before any audio
        delay = max(0.0, self.faults.ttfa_s - (time.monotonic() - started))
        for chunk in chunks:
            await asyncio.sleep(delay)
            fault = self._fault_before(record, len(chunk))
            if fault == "stall":
                await asyncio.sleep(3600)  # ends when the client gives up and disconnects
            if fault == "error" and isinstance(send, SseSender):
                await send.error("emulated engine failure mid-stream", 500)
                record.t_finished = time.monotonic()
                return response
            if fault in ("drop", "error"):  # a raw stream can only break off
                _cut_connection(request)
                record.t_finished = time.monotonic()
                return response
            if record.t_first_audio is None:
                record.t_first_audio = time.monotonic()
            await send.audio(chunk)
            record.audio_bytes_sent += len(chunk)
            delay = len(chunk) / plan.bytes_per_second * self.rtf
        if isinstance(send, SseSender):
            await send.done(usage(self.dialect, plan.text, frames))
        await response.write_eof()
        record.completed = True
        record.t_finished = time.monotonic()
        return response

    def _fault_before(self, record: RequestRecord, size: int) -> str | None:
        after = record.audio_bytes_sent + size
        faults = self.faults
        for name, limit in (("drop", faults.drop_after_bytes), ("stall", faults.stall_after_bytes),
                            ("error", faults.error_after_bytes)):  # fmt: skip
            if limit is not None and after > limit:
                record.fault = name
                return name
        return None

    async def _fail_cloning(
        self, request: web.Request, response: web.StreamResponse, record: RequestRecord, send: RawSender | SseSender
    ) -> web.StreamResponse:
        # Inferred from the code paths: the codec encoder fails inside the engine,
        # after the 200 went out. SSE reports it as speech.audio.error; the raw
        # stream can only break off.
        record.fault = "cloning-gated"
        record.t_finished = time.monotonic()
        if isinstance(send, SseSender):
            await send.error(CLONING_GATED_MESSAGE, 500)
            await response.write_eof()
        else:
            _cut_connection(request)
        return response

    async def _whole_file(self, record: RequestRecord, plan: Plan) -> web.Response:
        from agent.workers import run_blocking

        if plan.gated:
            record.status, record.t_finished = 500, time.monotonic()
            return self._error(500, CLONING_GATED_MESSAGE)
        audio = quantise_to_frames(await run_blocking(self.speech, plan.text, pool="tts"), plan.max_frames)
        data = encode_file(audio, plan.format, plan.dtype)
        record.status, record.completed, record.t_finished = 200, True, time.monotonic()
        record.audio_bytes_total = record.audio_bytes_sent = len(data)
        if plan.mode == "json":
            return web.json_response({"audio_data": base64.b64encode(data).decode("ascii")})
        return web.Response(body=data, content_type=CONTENT_TYPES[plan.format])


def _cut_connection(request: web.Request) -> None:
    """Break the TCP connection without the final chunk: a stream that dies mid-sentence."""
    transport = request.transport
    if transport is not None:
        transport.abort()


# ----------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``voxwire tts-server`` (and ``python -m tts.voxtral.emulator``)."""
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--dialect", choices=[d.value for d in Dialect], default=Dialect.VLLM_OMNI.value)
    parser.add_argument("--ttfa-ms", type=float, default=0.0, help="extra server time to first audio")
    parser.add_argument("--rtf", type=float, default=0.1, help="generation time per second of audio")
    parser.add_argument("--api-key", default=None, help="require this Bearer key (Mistral dialect)")
    parser.add_argument(
        "--allow-cloning", action="store_true", help="vLLM-Omni: accept ref_audio, as a gated checkpoint would"
    )


async def serve(args: argparse.Namespace) -> None:
    emulator = VoxtralEmulator(
        args.dialect, rtf=args.rtf, ttfa_s=args.ttfa_ms / 1000.0, api_key=args.api_key,
        allow_cloning=True if args.allow_cloning else None,
    )  # fmt: skip
    url = await emulator.start(args.host, args.port)
    print(f"Voxtral {args.dialect} protocol emulator listening on {url} (voice: piper, not Voxtral)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await emulator.close()


def run(args: argparse.Namespace) -> int:
    """Entry point for ``voxwire tts-server``: serve until interrupted."""
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(
        prog="python -m tts.voxtral.emulator",
        description="Emulate a Voxtral TTS server's protocol locally (speech comes from piper, not Voxtral).",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
