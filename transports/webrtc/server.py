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
import re
from collections.abc import Iterable
from importlib import resources
from typing import Any

from aiohttp import web
from aiortc import RTCSessionDescription
from aiortc import sdp as aiortc_sdp

from agent.calls import CallInfo, CallManager, CallRejected
from agent.session import Session
from transports.ratelimit import HttpLimits, install_limits
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
        http_limits: HttpLimits | None = None,
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
        install_limits(self.app, http_limits)  # per-source rate, open requests, body size
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
        try:
            self.manager.admit("webrtc")  # counted once, before an answer is spent on the offer
        except CallRejected as exc:
            return _error(503, f"not taking calls: {exc.reason}")
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
            await self._discard(call, "bad_offer")
            return _error(400, str(exc))
        except CallRejected as exc:
            await self._discard(call, "rejected")
            return _error(503, f"not taking calls: {exc.reason}")
        except asyncio.TimeoutError:
            logger.error("call %s: answering took over %.0f s", call.session_id, self.offer_timeout_s)
            await self._discard(call, "answer_timeout")
            return _error(504, "the call could not be set up in time")
        except Exception:
            logger.exception("call %s: could not answer the offer", call.session_id)
            await self._discard(call, "setup_failed")
            return _error(500, "the call could not be set up")
        logger.info("call %s answered", call.session_id)
        return web.json_response({"sdp": answer.sdp, "type": answer.type, "session_id": call.session_id})

    # ---------------------------------------------------------------- helpers

    async def _discard(self, call: PeerCall, reason: str) -> None:
        """Close a call whose offer failed; a failure while closing is logged, never raised.

        The offer's own error is what the browser must hear, so it cannot be
        masked by a half-built peer connection that fails to close; and the call
        must not outlive the request in ``calls`` or, as a session, in the manager.
        """
        try:
            await call.close(reason)
        except Exception as exc:  # noqa: BLE001 - logged, and the cleanup below still runs
            logger.warning("call %s: closing after %s failed too (%s: %s)", call.session_id, reason,
                           type(exc).__name__, exc)
        finally:
            self.calls.pop(call.session_id, None)
            session = self.manager.sessions.get(call.session_id)
            if session is not None:
                try:
                    await session.cancel(reason)
                except Exception:
                    logger.exception("call %s: the session would not stop after %s", call.session_id, reason)

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
    except (ValueError, RecursionError):  # bad JSON or UTF-8, an over-long number, deep nesting
        raise _http_error(web.HTTPBadRequest, "the body must be JSON: {\"sdp\": ..., \"type\": \"offer\"}") from None
    if not isinstance(body, dict) or body.get("type") != "offer" or not isinstance(body.get("sdp"), str):
        raise _http_error(web.HTTPBadRequest, "expected {\"sdp\": string, \"type\": \"offer\"}")
    problem = sdp_offer_problem(body["sdp"])
    if problem:
        raise _http_error(web.HTTPBadRequest, f"unusable SDP offer: {problem}")
    return RTCSessionDescription(sdp=body["sdp"], type="offer")


_SDP_LINE = re.compile(r"[a-z]=[^\x00-\x08\x0a-\x1f\x7f]*")


def sdp_offer_problem(sdp: str) -> str | None:
    """Why ``sdp`` cannot be a browser's offer, or None; checked before aiortc sees it.

    aiortc's own parser fails on garbage with asserts and index errors, and a
    few structurally broken offers (a section without ``a=mid``, a BUNDLE group
    naming a missing section, a data channel without ``a=sctp-port``) get past
    it and fail later inside the peer connection. These checks turn all of
    them into a reason the page can show.
    """
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line]
    if not lines or lines[0] != "v=0":
        return "it must start with v=0"
    bad = next((line for line in lines if not _SDP_LINE.fullmatch(line)), None)
    if bad is not None:
        return f"malformed line {bad[:40]!r}"
    if not any(line.startswith("m=audio ") for line in lines):
        return "the offer has no audio section"
    if len([line for line in lines if line.startswith("m=")]) > 16:
        return "more than 16 media sections"
    try:
        parsed = aiortc_sdp.SessionDescription.parse(sdp)
    except Exception as exc:  # asserts, ValueError, IndexError, KeyError...
        return f"unparsable ({type(exc).__name__}: {exc})"[:200]
    mids = [media.rtp.muxId for media in parsed.media]
    if not all(mids):
        return "every media section needs an a=mid"
    if len(set(mids)) != len(mids):
        return "two media sections share an a=mid"
    for group in parsed.group:
        if any(item not in mids for item in group.items):
            return f"a=group:{group.semantic} names a media section that is not there"
    for media, mid in zip(parsed.media, mids):
        if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
            return f"no ICE credentials (a=ice-ufrag, a=ice-pwd) for section {mid[:20]!r}"
        if media.dtls is None or not media.dtls.fingerprints:
            return f"no DTLS fingerprint (a=fingerprint) for section {mid[:20]!r}"
        if media.kind not in ("audio", "video", "application"):
            return f"unknown media kind {media.kind[:20]!r}"
        if media.kind in ("audio", "video") and media.direction is None:
            return f"section {mid[:20]!r} has no direction (a=sendrecv, a=sendonly, ...)"
        if media.kind == "application" and media.sctp_port is None and not media.sctpmap:
            return f"data channel section {mid[:20]!r} has no a=sctp-port"
    return None


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
