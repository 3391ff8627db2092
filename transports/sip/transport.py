"""SIP as a voxwire transport: every call is a Session run by the CallManager.

``SipServer`` answers INVITEs on one UDP port and places calls out. For each
call it opens an RTP port, negotiates G.711 in SDP and hands
``[RtpInput, CallGuard?]`` + ``RtpOutput`` to the process's
:class:`agent.calls.CallManager`, which builds the bot's graph between them.
So admission (a busy or draining worker answers ``503 Service Unavailable``
with ``Retry-After``), drain, session hooks (the MQTT bus, Prometheus) and
results are the same as for every other transport. Calls share the event
loop and nothing else: a bot that raises ends its own call (with a BYE),
never its neighbours.

Usage::

    manager = CallManager(my_bot, max_sessions=50)
    server = SipServer(manager, host="0.0.0.0", port=5060, advertised_host="203.0.113.7")
    await server.start()
    ...
    call = await server.call("sip:alice@10.0.0.5", ("10.0.0.5", 5060))  # call-back

``SipServer(my_bot, ...)`` (a bot factory instead of a manager) builds a
private manager, for scripts and tests.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import weakref
from collections.abc import Awaitable
from typing import Any

from agent.calls import RETRY_AFTER_S, BotFactory, CallInfo, CallManager, CallRejected, new_session_id
from agent.frames import DTMFFrame, EventFrame
from agent.session import Session, SessionResult
from transports.ratelimit import SipLimits
from transports.rtp.session import RtpSession
from transports.sip import sdp
from transports.sip.auth import Credentials
from transports.sip.dialog import Dialog
from transports.sip.media import RtpInput, RtpOutput
from transports.sip.message import SipMessage, parse_name_addr, parse_uri
from transports.sip.useragent import CallFailed, IncomingInvite, UserAgent
from transports.telephony.guard import CallLimits

logger = logging.getLogger(__name__)

__all__ = ["BotFactory", "SipCall", "SipServer"]

#: Caller hang-ups and transfers already ended the dialog: no BYE from us.
_REMOTE_ENDED = ("caller_hangup", "transferred")
#: The running SIP server of each manager, for dialers that get only the manager.
_SERVING: weakref.WeakKeyDictionary[CallManager, SipServer] = weakref.WeakKeyDictionary()


class SipCall:
    """One call: its dialog, its RTP stream and the session running the bot."""

    def __init__(self, server: SipServer, info: CallInfo, rtp: RtpSession, manager: CallManager | None = None) -> None:
        self.server, self.info, self.rtp = server, info, rtp
        self.manager = manager or server.manager
        self.dialog: Dialog | None = None
        self.session: Session | None = None
        self.caller_digit_ids: set[int] = set()
        self.ended = asyncio.Event()
        self.result: SessionResult | None = None
        self._sdp_version = 1
        self._sdp_session_id = secrets.randbelow(2**31)
        self._remote_gone = False

    # -------------------------------------------------------- DialogListener

    def on_bye(self) -> None:
        self._remote_gone = True
        self._end("caller_hangup")

    def on_ack_timeout(self) -> None:
        self._end("no_ack")

    def on_offer(self, body: bytes) -> bytes | None:
        """re-INVITE: hold/resume or new media address."""
        try:
            offer = sdp.parse(body.decode("utf-8", "replace"))
            picked = sdp.negotiate(offer)
        except sdp.SdpError as exc:
            logger.warning("call %s: bad re-INVITE SDP: %s", self.info.call_id, exc)
            return None
        if picked is None:
            return None
        index, agreed = picked
        self._apply(agreed)
        self._sdp_version += 1
        self._notify("hold" if agreed.on_hold else "resume", {"direction": agreed.direction})
        return self._answer(offer, index, agreed)

    def on_request(self, request: SipMessage) -> int:
        if request.method == "INFO":
            return self._on_info(request)
        if request.method == "NOTIFY":
            return self._on_refer_progress(request)
        return 489

    # ---------------------------------------------------------------- media

    def _apply(self, agreed: sdp.Negotiated) -> None:
        self.rtp.set_codec(agreed.codec, agreed.payload_type, agreed.dtmf_payload_type)
        self.rtp.set_remote(agreed.remote_host, agreed.remote_port)
        self.rtp.send_enabled = agreed.direction in ("sendrecv", "sendonly")

    def _answer(self, offer: sdp.Session, index: int, agreed: sdp.Negotiated) -> bytes:
        return sdp.build_answer(
            offer, index, agreed, local_ip=self.server.media_host, local_port=self.rtp.local_port,
            session_id=self._sdp_session_id, version=self._sdp_version,
        ).encode()

    def _offer(self) -> bytes:
        return sdp.build_offer(local_ip=self.server.media_host, local_port=self.rtp.local_port,
                               session_id=self._sdp_session_id, version=self._sdp_version).encode()

    def _on_info(self, request: SipMessage) -> int:
        kind = (request.get("Content-Type") or "").lower()
        if "dtmf" not in kind:
            return 415
        lines = request.body.decode("utf-8", "replace").splitlines()
        fields = dict(line.split("=", 1) for line in lines if "=" in line)
        digit = fields.get("Signal", "").strip()
        if len(digit) != 1 or digit.upper() not in "0123456789*#ABCD":
            return 400
        frame = DTMFFrame(digit=digit.upper())
        self.caller_digit_ids.add(frame.id)
        self._push(frame)
        return 200

    def _on_refer_progress(self, request: SipMessage) -> int:
        status_line = request.body.decode("utf-8", "replace").split("\r\n", 1)[0].split("\n", 1)[0]
        parts = status_line.split(" ", 2)
        if len(parts) >= 2 and parts[1].isdigit():
            status = int(parts[1])
            if 200 <= status < 300:
                self._end("transferred", bye=True)
            elif status >= 300:
                self._notify("transfer_failed", {"status": status})
        return 200

    # -------------------------------------------------------------- control

    def _push(self, frame: Any) -> None:
        if self.session is not None:
            asyncio.get_running_loop().create_task(self.session.push(frame))

    def _notify(self, kind: str, data: dict[str, Any]) -> None:
        self._push(EventFrame(kind=kind, data={"call_id": self.info.call_id, **data}))

    def _end(self, reason: str, *, bye: bool = False) -> None:
        if bye and self.dialog is not None and not self._remote_gone:
            self._remote_gone = True
            self.server._spawn(self._bye(), "BYE")
        if self.session is not None:
            asyncio.get_running_loop().create_task(self.session.cancel(reason))
        else:
            self.ended.set()

    async def _bye(self) -> None:
        if self.dialog is None:
            return
        try:
            await self.server.ua.request_in_dialog(self.dialog, "BYE")
        except CallFailed as exc:
            logger.info("call %s: BYE got %s", self.info.call_id, exc)

    async def hangup(self) -> None:
        """End the call now from outside the graph (BYE, then the session ends)."""
        self._end("hangup", bye=True)

    async def transfer(self, target: str) -> bool:
        """Blind transfer with REFER; the call ends when the far end reports success."""
        if self.dialog is None:
            return False
        refer_to = target if target.startswith(("sip:", "sips:", "tel:")) else f"tel:{target}"
        try:
            response = await self.server.ua.request_in_dialog(
                self.dialog, "REFER", headers=[("Refer-To", f"<{refer_to}>"), ("Referred-By", self.server.ua.contact)])
        except CallFailed as exc:
            response_status = exc.status
        else:
            response_status = response.status or 0
        if 200 <= response_status < 300:
            self._notify("transfer_accepted", {"target": target})
            return True
        logger.warning("call %s: REFER to %s refused with %s", self.info.call_id, target, response_status)
        self._notify("transfer_failed", {"target": target, "status": response_status})
        return False

    async def start(self) -> Session:
        """Hand the call to the manager (raises CallRejected, or the bot factory's error)."""
        server = self.server
        self.session = await self.manager.start_call(
            self.info, [RtpInput(self), *server.limits.guard()], RtpOutput(self),
            max_duration_s=server.limits.hard_limit_s)
        return self.session

    async def finish(self) -> SessionResult | None:
        """Wait for the session to end, then release the dialog and the RTP port."""
        try:
            self.result = await self.manager.wait(self.info.session_id)
        finally:
            if self.result is None or self.result.reason not in _REMOTE_ENDED:
                if not self._remote_gone and self.dialog is not None:
                    self._remote_gone = True
                    await self._bye()
            self.rtp.close()
            self.ended.set()
            if self.server._calls.get(self.info.call_id) is self:
                del self.server._calls[self.info.call_id]
            logger.info("call %s (session %s) ended: %s", self.info.call_id, self.info.session_id,
                        self.result.reason if self.result else "error")
        return self.result


class SipServer:
    """Answers SIP calls with a bot; also places calls out (call-backs)."""

    def __init__(
        self,
        manager: CallManager | BotFactory,
        *,
        host: str = "127.0.0.1",
        port: int = 5060,
        advertised_host: str | None = None,
        graph_sample_rate: int = 16000,
        limits: CallLimits | None = None,
        ring_s: float = 0.0,
        user_agent: str = "voxwire",
        reuse_port: bool = False,
        rate_limits: SipLimits | None = None,
    ) -> None:
        self.manager = manager if isinstance(manager, CallManager) else CallManager(manager)
        self.graph_sample_rate = graph_sample_rate
        self.limits = limits or CallLimits()
        self.ring_s = ring_s
        self.reuse_port = reuse_port
        self.media_host = advertised_host or host
        self.rtp_bind = host
        self.ua = UserAgent(host=host, port=port, advertised_host=advertised_host, on_invite=self._on_invite,
                            user_agent=user_agent, limiter=(rate_limits or SipLimits()).limiter())
        self._calls: dict[str, SipCall] = {}

    @property
    def port(self) -> int:
        return self.ua.port

    @property
    def calls(self) -> dict[str, SipCall]:
        """Live calls by SIP Call-ID."""
        return dict(self._calls)

    @classmethod
    def serving(cls, manager: CallManager) -> SipServer | None:
        """The started SIP server whose calls ``manager`` runs, if any (outbound dialers use it)."""
        return _SERVING.get(manager)

    async def start(self) -> None:
        await self.ua.start(reuse_port=self.reuse_port)
        _SERVING.setdefault(self.manager, self)
        logger.info("SIP server listening on udp %s:%s", self.ua.host, self.ua.port)

    async def stop(self) -> None:
        if _SERVING.get(self.manager) is self:
            del _SERVING[self.manager]
        for call in list(self._calls.values()):
            await call.hangup()
        if self._calls:
            await asyncio.wait([asyncio.ensure_future(c.ended.wait()) for c in self._calls.values()], timeout=2.0)
        self.ua.close()

    async def close(self) -> None:
        """Same as :meth:`stop` (the serving plugin contract)."""
        await self.stop()

    def _spawn(self, coro: Awaitable[object], what: str) -> None:
        self.ua._spawn(coro, what)

    def _call_info(self, *, call_id: str, direction: str, caller: str, callee: str, remote: tuple[str, int],
                   codec: str = "", metadata: dict[str, Any] | None = None) -> CallInfo:
        return CallInfo(session_id=new_session_id(), transport="sip", input_sample_rate=self.graph_sample_rate,
                        output_sample_rate=8000, caller=caller, callee=callee, direction=direction,
                        call_id=call_id, remote_address=f"{remote[0]}:{remote[1]}", codec=codec,
                        metadata=metadata or {})

    @staticmethod
    def _refuse(invite: IncomingInvite, reason: str) -> None:
        """503 with Retry-After: a proxy or trunk tries another worker or retries later."""
        logger.info("call %s refused: %s", invite.request.call_id, reason)
        invite.reject(503, "Service Unavailable", headers=[
            ("Retry-After", str(RETRY_AFTER_S)), ("Reason", f'SIP;cause=503;text="{reason}"')])

    async def _on_invite(self, invite: IncomingInvite) -> None:
        request = invite.request
        try:
            self.manager.admit("sip")  # before an RTP port or the bot is spent on it
        except CallRejected as exc:
            self._refuse(invite, exc.reason)
            return
        try:
            offer = sdp.parse(request.body.decode("utf-8", "replace")) if request.body else None
            picked = sdp.negotiate(offer) if offer is not None else None
        except sdp.SdpError as exc:
            logger.warning("call %s: unusable SDP offer: %s", request.call_id, exc)
            invite.reject(488, "Not Acceptable Here")
            return
        if offer is None or picked is None:
            invite.reject(488, "Not Acceptable Here")
            return
        index, agreed = picked
        rtp = RtpSession(codec=agreed.codec, payload_type=agreed.payload_type,
                         dtmf_payload_type=agreed.dtmf_payload_type)
        await rtp.open(self.rtp_bind, 0)
        info = self._call_info(
            call_id=request.call_id, direction="inbound", caller=_user_of(request.get("From")),
            callee=_user_of(request.get("To")), remote=invite.addr, codec=agreed.codec,
            metadata={k: v for k, v in request.headers if k.lower().startswith("x-")},
        )
        call = SipCall(self, info, rtp)
        call._apply(agreed)
        invite.ring()
        if self.ring_s:
            try:
                await asyncio.wait_for(invite.cancelled.wait(), timeout=self.ring_s)
            except TimeoutError:
                pass
        if invite.cancelled.is_set() or invite.done:
            rtp.close()
            logger.info("call %s: cancelled by the caller before answer", info.call_id)
            return
        try:
            session = await call.start()
        except CallRejected as exc:
            rtp.close()
            self._refuse(invite, exc.reason)
            return
        except Exception:
            logger.exception("call %s: the bot could not be started", info.call_id)
            rtp.close()
            invite.reject(500, "Server Internal Error")
            return
        if invite.cancelled.is_set() or invite.done:  # CANCEL while the bot was being built
            logger.info("call %s: cancelled by the caller before answer", info.call_id)
            await session.cancel("caller_cancelled")
            await call.finish()
            return
        try:
            call.dialog = invite.accept(call._answer(offer, index, agreed), call)
        except Exception:
            logger.exception("call %s: could not answer the INVITE", info.call_id)
            invite.reject(500, "Server Internal Error")
        if call.dialog is None:  # never answered: the session must not outlive the INVITE
            await session.cancel("not_answered")
            await call.finish()
            return
        self._calls[info.call_id] = call
        await call.finish()

    async def call(
        self,
        target: str,
        addr: tuple[str, int],
        *,
        from_uri: str | None = None,
        credentials: Credentials | None = None,
        timeout: float = 60.0,
        metadata: dict[str, Any] | None = None,
        bot: BotFactory | None = None,
    ) -> SipCall:
        """Place an outbound call; returns once answered, the bot running in the background.

        Raises ``CallRejected`` before dialling when this process would not
        take the call, and ``CallFailed`` when the far end refuses it.
        ``bot`` runs this call instead of the manager's bot, outside its
        admission and hooks: a leg of a call already admitted (a warm
        transfer's briefing of the human) must not be refused by a full worker.
        """
        manager = CallManager(bot) if bot is not None else self.manager
        manager.admit("sip")
        rtp = RtpSession()
        await rtp.open(self.rtp_bind, 0)
        info = self._call_info(call_id="", direction="outbound", caller=_user_of(from_uri or self.ua.contact),
                               callee=_user_of(f"<{target}>"), remote=addr, metadata=metadata)
        call = SipCall(self, info, rtp, manager)
        try:
            dialog, response = await asyncio.wait_for(
                self.ua.invite(target, addr, call._offer(), lambda d, r: call, from_uri=from_uri,
                               credentials=credentials), timeout)
            agreed = sdp.read_answer(sdp.parse(response.body.decode("utf-8", "replace")))
        except BaseException:
            rtp.close()
            raise
        call.dialog = dialog
        info.call_id = dialog.call_id
        info.codec = agreed.codec
        call._apply(agreed)
        try:
            await call.start()
        except BaseException:  # refused (a race with other calls) or the bot failed: hang up what we placed
            call._remote_gone = True
            await call._bye()
            rtp.close()
            raise
        self._calls[info.call_id] = call
        self._spawn(call.finish(), f"outbound call {info.call_id}")
        return call


def _user_of(name_addr: str | None) -> str:
    if not name_addr:
        return ""
    try:
        return parse_uri(parse_name_addr(name_addr).uri).user
    except ValueError:
        return ""
