"""The emulator's Mistral voices API: presets plus custom voices, CRUD and samples.

Shapes follow the SDK's ``VoiceResponse`` and the paginated list
``{items, total, page, page_size, total_pages}``; custom voice ids are UUIDs.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import soundfile
from aiohttp import web

from tts.voxtral.protocol import VOICES_PATH
from tts.voxtral.voices import HOSTED_PRESETS

ErrorFactory = Callable[[int, str], web.Response]
_EXTRA_PRESETS = ("voice_478", "voice_592")  # Voxtral 3 ids quoted by the docs
_PATCHABLE = ("name", "languages", "gender", "age", "tags", "description")


def decode_reference_seconds(b64: str) -> float:
    """Duration of a base64-encoded audio file; ``ValueError`` if it is not audio."""
    try:
        raw = base64.b64decode(b64, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64 ({exc})") from exc
    try:
        info = soundfile.info(io.BytesIO(raw))
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise ValueError("not a readable audio file") from exc
    return float(info.frames) / float(info.samplerate)


class MistralVoiceStore:
    """In-memory voices for one emulator (custom voices vanish when it stops)."""

    def __init__(self) -> None:
        now = _now()
        self._presets = {
            vid: _voice(vid, vid, now, languages=[vid.split("_")[0]], tags=["preset"])
            for vid in (*HOSTED_PRESETS, *_EXTRA_PRESETS)
        }
        self._custom: dict[str, dict[str, Any]] = {}
        self._samples: dict[str, bytes] = {}
        self._error: ErrorFactory | None = None

    def exists(self, voice_id: str) -> bool:
        return voice_id in self._presets or voice_id in self._custom

    def routes(self, error: ErrorFactory) -> list[web.RouteDef]:
        self._error = error
        path = VOICES_PATH + "/{voice_id}"
        return [
            web.post(VOICES_PATH, self.handle_create),
            web.get(path, self.handle_get),
            web.patch(path, self.handle_patch),
            web.delete(path, self.handle_delete),
            web.get(path + "/sample", self.handle_sample),
        ]

    def _fail(self, status: int, message: str) -> web.Response:
        assert self._error is not None
        return self._error(status, message)

    async def handle_list(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "10"))
            offset = int(request.query.get("offset", "0"))
        except ValueError:
            return self._fail(400, "limit and offset must be integers")
        kind = request.query.get("type", "all")
        if kind not in ("all", "custom", "preset") or limit < 1 or offset < 0:
            return self._fail(400, "invalid limit, offset or type")
        pool = {"all": [*self._presets.values(), *self._custom.values()],
                "preset": list(self._presets.values()), "custom": list(self._custom.values())}[kind]  # fmt: skip
        items = pool[offset : offset + limit]
        return web.json_response(
            {
                "items": items,
                "total": len(pool),
                "page": offset // limit + 1,
                "page_size": limit,
                "total_pages": max(1, math.ceil(len(pool) / limit)),
            }
        )

    async def handle_create(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return self._fail(400, "request body is not valid JSON")
        if not isinstance(body, dict) or not body.get("name") or not isinstance(body.get("sample_audio"), str):
            return self._fail(400, "name and sample_audio (base64) are required")
        try:
            seconds = decode_reference_seconds(body["sample_audio"])
        except ValueError as exc:
            return self._fail(400, f"sample_audio could not be decoded: {exc}")
        if not 3.0 <= seconds <= 25.0:
            return self._fail(400, f"sample_audio must be 3-25 s long, got {seconds:.1f} s")
        voice_id = str(uuid.uuid4())
        fields = {k: body[k] for k in (*_PATCHABLE, "slug", "color", "retention_notice") if k in body and k != "name"}
        voice = _voice(voice_id, body["name"], _now(), trimmed_seconds=0.0, **fields)
        self._custom[voice_id] = voice
        self._samples[voice_id] = base64.b64decode(body["sample_audio"])
        return web.json_response(voice)

    async def handle_get(self, request: web.Request) -> web.Response:
        voice = self._find(request)
        return voice if isinstance(voice, web.Response) else web.json_response(voice)

    async def handle_patch(self, request: web.Request) -> web.Response:
        voice = self._find(request, custom_only=True)
        if isinstance(voice, web.Response):
            return voice
        try:
            body = await request.json()
        except ValueError:
            return self._fail(400, "request body is not valid JSON")
        voice.update({k: v for k, v in body.items() if k in _PATCHABLE})
        return web.json_response(voice)

    async def handle_delete(self, request: web.Request) -> web.Response:
        voice = self._find(request, custom_only=True)
        if isinstance(voice, web.Response):
            return voice
        del self._custom[voice["id"]]
        self._samples.pop(voice["id"], None)
        return web.json_response(voice)

    async def handle_sample(self, request: web.Request) -> web.Response:
        voice = self._find(request)
        if isinstance(voice, web.Response):
            return voice
        sample = self._samples.get(voice["id"])
        if sample is None:
            return self._fail(404, "this preset has no stored sample in the emulator")
        return web.Response(body=sample, content_type="audio/wav")

    def _find(self, request: web.Request, *, custom_only: bool = False) -> dict[str, Any] | web.Response:
        voice_id = request.match_info["voice_id"]
        voice = self._custom.get(voice_id)
        if voice is None and not custom_only:
            voice = self._presets.get(voice_id)
        if voice is None:
            return self._fail(404, f"Voice '{voice_id}' not found")
        return voice


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _voice(voice_id: str, name: str, created: str, **fields: Any) -> dict[str, Any]:
    voice: dict[str, Any] = {
        "id": voice_id, "name": name, "created_at": created, "user_id": None, "slug": voice_id,
        "languages": [], "gender": None, "age": None, "tags": [], "color": None,
        "description": None, "retention_notice": 30, "trimmed_seconds": None,
    }  # fmt: skip
    voice.update(fields)
    return voice
