"""SIP dialogs (RFC 3261 §12) and the identifiers transactions are built from.

A dialog is the peer-to-peer relationship an INVITE sets up: Call-ID plus
both tags name it, CSeq numbers order requests inside it, and the remote
target (the peer's Contact) is where in-dialog requests go. We send those
requests to the address the peer's signalling actually came from, which is
the same thing on a LAN and the only thing that works behind NAT.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from transports.sip.message import SipMessage, parse_name_addr

BRANCH_MAGIC = "z9hG4bK"  # RFC 3261 §8.1.1.7
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY"


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return f"{BRANCH_MAGIC}-{secrets.token_hex(8)}"


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(10)}@{host}"


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # our name-addr (To for a UAS, From for a UAC), without tag
    remote_uri: str  # theirs, without tag
    remote_target: str  # their Contact URI
    peer: tuple[str, int]  # where their signalling comes from
    local_contact: str
    is_uas: bool
    local_cseq: int = field(default_factory=lambda: secrets.randbelow(10_000) + 1)
    remote_cseq: int = 0
    route_set: list[str] = field(default_factory=list)
    confirmed: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        return dialog_key(self.call_id, self.local_tag, self.remote_tag)

    def new_request(self, method: str, *, via_host: str, via_port: int, body: bytes = b"",
                    content_type: str | None = None) -> SipMessage:
        """An in-dialog request with the next CSeq (ACK/CANCEL reuse theirs)."""
        if method not in ("ACK", "CANCEL"):
            self.local_cseq += 1
        request = SipMessage(method=method, uri=self.remote_target)
        request.add("Via", f"SIP/2.0/UDP {via_host}:{via_port};branch={new_branch()};rport")
        request.add("Max-Forwards", "70")
        request.add("From", f"{self.local_uri};tag={self.local_tag}")
        to = self.remote_uri + (f";tag={self.remote_tag}" if self.remote_tag else "")
        request.add("To", to)
        request.add("Call-ID", self.call_id)
        request.add("CSeq", f"{self.local_cseq} {method}")
        for route in self.route_set:
            request.add("Route", route)
        request.add("Contact", self.local_contact)
        if content_type:
            request.add("Content-Type", content_type)
        request.body = body
        return request


def dialog_key(call_id: str, local_tag: str, remote_tag: str) -> tuple[str, str, str]:
    return (call_id, local_tag, remote_tag)


def strip_tag(name_addr: str) -> str:
    """A From/To value without its tag parameter, as a dialog stores it."""
    parsed = parse_name_addr(name_addr)
    parsed.params.pop("tag", None)
    return str(parsed)


def contact_uri(message: SipMessage) -> str | None:
    contact = message.get("Contact")
    if not contact:
        return None
    try:
        return parse_name_addr(contact).uri
    except ValueError:
        return None
