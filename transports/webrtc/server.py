"""HTTP signaling for browser calls: the page, its ICE config, and ``POST /offer``.

aiortc does not trickle ICE, so signaling is one request: the page gathers its
candidates, posts the complete offer, and gets back a complete answer. The
call's session is created (through the ``CallManager``, like every transport)
before the answer leaves, so a busy or draining server refuses with a 503
instead of accepting media it cannot serve.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Iterable
from importlib import resources
from typing import Any

from aiohttp import web
from aiortc import RTCSessionDescription

from agent.calls import CallInfo, CallManager, CallRejected
from agent.session import Session
from transports.webrtc.ice import (
    IceServerSpec,
    allow_loopback_candidates,
    browser_ice_servers,
    parse_ice_servers,
)
from transports.webrtc.peer import BadOffer, PeerCall

logger = logging.getLogger(__name__)

#: A browser's audio + data-channel offer is 3–8 KB; anything near this is not an offer.
MAX_OFFER_BYTES = 64 * 1024
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the page URL may carry ?token=
}


class WebRTCServer:
    """Serves the page and answers offers; one ``PeerCall`` per peer connection.

    :meth:`start` listens on its own port. Alternatively mount ``app`` into
    another aiohttp application (``parent.add_subapp("/call/", server.app)``;
    the page uses relative URLs) and only call :meth:`close` at shutdown.
    Routes may be added to ``app`` before it starts (the tests add a report
    endpoint for the page's test mode this way).
    """

    def __init__(
        self,
        manager: CallManager,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        token: str | None = None,
        ice_servers: Iterable[IceServerSpec] = (),
        input_sample_rate: int = 16000,
        connect_timeout_s: float = 15.0,
        offer_timeout_s: float = 30.0,
        reuse_port: bool = False,
    ) -> None:
        self.manager = manager
        self.host = host
        self.port = port
        self.ice_servers = parse_ice_servers(ice_servers)
        self.input_sample_rate = input_sample_rate
        self.connect_timeout_s = connect_timeout_s
        self.offer_timeout_s = offer_timeout_s
        self.reuse_port = reuse_port
        self.calls: dict[str, PeerCall] = {}
        self._token = token.encode() if token else None
        self._page = resources.files("transports.webrtc").joinpath("static/index.html").read_bytes()
        self._runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=MAX_OFFER_BYTES)
        self.app.router.add_get("/", self._index)
        self.app.router.add_get("/config", self._config)
        self.app.router.add_post("/offer", self._offer)
        manager.on_session(self._on_session)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_port=self.reuse_port or None)
        await site.start()
        if self.port == 0:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        logger.info("WebRTC page on %s (token %s, %d ICE servers)",
                    self.url, "required" if self._token else "off", len(self.ice_servers))

    async def close(self) -> None:
        """Hang up every call, then stop listening."""
        calls = list(self.calls.values())
        if calls:
            await asyncio.gather(*(call.close("server_shutdown") for call in calls), return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ----------------------------------------------------------------- routes

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=self._page, content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS)

    async def _config(self, request: web.Request) -> web.Response:
        self._authorize(request)
        return web.json_response({"iceServers": browser_ice_servers(self.ice_servers)})

    async def _offer(self, request: web.Request) -> web.Response:
        self._authorize(request)
        refusal = self.manager.refusal()
        if refusal:
            return _error(503, f"not taking calls: {refusal}")
        offer = await _read_offer(request)
        call = PeerCall(
            self.manager,
            ice_servers=self.ice_servers,
            input_sample_rate=self.input_sample_rate,
            connect_timeout_s=self.connect_timeout_s,
            caller=request.remote or "",
            metadata={"user_agent": request.headers.get("User-Agent", "")[:200]},
            on_closed=lambda c: self.calls.pop(c.session_id, None),
        )
        self.calls[call.session_id] = call
        try:
            answer = await asyncio.wait_for(call.answer(offer), self.offer_timeout_s)
        except BadOffer as exc:
            logger.warning("offer refused: %s", exc)
            await call.close("bad_offer")
            return _error(400, str(exc))
        except CallRejected as exc:
            await call.close("rejected")
            return _error(503, f"not taking calls: {exc.reason}")
        except asyncio.TimeoutError:
            logger.error("call %s: answering took over %.0f s", call.session_id, self.offer_timeout_s)
            await call.close("answer_timeout")
            return _error(504, "the call could not be set up in time")
        except Exception:
            logger.exception("call %s: could not answer the offer", call.session_id)
            await call.close("setup_failed")
            return _error(500, "the call could not be set up")
        logger.info("call %s answered", call.session_id)
        return web.json_response({"sdp": answer.sdp, "type": answer.type, "session_id": call.session_id})

    # ---------------------------------------------------------------- helpers

    def _authorize(self, request: web.Request) -> None:
        if self._token is None:
            return
        scheme, _, supplied = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(supplied.strip().encode(), self._token):
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "a valid bearer token is required"}),
                content_type="application/json",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def _on_session(self, session: Session, info: CallInfo) -> None:
        call = self.calls.get(info.session_id)
        if call is not None and info.transport == "webrtc":
            call.bind(session)


async def _read_offer(request: web.Request) -> RTCSessionDescription:
    """The offer from a request body, or an HTTP 400/413 saying what is wrong."""
    if request.content_length is not None and request.content_length > MAX_OFFER_BYTES:
        raise _http_error(web.HTTPRequestEntityTooLarge, f"offers are limited to {MAX_OFFER_BYTES} bytes",
                          max_size=MAX_OFFER_BYTES, actual_size=request.content_length)
    raw = bytearray()
    while chunk := await request.content.readany():  # the limit holds for chunked bodies and sub-apps too
        raw += chunk
        if len(raw) > MAX_OFFER_BYTES:
            raise _http_error(web.HTTPRequestEntityTooLarge, f"offers are limited to {MAX_OFFER_BYTES} bytes",
                              max_size=MAX_OFFER_BYTES, actual_size=len(raw))
    try:
        body: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _http_error(web.HTTPBadRequest, "the body must be JSON: {\"sdp\": ..., \"type\": \"offer\"}") from None
    if not isinstance(body, dict) or body.get("type") != "offer" or not isinstance(body.get("sdp"), str):
        raise _http_error(web.HTTPBadRequest, "expected {\"sdp\": string, \"type\": \"offer\"}")
    if "m=audio" not in body["sdp"]:
        raise _http_error(web.HTTPBadRequest, "the offer has no audio section")
    return RTCSessionDescription(sdp=body["sdp"], type="offer")


def _http_error(cls: type[web.HTTPException], message: str, **kwargs: Any) -> web.HTTPException:
    return cls(text=json.dumps({"error": message}), content_type="application/json", **kwargs)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def serve_webrtc(
    manager: CallManager,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    token: str | None = None,
    ice_servers: Iterable[IceServerSpec] = (),
    loopback_candidates: bool = False,
    **options: Any,
) -> WebRTCServer:
    """Start the page and signaling server; ``await server.close()`` stops it.

    ``ice_servers`` are STUN/TURN URLs or ``{"urls", "username", "credential"}``
    mappings, given to both the server and the page; none by default (host
    candidates only, which is what a LAN or localhost needs). ``loopback_candidates``
    lets calls work over 127.0.0.1 alone (a machine or namespace with no
    network); it patches aioice process-wide, so it is off unless asked for.
    """
    if loopback_candidates:
        allow_loopback_candidates()
    server = WebRTCServer(manager, host, port, token=token, ice_servers=ice_servers, **options)
    await server.start()
    return server
