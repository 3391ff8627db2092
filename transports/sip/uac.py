"""The client half of the user agent: requests we send, calls we place.

Kept apart from the server half (:mod:`transports.sip.useragent`) so each
reads on its own; it shares the UA's socket, transaction tables and dialogs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from transports.sip.auth import Credentials, digest_response, parse_challenge
from transports.sip.dialog import Dialog, contact_uri, new_branch, new_call_id, new_tag, strip_tag
from transports.sip.message import SipMessage
from transports.sip.transactions import T2, TIMEOUT, ClientTransaction, retransmit

if TYPE_CHECKING:
    from transports.sip.useragent import DialogListener

SDP = "application/sdp"


class CallFailed(Exception):
    """An outgoing request got a final failure response (or none at all)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status, self.reason = status, reason


class UacMixin:
    """Client transactions; mixed into :class:`~transports.sip.useragent.UserAgent`."""

    # Provided by UserAgent.
    advertised_host: str
    port: int
    contact: str
    user_agent: str
    _client_txns: dict[tuple[str, str], ClientTransaction]
    _dialogs: dict[tuple[str, str, str], tuple[Dialog, DialogListener]]
    _uac_acks: dict[tuple[str, int], tuple[bytes, tuple[str, int]]]
    _send: Callable[[bytes, tuple[str, int]], None]
    _spawn: Callable[..., asyncio.Task[object]]
    _later: Callable[[float, Callable[[], object]], None]
    _forget: Callable[[Dialog], None]

    async def transact(self, request: SipMessage, addr: tuple[str, int], *,
                       on_provisional: Callable[[SipMessage], None] | None = None) -> SipMessage:
        """Send a request, retransmitting over UDP; returns the final response."""
        method = request.method or ""
        key = (request.branch, method)
        final: asyncio.Future[SipMessage] = asyncio.get_running_loop().create_future()
        txn = ClientTransaction(request, addr, final, on_provisional=on_provisional)
        self._client_txns[key] = txn
        stop = txn.got_response if method == "INVITE" else asyncio.Event()
        if method != "INVITE":
            final.add_done_callback(lambda _: stop.set())
        sender = self._spawn(self._retransmit_request(txn, stop), f"{method} retransmission")
        try:
            return await final
        finally:
            sender.cancel()
            self._later(TIMEOUT, lambda: self._client_txns.pop(key, None))

    async def _retransmit_request(self, txn: ClientTransaction, stop: asyncio.Event) -> None:
        """Timer A (INVITE, uncapped until any response) or E (capped at T2); then B/F."""
        cap = None if txn.request.method == "INVITE" else T2
        answered = await retransmit(self._send, txn.request.serialize(), txn.addr, stop, cap=cap)
        if not answered and not txn.final.done():
            txn.final.set_exception(CallFailed(408, "Request Timeout"))

    def new_request(self, method: str, uri: str, *, from_uri: str, to_uri: str, call_id: str | None = None,
                    cseq: int = 1, body: bytes = b"", content_type: str | None = None) -> SipMessage:
        request = SipMessage(method=method, uri=uri)
        request.add("Via", f"SIP/2.0/UDP {self.advertised_host}:{self.port};branch={new_branch()};rport")
        request.add("Max-Forwards", "70")
        request.add("From", f"{from_uri};tag={new_tag()}")
        request.add("To", to_uri)
        request.add("Call-ID", call_id or new_call_id(self.advertised_host))
        request.add("CSeq", f"{cseq} {method}")
        request.add("Contact", self.contact)
        request.add("User-Agent", self.user_agent)
        if content_type:
            request.add("Content-Type", content_type)
        request.body = body
        return request

    async def send_with_auth(self, request: SipMessage, addr: tuple[str, int], credentials: Credentials | None, *,
                             on_provisional: Callable[[SipMessage], None] | None = None) -> SipMessage:
        """Transact, answering one 401/407 digest challenge if we have credentials."""
        response = await self.transact(request, addr, on_provisional=on_provisional)
        if response.status not in (401, 407) or credentials is None:
            return response
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        challenge = parse_challenge(response.get(header) or "")
        retry = SipMessage(method=request.method, uri=request.uri, headers=list(request.headers), body=request.body)
        retry.set("Via", f"SIP/2.0/UDP {self.advertised_host}:{self.port};branch={new_branch()};rport")
        retry.set("CSeq", f"{request.cseq[0] + 1} {request.method}")
        name = "Authorization" if response.status == 401 else "Proxy-Authorization"
        retry.set(name, digest_response(challenge, credentials, method=request.method or "", uri=request.uri or ""))
        return await self.transact(retry, addr, on_provisional=on_provisional)

    async def invite(self, target: str, addr: tuple[str, int], sdp: bytes, listener_factory: Callable[[Dialog, SipMessage], DialogListener],
                     *, from_uri: str | None = None, credentials: Credentials | None = None,
                     on_provisional: Callable[[SipMessage], None] | None = None) -> tuple[Dialog, SipMessage]:
        """Place a call; returns the confirmed dialog and the 200 OK (with the SDP answer)."""
        from_uri = from_uri or self.contact
        request = self.new_request("INVITE", target, from_uri=from_uri, to_uri=f"<{target}>", body=sdp, content_type=SDP)
        try:
            response = await self.send_with_auth(request, addr, credentials, on_provisional=on_provisional)
        except asyncio.CancelledError:
            self._send(self._cancel_for(request).serialize(), addr)
            raise
        if not 200 <= (response.status or 0) < 300:
            raise CallFailed(response.status or 0, response.reason)
        dialog = Dialog(
            call_id=response.call_id,
            local_tag=response.from_tag,
            remote_tag=response.to_tag,
            local_uri=strip_tag(response.get("From") or ""),
            remote_uri=strip_tag(response.get("To") or ""),
            remote_target=contact_uri(response) or target,
            peer=addr,
            local_contact=self.contact,
            is_uas=False,
            local_cseq=response.cseq[0],
            route_set=list(reversed(response.get_all("Record-Route"))),
            confirmed=True,
        )
        ack = dialog.new_request("ACK", via_host=self.advertised_host, via_port=self.port)
        ack.set("CSeq", f"{response.cseq[0]} ACK")
        data = ack.serialize()
        self._uac_acks[(dialog.call_id, response.cseq[0])] = (data, addr)
        self._later(TIMEOUT, lambda: self._uac_acks.pop((dialog.call_id, response.cseq[0]), None))
        self._send(data, addr)
        self._dialogs[dialog.key] = (dialog, listener_factory(dialog, response))
        return dialog, response

    def _cancel_for(self, invite: SipMessage) -> SipMessage:
        cancel = SipMessage(method="CANCEL", uri=invite.uri)
        for name in ("Via", "Max-Forwards", "From", "To", "Call-ID"):
            cancel.add(name, invite.get(name) or "")
        cancel.add("CSeq", f"{invite.cseq[0]} CANCEL")
        return cancel

    async def request_in_dialog(self, dialog: Dialog, method: str, *, body: bytes = b"",
                                content_type: str | None = None,
                                headers: list[tuple[str, str]] | None = None) -> SipMessage:
        """BYE, REFER, INFO, re-INVITE... inside a dialog; returns the final response."""
        request = dialog.new_request(method, via_host=self.advertised_host, via_port=self.port,
                                     body=body, content_type=content_type)
        for name, value in headers or []:
            request.add(name, value)
        if method == "BYE":
            self._forget(dialog)
        return await self.transact(request, dialog.peer)

    async def register(self, registrar: tuple[str, int], *, user: str, domain: str,
                       credentials: Credentials | None = None, expires: int = 300) -> SipMessage:
        """REGISTER our Contact for ``user@domain`` (digest auth if challenged)."""
        aor = f"<sip:{user}@{domain}>"
        request = self.new_request("REGISTER", f"sip:{domain}", from_uri=aor, to_uri=aor)
        request.set("Contact", f"<sip:{user}@{self.advertised_host}:{self.port}>")
        request.add("Expires", str(expires))
        return await self.send_with_auth(request, registrar, credentials)
