"""SIP transaction timers over UDP (RFC 3261 §17): retransmit until answered.

UDP loses datagrams, so each side repeats itself on a doubling timer:

* a client resends a request (Timer A for INVITE, E for others) until a
  response arrives, and gives up after 64·T1 (Timers B/F);
* a server resends a 2xx to INVITE until the ACK arrives (Timer G style,
  capped at T2) and gives up after 64·T1 (Timer H);
* a server answers a retransmitted request by resending its last response,
  remembered for 64·T1 (Timer J).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from transports.sip.message import SipMessage

T1 = 0.5
T2 = 4.0
TIMEOUT = 64 * T1

Send = Callable[[bytes, tuple[str, int]], None]


async def retransmit(
    send: Send, data: bytes, addr: tuple[str, int], done: asyncio.Event, *, cap: float | None = T2
) -> bool:
    """Send ``data`` now and again on a doubling timer; True once ``done`` is set."""
    interval, deadline = T1, time.monotonic() + TIMEOUT
    send(data, addr)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            await asyncio.wait_for(done.wait(), timeout=min(interval, remaining))
            return True
        except TimeoutError:
            send(data, addr)
            interval = interval * 2 if cap is None else min(interval * 2, cap)


@dataclass(slots=True)
class ServerTransaction:
    """What we remember about a request we received, to absorb its repeats."""

    request: SipMessage
    addr: tuple[str, int]
    last_response: bytes | None = None
    final: bool = False


@dataclass(slots=True)
class ClientTransaction:
    """A request we sent, waiting for its final response."""

    request: SipMessage
    addr: tuple[str, int]
    final: asyncio.Future[SipMessage]
    got_response: asyncio.Event = field(default_factory=asyncio.Event)
    on_provisional: Callable[[SipMessage], None] | None = None
    provisional: SipMessage | None = None
