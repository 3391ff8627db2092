"""The carrier media-stream server: one aiohttp app, one Session per call.

Routes (``{carrier}`` ∈ twilio, telnyx, vonage, plivo, exotel):

* ``GET /{carrier}/media`` — the WebSocket the carrier streams the call on;
* ``POST /twilio/voice``, ``POST /telnyx/texml``, ``GET|POST /plivo/answer``,
  ``GET /vonage/answer``, ``GET /exotel/stream`` — the incoming-call
  webhooks, answering with the instruction that connects the call to the
  media route. Each carrier's request is authenticated its own way when its
  secret is configured (Twilio ``X-Twilio-Signature``; Telnyx, Plivo, Vonage
  and Exotel as :mod:`.signatures` describes): a missing, forged or stale one
  gets 403 and a log line. A carrier without a secret is served unchecked,
  with one warning per process.

Each webhook answer carries a per-call token (:mod:`.stream_auth`), and a
media socket is served only once its ``start`` presents it (or its URL
does): no token, a forged, expired or replayed one, or one for another call
closes the socket with 1008 and the reason before any session exists. A
socket that sends no valid ``start`` within ``start_timeout_s`` (10 s) is
closed the same way. The app also carries the per-source limits of
:class:`transports.ratelimit.HttpLimits`.

Every call is started through the process's :class:`agent.calls.CallManager`
(``[CarrierInput, CallGuard?]`` + ``CarrierOutput`` around the bot), so
admission, drain, session hooks (MQTT bus, Prometheus) and results are the
same as for every transport. A refused call is turned away as
:mod:`transports.telephony.busy` describes: the carrier says "all our agents
are busy" and hangs up, or the socket closes with 1013 and the reason.

A malformed message (bad JSON, missing field, oversized or invalid base64)
closes *that* socket with a WebSocket close code and reason plus a log line;
every other call carries on.

Usage::

    server = CarrierServer(manager, carriers=["twilio"], port=8080,
                           public_url="https://bot.example.com", twilio_auth_token=TOKEN)
    await server.start()              # its own port, or:
    server.mount(worker_app)          # share another aiohttp app's port

``CarrierServer(my_bot, ...)`` (a bot factory instead of a manager) builds a
private manager, for scripts and tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlencode

from aiohttp import WSMsgType, web

from agent.calls import RETRY_AFTER_S, BotFactory, CallInfo, CallManager, CallRejected, new_session_id
from agent.frames import EventFrame
from agent.session import Session, SessionResult
from transports.ratelimit import HttpLimits, install_limits
from transports.telephony import busy, stream_auth, webhooks
from transports.telephony.carrier_api import CallControl
from transports.telephony.guard import CallLimits
from transports.telephony.media import CarrierInput, CarrierOutput
from transports.telephony.serializers import SERIALIZERS, CarrierSerializer, ProtocolError
from transports.telephony.serializers.base import (
    CLOSE_POLICY_VIOLATION,
    Cleared,
    DigitIn,
    MarkAck,
    MediaIn,
    StreamStart,
    StreamStop,
)
from transports.telephony.signatures import WebhookSecrets, check_request
from transports.telephony.stream_auth import StreamTokens

logger = logging.getLogger(__name__)

__all__ = ["BotFactory", "CarrierCall", "CarrierServer"]

_DIGITS = set("0123456789*#ABCD")

#: Carriers whose webhook was already reported as unauthenticated in this process.
_WARNED_UNAUTHENTICATED: set[str] = set()


def _warn_unauthenticated(carrier: str, setting: str) -> None:
    if carrier not in _WARNED_UNAUTHENTICATED:
        _WARNED_UNAUTHENTICATED.add(carrier)
        logger.warning("%s webhook is unauthenticated: anyone who reaches it gets a media stream; set %s",
                       carrier, setting)


class CarrierCall:
    """One carrier WebSocket: parses its messages, runs the bot's session."""

    def __init__(self, server: CarrierServer, ws: web.WebSocketResponse, serializer: CarrierSerializer,
                 remote: str = "", query_token: str | None = None) -> None:
        self.server, self.ws, self.serializer = server, ws, serializer
        self.query_token = query_token
        self.info = CallInfo(session_id="", transport=serializer.name, remote_address=remote)
        self.caller_digit_ids: set[int] = set()
        self.session: Session | None = None
        self.result: SessionResult | None = None
        self.input: CarrierInput | None = None
        self.output: CarrierOutput | None = None
        self.close_reason = ""
        # Caller audio and digits go through a queue to a feeder task, so the socket
        # reader never waits on the graph: marks, stops and clears are handled at once
        # even while the bot's output is applying backpressure.
        self._inbound: asyncio.Queue[tuple[str, bytes | str]] = asyncio.Queue(maxsize=500)
        self._dropped = 0
        self._closer: asyncio.Task[None] | None = None

    async def send(self, message: str | bytes) -> None:
        if self.ws.closed:
            return
        try:
            if isinstance(message, bytes):
                await self.ws.send_bytes(message)
            else:
                await self.ws.send_str(message)
        except (ConnectionError, RuntimeError) as exc:
            logger.info("call %s: send failed, socket gone: %s", self.info.call_id, exc)

    async def transfer(self, target: str) -> None:
        control = self.server.call_control.get(self.serializer.name)
        if control is None:
            logger.warning("call %s: transfer to %s requested but no %s credentials are configured",
                           self.info.call_id, target, self.serializer.name)
            await self._event("transfer_requested", {"target": target})
            return
        ok = await control.send(control.transfer_request(self.info, target))
        await self._event("transfer_accepted" if ok else "transfer_failed", {"target": target})

    async def _event(self, kind: str, data: dict[str, object]) -> None:
        if self.session is not None:
            await self.session.push(EventFrame(kind=kind, data={"call_id": self.info.call_id, **data}))

    async def run(self) -> None:
        session_task: asyncio.Task[SessionResult | None] | None = None
        loop = asyncio.get_running_loop()
        start_timeout = self.server.start_timeout_s
        deadline = loop.time() + start_timeout
        try:
            while True:
                # Until a valid start, the socket has ``start_timeout_s`` in all: a client
                # that connects and says nothing (or only chatter) does not hold it open.
                wait = None if session_task is not None else max(0.001, deadline - loop.time())
                try:
                    message = await self.ws.receive(timeout=wait)
                except asyncio.TimeoutError:
                    raise ProtocolError(f"no valid start within {start_timeout:g} s",
                                        CLOSE_POLICY_VIOLATION) from None
                if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    break
                if message.type == WSMsgType.TEXT or message.type == WSMsgType.BINARY:
                    events = self.serializer.parse(message.data)
                elif message.type == WSMsgType.ERROR:
                    logger.warning("call %s: websocket error %s", self.info.call_id, self.ws.exception())
                    break
                else:
                    continue
                for event in events:
                    if isinstance(event, StreamStart):
                        if session_task is not None or self.close_reason:
                            raise ProtocolError("second start message", CLOSE_POLICY_VIOLATION)
                        self._authenticate(event)
                        session_task = await self._start(event)
                        if session_task is None:
                            break  # refused: _start closed the socket
                    elif isinstance(event, MediaIn) and self.input is not None:
                        self._enqueue("audio", event.pcm)
                    elif isinstance(event, MarkAck) and self.output is not None:
                        await self.output.on_mark(event.name)
                    elif isinstance(event, DigitIn) and self.input is not None:
                        if event.digit.upper() in _DIGITS and len(event.digit) == 1:
                            self._enqueue("digit", event.digit.upper())
                        else:
                            logger.warning("call %s: ignoring bad DTMF digit %r", self.info.call_id, event.digit[:8])
                    elif isinstance(event, StreamStop):
                        self.close_reason = "caller_hangup"
                        break
                    elif isinstance(event, Cleared):
                        pass
                if self.close_reason:
                    break
                if session_task is not None and session_task.done():
                    break  # the bot ended the call
        except ProtocolError as exc:
            who = self.info.call_id or f"? from {self.info.remote_address or 'unknown address'}"
            logger.warning("call %s (%s): %s; closing the socket with %d", who, self.serializer.name, exc.reason,
                           exc.close_code)
            self.close_reason = "protocol_error"
            await self.ws.close(code=exc.close_code, message=exc.reason.encode()[:120])
        finally:
            if session_task is not None:
                if not session_task.done() and self.session is not None:
                    await self.session.cancel(self.close_reason or "caller_hangup")
                result = (await asyncio.gather(session_task, return_exceptions=True))[0]
                self.result = result if isinstance(result, SessionResult) else None
            if not self.ws.closed:
                await self.ws.close()

    def _authenticate(self, start: StreamStart) -> None:
        """Check the stream's token (URL query or custom parameter); ProtocolError 1008 if it fails.

        The token is removed from the parameters either way, so it never reaches
        the call's metadata (the bus, logs, the bot).
        """
        supplied = start.parameters.pop(stream_auth.PARAMETER, None) or self.query_token
        tokens = self.server.stream_tokens
        if tokens is None:
            return
        problem = tokens.check(supplied, self.serializer.name, start.call_id)
        if problem:
            raise ProtocolError(f"{problem}; use the stream URL and parameters from our webhook answer",
                                CLOSE_POLICY_VIOLATION)

    def _enqueue(self, kind: str, item: bytes | str) -> None:
        if self._inbound.full():
            self._inbound.get_nowait()  # the graph is stalled: keep the newest audio
            self._dropped += 1
            if self._dropped == 1:
                logger.warning("call %s: the bot is not keeping up; dropping old caller audio", self.info.call_id)
        self._inbound.put_nowait((kind, item))

    async def _feed(self) -> None:
        assert self.input is not None
        while True:
            kind, item = await self._inbound.get()
            if kind == "audio":
                await self.input.audio(item)  # type: ignore[arg-type]
            else:
                await self.input.digit(item)  # type: ignore[arg-type]

    async def _start(self, start: StreamStart) -> asyncio.Task[SessionResult | None] | None:
        """Start the call through the manager; None when it was refused (socket closed)."""
        server = self.server
        self.info = CallInfo(
            session_id=new_session_id(), transport=self.serializer.name,
            input_sample_rate=server.graph_sample_rate, output_sample_rate=self.serializer.sample_rate,
            caller=start.from_number, callee=start.to_number, call_id=start.call_id or start.stream_id,
            remote_address=self.info.remote_address, codec=start.encoding, metadata=dict(start.parameters),
        )
        self.input = CarrierInput(self)
        self.output = CarrierOutput(self, lead_s=server.lead_s)
        try:
            self.session = await server.manager.start_call(
                self.info, [self.input, *server.limits.guard()], self.output,
                max_duration_s=server.limits.hard_limit_s)
        except CallRejected as exc:
            await self._refuse(exc.reason)
            return None
        loop = asyncio.get_running_loop()
        feeder = loop.create_task(self._feed())

        async def until_ended() -> SessionResult | None:
            try:
                return await server.manager.wait(self.info.session_id)
            finally:
                feeder.cancel()
                if not self.close_reason:
                    self._closer = loop.create_task(self._session_done())

        return loop.create_task(until_ended())

    async def _refuse(self, reason: str) -> None:
        """Busy or draining: the carrier says so (with REST credentials), then the socket closes."""
        self.close_reason = "refused"
        logger.info("call %s (%s) refused: %s", self.info.call_id, self.serializer.name, reason)
        control = self.server.call_control.get(self.serializer.name)
        if control is not None:
            request = busy.busy_redirect_request(control, self.info)
            await control.send(request if request is not None else control.hangup_request(self.info))
        await self.ws.close(code=busy.CLOSE_TRY_AGAIN_LATER, message=busy.close_reason(reason))

    async def _session_done(self) -> None:
        """The bot hung up (or failed): close the stream, and the call if we can."""
        if self.close_reason:
            return
        self.close_reason = "bot_ended"
        control = self.server.call_control.get(self.serializer.name)
        if control is not None:
            await control.send(control.hangup_request(self.info))
        if not self.ws.closed:
            await self.ws.close(code=1000, message=b"call ended")


class CarrierServer:
    """Carrier media streams and their incoming-call webhooks, for one or more carriers."""

    def __init__(
        self,
        manager: CallManager | BotFactory,
        *,
        carriers: Iterable[str] = tuple(SERIALIZERS),
        host: str = "127.0.0.1",
        port: int = 8080,
        public_url: str | None = None,
        graph_sample_rate: int = 16000,
        lead_s: float = 0.3,
        limits: CallLimits | None = None,
        twilio_auth_token: str | None = None,
        call_control: dict[str, CallControl] | None = None,
        max_message_bytes: int = 256 * 1024,
        reuse_port: bool = False,
        stream_tokens: StreamTokens | None = None,
        require_stream_token: bool = True,
        start_timeout_s: float = 10.0,
        http_limits: HttpLimits | None = None,
        webhook_secrets: WebhookSecrets | None = None,
    ) -> None:
        unknown = set(carriers) - set(SERIALIZERS)
        if unknown:
            raise ValueError(f"unknown carrier(s) {sorted(unknown)}; choose from {sorted(SERIALIZERS)}")
        self.manager = manager if isinstance(manager, CallManager) else CallManager(manager)
        self.carriers = list(carriers)
        self.host, self.port = host, port
        self.public_url = public_url
        self.graph_sample_rate = graph_sample_rate
        self.lead_s = lead_s
        self.limits = limits or CallLimits()
        self.twilio_auth_token = twilio_auth_token
        #: Telnyx, Plivo, Vonage and Exotel webhook secrets (from the environment by default).
        self.webhook_secrets = webhook_secrets if webhook_secrets is not None else WebhookSecrets.from_env()
        self.call_control = call_control or {}
        self.max_message_bytes = max_message_bytes
        self.reuse_port = reuse_port
        #: Issues the tokens our webhook answers carry and checks them at ``start``; None
        #: (``require_stream_token=False``) accepts any stream, for a stream URL configured
        #: at the carrier by hand instead of through our webhook.
        self.tokens = stream_tokens or StreamTokens()
        self.stream_tokens: StreamTokens | None = self.tokens if require_stream_token else None
        self.start_timeout_s = start_timeout_s
        self.calls: set[CarrierCall] = set()
        self.http_limits = http_limits or HttpLimits()
        self.app = web.Application(client_max_size=self.http_limits.max_body_bytes)
        install_limits(self.app, self.http_limits)
        self.mount(self.app)
        self._runner: web.AppRunner | None = None

    def mount(self, app: web.Application) -> None:
        """Add the media and webhook routes to ``app`` (e.g. a worker's, to share its port)."""
        for carrier in self.carriers:
            app.router.add_get(f"/{carrier}/media", self._media_handler(carrier))
        if "twilio" in self.carriers:
            app.router.add_post("/twilio/voice", self._twilio_voice)
        if "telnyx" in self.carriers:
            app.router.add_post("/telnyx/texml", self._webhook("telnyx"))
        if "plivo" in self.carriers:
            app.router.add_route("*", "/plivo/answer", self._webhook("plivo"))
        if "vonage" in self.carriers:
            app.router.add_get("/vonage/answer", self._webhook("vonage"))
        if "exotel" in self.carriers:
            app.router.add_get("/exotel/stream", self._webhook("exotel"))

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_port=self.reuse_port or None)
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        logger.info("carrier media server on %s:%s (%s)", self.host, self.port, ", ".join(self.carriers))

    async def stop(self) -> None:
        for call in list(self.calls):
            if not call.ws.closed:
                await call.ws.close(code=1001, message=b"server shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def close(self) -> None:
        """Same as :meth:`stop` (the serving plugin contract)."""
        await self.stop()

    def _refusal(self, carrier: str) -> str | None:
        try:
            self.manager.admit(carrier)
        except CallRejected as exc:
            return exc.reason
        return None

    def _busy_response(self, carrier: str, reason: str) -> web.Response:
        logger.info("%s webhook: refusing the call (%s)", carrier, reason)
        status, body, content_type = busy.busy_webhook_answer(carrier)
        headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
        return web.Response(status=status, text=body, content_type=content_type, headers=headers)

    def stream_url(self, carrier: str, request: web.Request | None = None) -> str:
        """The media WebSocket's address, without a token (for logs and carrier consoles)."""
        base = self.public_url or (f"http://{request.host}" if request is not None else f"http://{self.host}:{self.port}")
        return base.replace("https://", "wss://").replace("http://", "ws://").rstrip("/") + f"/{carrier}/media"

    def media_url(self, carrier: str, call_id: str = "", request: web.Request | None = None) -> str:
        """The media WebSocket's address with a fresh token in the query (``call_id`` binds it).

        What our Exotel answer returns; for scripts and tests that play a
        carrier without going through the webhook.
        """
        token = self.tokens.issue(carrier, call_id)
        return f"{self.stream_url(carrier, request)}?{urlencode({stream_auth.QUERY: token})}"

    def _media_handler(self, carrier: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            ws = web.WebSocketResponse(max_msg_size=self.max_message_bytes, heartbeat=30.0)
            await ws.prepare(request)
            call = CarrierCall(self, ws, SERIALIZERS[carrier](), remote=request.remote or "",
                               query_token=request.query.get(stream_auth.QUERY))
            self.calls.add(call)
            try:
                await call.run()
            except Exception:
                logger.exception("call %s (%s): unexpected failure", call.info.call_id or "?", carrier)
                if not ws.closed:
                    await ws.close(code=1011, message=b"internal error")
            finally:
                self.calls.discard(call)
            return ws

        return handler

    def _called_url(self, request: web.Request) -> str:
        """The URL the carrier called, which is what it signs (our public address behind a proxy)."""
        return (self.public_url.rstrip("/") + request.path_qs) if self.public_url else str(request.url)

    async def _twilio_voice(self, request: web.Request) -> web.Response:
        body = await request.text()
        params = webhooks.form_params(body)
        if self.twilio_auth_token is None:
            _warn_unauthenticated("twilio", "TWILIO_AUTH_TOKEN")
        else:
            url = self._called_url(request)
            if not webhooks.validate_twilio_signature(self.twilio_auth_token, url, params,
                                                      request.headers.get("X-Twilio-Signature")):
                logger.warning("twilio webhook from %s: bad or missing X-Twilio-Signature", request.remote)
                return web.Response(status=403, text="invalid signature")
        reason = self._refusal("twilio")
        if reason:
            return self._busy_response("twilio", reason)
        call_id = params.get("CallSid", "")
        parameters = {k: params[k] for k in ("From", "To", "CallSid") if k in params}
        # Twilio takes no query string in a <Stream> URL: the token goes as a <Parameter>.
        parameters[stream_auth.PARAMETER] = self.tokens.issue("twilio", call_id)
        twiml = webhooks.twiml_connect_stream(self.stream_url("twilio", request), parameters)
        return web.Response(text=twiml, content_type="application/xml")

    def _webhook(self, carrier: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        """The answer webhook of Telnyx, Plivo, Vonage or Exotel, with the stream's token in it."""

        async def handler(request: web.Request) -> web.Response:
            raw = await request.read()
            if not self.webhook_secrets.configured(carrier):
                _warn_unauthenticated(carrier, _WEBHOOK_SECRET_ENV[carrier])
            else:
                problem = check_request(carrier, self.webhook_secrets, method=request.method,
                                        url=self._called_url(request), headers=request.headers, body=raw)
                if problem:
                    logger.warning("%s webhook from %s refused: %s", carrier, request.remote, problem)
                    return web.Response(status=403, text="invalid signature")
            params = dict(request.query)
            if request.method == "POST":
                params.update(webhooks.form_params(raw.decode("utf-8", "replace")))
            reason = self._refusal(carrier)
            if reason:
                return self._busy_response(carrier, reason)
            call_id = params.get(_WEBHOOK_CALL_ID[carrier] or "", "")
            token = self.tokens.issue(carrier, call_id)
            url = self.stream_url(carrier, request)
            if carrier == "telnyx":
                body = webhooks.texml_connect_stream(url, {stream_auth.PARAMETER: token})
            elif carrier == "plivo":
                body = webhooks.plivo_stream_xml(url, {stream_auth.PARAMETER: token})
            elif carrier == "vonage":
                headers = {stream_auth.PARAMETER: token, **({"uuid": call_id} if call_id else {})}
                return web.Response(text=webhooks.vonage_ncco(url, headers), content_type="application/json")
            else:  # exotel: the token rides in the URL's query
                return web.Response(text=webhooks.exotel_stream_url(self.media_url(carrier, call_id, request)),
                                    content_type="application/json")
            return web.Response(text=body, content_type="application/xml")

        return handler


#: The webhook parameter naming the call, whose id the stream's ``start`` repeats; the token is
#: bound to it. Telnyx's TeXML ``CallSid`` need not equal the stream's ``call_control_id``, so
#: its tokens are bound to the carrier only (still single-use and short-lived).
_WEBHOOK_SECRET_ENV = {"telnyx": "TELNYX_PUBLIC_KEY", "plivo": "PLIVO_AUTH_TOKEN",
                       "vonage": "VONAGE_SIGNATURE_SECRET", "exotel": "EXOTEL_WEBHOOK_USER/EXOTEL_WEBHOOK_PASSWORD"}

_WEBHOOK_CALL_ID: dict[str, str | None] = {
    "twilio": "CallSid", "telnyx": None, "plivo": "CallUUID", "vonage": "uuid", "exotel": "CallSid",
}
