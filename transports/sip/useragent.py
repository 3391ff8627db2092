"""A SIP user agent on one UDP socket: answers calls (UAS) and places them (UAC).

The UA does signalling only. What a call *is* (media, the bot's graph) lives
behind the :class:`DialogListener` a transport attaches to each dialog, and
behind the ``on_invite`` coroutine that decides whether to answer. Every
datagram is handled in isolation: a malformed one gets ``400 Bad Request``
naming the problem (when it can be answered at all; ``505`` for another SIP
version, ``416`` for a Request-URI scheme other than sip, sips or tel) or is
dropped with a log line, and an exception while handling one call never
reaches another. With a ``limiter``, a source over its datagram rate is
dropped before parsing (an INVITE gets ``503`` with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Protocol

from transports.ratelimit import RateLimiter
from transports.sip import message as sipmsg
from transports.sip.dialog import (
    ALLOW,
    Dialog,
    contact_uri,
    dialog_key,
    new_tag,
    strip_tag,
)
from transports.sip.message import SipMessage, SipParseError, make_response
from transports.sip.transactions import TIMEOUT, ClientTransaction, ServerTransaction, retransmit
from transports.sip.uac import CallFailed, UacMixin

logger = logging.getLogger(__name__)

__all__ = ["CallFailed", "DialogListener", "IncomingInvite", "UserAgent"]

SDP = "application/sdp"
#: Request-URI schemes this UA serves (RFC 3261 §8.2.2.1: anything else gets 416).
SCHEMES = ("sip", "sips", "tel")


class DialogListener(Protocol):
    """What the UA tells the owner of a dialog (the call)."""

    def on_bye(self) -> None: ...
    def on_offer(self, body: bytes) -> bytes | None: ...  # re-INVITE; None → 488
    def on_request(self, request: SipMessage) -> int: ...  # INFO / NOTIFY → status
    def on_ack_timeout(self) -> None: ...


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, ua: UserAgent) -> None:
        self.ua = ua

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.ua._datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        logger.debug("sip: socket error %s", exc)


class IncomingInvite:
    """An INVITE we have not answered yet: ring it, accept it or refuse it."""

    def __init__(self, ua: UserAgent, request: SipMessage, txn: ServerTransaction) -> None:
        self.ua, self.request, self.txn = ua, request, txn
        self.addr = txn.addr
        self.to_tag = new_tag()
        self.cancelled = asyncio.Event()
        self.dialog: Dialog | None = None

    @property
    def done(self) -> bool:
        return self.txn.final

    def ring(self) -> None:
        if not self.done:
            self.ua._respond(self.txn, make_response(self.request, 180, to_tag=self.to_tag))

    def reject(self, status: int, reason: str | None = None, *,
               headers: list[tuple[str, str]] | None = None) -> None:
        if not self.done:
            response = make_response(self.request, status, reason, to_tag=self.to_tag, headers=headers)
            self.ua._respond(self.txn, response)

    def accept(self, sdp: bytes, listener: DialogListener) -> Dialog | None:
        """Send 200 OK with our answer; retransmitted until the ACK arrives."""
        if self.done:
            return None
        request = self.request
        dialog = Dialog(
            call_id=request.call_id,
            local_tag=self.to_tag,
            remote_tag=request.from_tag,
            local_uri=strip_tag(request.get("To") or ""),
            remote_uri=strip_tag(request.get("From") or ""),
            remote_target=contact_uri(request) or (request.uri or ""),
            peer=self.addr,
            local_contact=self.ua.contact,
            is_uas=True,
            remote_cseq=request.cseq[0],
            route_set=request.get_all("Record-Route"),
        )
        self.dialog = dialog
        self.ua._dialogs[dialog.key] = (dialog, listener)
        response = make_response(request, 200, to_tag=self.to_tag, body=sdp, headers=self.ua._ok_headers(SDP))
        for route in dialog.route_set:
            response.add("Record-Route", route)
        self.ua._respond(self.txn, response, reliable=dialog)
        return dialog


class UserAgent(UacMixin):
    """SIP over UDP on one socket; thousands of dialogs, one event loop."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 5060,
        advertised_host: str | None = None,
        on_invite: Callable[[IncomingInvite], Awaitable[None]] | None = None,
        user_agent: str = "voxwire",
        limiter: RateLimiter | None = None,
    ) -> None:
        self.host, self.port = host, port
        #: Datagrams per source address (``RateLimiter.allow(addr[0])``); None: unlimited.
        self.limiter = limiter
        self.rate_limited = 0
        # A flooding source gets a few 503s and one log line per 10 s, not one per datagram.
        self._busy_replies = RateLimiter(rate=1.0, burst=3, max_keys=4096)
        self._flood_notes = RateLimiter(rate=0.1, burst=1, max_keys=4096)
        self.advertised_host = advertised_host or host
        self.on_invite = on_invite
        self.user_agent = user_agent
        self._transport: asyncio.DatagramTransport | None = None
        self._server_txns: dict[tuple[str, str], ServerTransaction] = {}
        self._invites: dict[str, IncomingInvite] = {}  # INVITE branch → pending
        self._client_txns: dict[tuple[str, str], ClientTransaction] = {}
        self._dialogs: dict[tuple[str, str, str], tuple[Dialog, DialogListener]] = {}
        self._acked: dict[tuple[str, int], asyncio.Event] = {}
        self._uac_acks: dict[tuple[str, int], tuple[bytes, tuple[str, int]]] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self.malformed = 0

    @property
    def contact(self) -> str:
        return f"<sip:{self.user_agent}@{self.advertised_host}:{self.port}>"

    async def start(self, *, reuse_port: bool = False) -> None:
        """Bind the UDP socket; ``reuse_port`` lets sibling worker processes share the port."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Endpoint(self), local_addr=(self.host, self.port),
                                                           reuse_port=reuse_port or None)
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # ------------------------------------------------------------ plumbing

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(data, addr)

    def _spawn(self, coro: Awaitable[object], what: str) -> asyncio.Task[object]:
        async def guarded() -> object:
            try:
                return await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("sip: %s failed", what)
                return None

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _later(self, delay: float, fn: Callable[[], object]) -> None:
        asyncio.get_running_loop().call_later(delay, fn)

    def _ok_headers(self, content_type: str | None = None) -> list[tuple[str, str]]:
        headers = [("Contact", self.contact), ("Allow", ALLOW), ("Server", self.user_agent)]
        if content_type:
            headers.append(("Content-Type", content_type))
        return headers

    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.limiter is not None and not self.limiter.allow(addr[0]):
            self._over_limit(data, addr)
            return
        if not data.strip():
            return  # CRLF keep-alive (RFC 5626)
        try:
            msg = sipmsg.parse(data)
        except SipParseError as exc:
            self._malformed(exc, addr)
            return
        try:
            if msg.is_request:
                self._on_request(msg, addr)
            else:
                self._on_response(msg)
        except Exception:
            logger.exception("sip: error handling %s from %s", msg, addr)

    def _over_limit(self, data: bytes, addr: tuple[str, int]) -> None:
        """A datagram over the source's rate: dropped unparsed, except a few INVITEs get 503."""
        assert self.limiter is not None
        self.rate_limited += 1
        source = addr[0]
        if self._flood_notes.allow(source):
            logger.warning("sip: %s is over the rate limit (%g datagrams/s, bursts of %g); dropping its excess",
                           source, self.limiter.rate, self.limiter.burst)
        if not data.startswith(b"INVITE ") or not self._busy_replies.allow(source):
            return
        try:
            invite = sipmsg.parse(data)
        except SipParseError:
            return
        wait = max(1, math.ceil(self.limiter.retry_after(source)))
        self._send(make_response(invite, 503, "Service Unavailable", to_tag=new_tag(), headers=[
            ("Retry-After", str(wait)), ("Reason", 'SIP;cause=503;text="rate limited"')]).serialize(), addr)

    def _malformed(self, exc: SipParseError, addr: tuple[str, int]) -> None:
        self.malformed += 1
        partial = exc.partial
        answerable = (
            partial is not None and partial.is_request and partial.method != "ACK"
            and partial.get("Via") and partial.get("CSeq") and partial.get("Call-ID")
        )
        status = exc.status if exc.status in (400, 505) else 400
        logger.warning("sip: malformed message from %s:%s (%s); %s", addr[0], addr[1], exc.reason,
                       f"answering {status}" if answerable else "dropped")
        if answerable and partial is not None:
            phrase = sipmsg.REASONS[status]
            reason = f"{phrase} (" + exc.reason.replace("\r", " ").replace("\n", " ")[:120] + ")"
            self._send(make_response(partial, status, reason).serialize(), addr)

    # ------------------------------------------------------------ requests

    def _respond(self, txn: ServerTransaction, response: SipMessage, reliable: Dialog | None = None) -> None:
        if response.status is not None and response.status >= 200:
            txn.final = True
        if not response.get("Server") and response.status != 100:
            response.add("Server", self.user_agent)
        data = response.serialize()
        txn.last_response = data
        if reliable is not None and response.status is not None and 200 <= response.status < 300:
            key = (reliable.call_id, response.cseq[0])
            acked = self._acked[key] = asyncio.Event()
            self._spawn(self._await_ack(data, txn.addr, acked, key, reliable), "2xx retransmission")
        else:
            self._send(data, txn.addr)

    async def _await_ack(self, data: bytes, addr: tuple[str, int], acked: asyncio.Event,
                         key: tuple[str, int], dialog: Dialog) -> None:
        ok = await retransmit(self._send, data, addr, acked)
        self._acked.pop(key, None)
        if not ok:
            logger.warning("sip: no ACK for 200 OK on call %s within %.0f s", dialog.call_id, TIMEOUT)
            entry = self._dialogs.get(dialog.key)
            if entry is not None:
                entry[1].on_ack_timeout()

    def _on_request(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        method = msg.method or ""
        if method == "ACK":
            self._on_ack(msg)
            return
        if method == "CANCEL":
            self._on_cancel(msg, addr)
            return
        key = (msg.branch, method)
        txn = self._server_txns.get(key)
        if txn is not None:  # a retransmission: repeat what we said, if anything
            if txn.last_response is not None:
                self._send(txn.last_response, addr)
            return
        txn = self._server_txns[key] = ServerTransaction(msg, addr)
        self._later(TIMEOUT, lambda: self._server_txns.pop(key, None))
        scheme = (msg.uri or "").split(":", 1)[0].lower()
        if scheme not in SCHEMES:
            logger.info("sip: %s from %s:%s for a %r URI; answering 416", method, addr[0], addr[1], scheme[:20])
            self._respond(txn, make_response(msg, 416, to_tag=new_tag()))
            return
        if msg.to_tag:
            self._in_dialog(msg, txn)
        elif method == "INVITE":
            self._respond(txn, make_response(msg, 100))
            invite = self._invites[msg.branch] = IncomingInvite(self, msg, txn)
            self._later(TIMEOUT, lambda: self._invites.pop(msg.branch, None))
            if self.on_invite is None:
                invite.reject(480, "Temporarily Unavailable")
            else:
                self._spawn(self.on_invite(invite), f"INVITE {msg.call_id}")
        elif method == "OPTIONS":
            response = make_response(msg, 200, to_tag=new_tag(), headers=self._ok_headers())
            response.add("Accept", SDP)
            self._respond(txn, response)
        elif method == "BYE":
            self._respond(txn, make_response(msg, 481))
        else:
            self._respond(txn, make_response(msg, 405 if method in ("REGISTER", "SUBSCRIBE", "MESSAGE") else 501,
                                             headers=[("Allow", ALLOW)]))

    def _on_ack(self, msg: SipMessage) -> None:
        invite_txn = self._server_txns.get((msg.branch, "INVITE"))
        if invite_txn is not None and invite_txn.last_response and not invite_txn.last_response.startswith(b"SIP/2.0 2"):
            return  # ACK for our non-2xx final response: nothing more to do
        event = self._acked.get((msg.call_id, msg.cseq[0]))
        if event is not None:
            event.set()
        entry = self._dialogs.get(dialog_key(msg.call_id, msg.to_tag, msg.from_tag))
        if entry is not None:
            entry[0].confirmed = True

    def _on_cancel(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        invite = self._invites.get(msg.branch)
        if invite is None:
            self._send(make_response(msg, 481).serialize(), addr)
            return
        self._send(make_response(msg, 200, to_tag=invite.to_tag).serialize(), addr)
        if not invite.done:
            invite.reject(487)
            invite.cancelled.set()

    def _in_dialog(self, msg: SipMessage, txn: ServerTransaction) -> None:
        entry = self._dialogs.get(dialog_key(msg.call_id, msg.to_tag, msg.from_tag))
        if entry is None:
            self._respond(txn, make_response(msg, 481))
            return
        dialog, listener = entry
        cseq = msg.cseq[0]
        if cseq <= dialog.remote_cseq and dialog.remote_cseq:
            self._respond(txn, make_response(msg, 500, "Out of Order CSeq"))
            return
        dialog.remote_cseq = cseq
        method = msg.method
        if method == "BYE":
            self._respond(txn, make_response(msg, 200))
            self._forget(dialog)
            listener.on_bye()
        elif method == "INVITE":
            answer = listener.on_offer(msg.body)
            if answer is None:
                self._respond(txn, make_response(msg, 488))
            else:
                self._respond(txn, make_response(msg, 200, body=answer, headers=self._ok_headers(SDP)),
                              reliable=dialog)
        elif method == "OPTIONS":
            self._respond(txn, make_response(msg, 200, headers=self._ok_headers()))
        elif method in ("INFO", "NOTIFY"):
            self._respond(txn, make_response(msg, listener.on_request(msg)))
        else:
            self._respond(txn, make_response(msg, 501, headers=[("Allow", ALLOW)]))

    def _forget(self, dialog: Dialog) -> None:
        self._dialogs.pop(dialog.key, None)

    # ----------------------------------------------------------- responses

    def _on_response(self, msg: SipMessage) -> None:
        status = msg.status or 0
        cseq_number, method = msg.cseq
        txn = self._client_txns.get((msg.branch, method))
        if txn is None:
            if method == "INVITE" and 200 <= status < 300:
                ack = self._uac_acks.get((msg.call_id, cseq_number))
                if ack is not None:
                    self._send(*ack)  # the 2xx was retransmitted: our ACK was lost
            return
        txn.got_response.set()
        if status < 200:
            txn.provisional = msg
            if txn.on_provisional is not None:
                txn.on_provisional(msg)
            return
        if method == "INVITE" and status >= 300:
            self._send(self._non_2xx_ack(txn.request, msg).serialize(), txn.addr)
        if not txn.final.done():
            txn.final.set_result(msg)

    def _non_2xx_ack(self, invite: SipMessage, response: SipMessage) -> SipMessage:
        """RFC 3261 §17.1.1.3: same branch, same Request-URI, To from the response."""
        ack = SipMessage(method="ACK", uri=invite.uri)
        ack.add("Via", invite.get("Via") or "")
        ack.add("Max-Forwards", "70")
        ack.add("From", invite.get("From") or "")
        ack.add("To", response.get("To") or "")
        ack.add("Call-ID", invite.call_id)
        ack.add("CSeq", f"{invite.cseq[0]} ACK")
        return ack
