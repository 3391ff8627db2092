"""``voxwire serve --transport sip``: the SIP server as a serving plugin.

Every worker binds UDP ``--sip-port`` with SO_REUSEPORT. The kernel then picks
a worker per datagram by hashing its 4-tuple, so one dialog (INVITE, ACK, BYE,
re-INVITE from the same peer address and port) stays on the worker that
answered it; a worker that is busy or draining answers ``503 Service
Unavailable`` with ``Retry-After``, which proxies and trunks treat as "try
another server / retry later". RTP uses a per-call port, so media never
crosses workers.

Options come from the worker config: ``--host`` (bind address), ``--sip-port``,
``--sip-advertise`` (the address put in Contact and SDP).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from agent.calls import CallManager
from transports.sip.transport import SipServer

logger = logging.getLogger(__name__)

_WILDCARDS = ("", "0.0.0.0", "::")


def outward_address() -> str:
    """The local address this machine uses to reach the network (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only a route lookup
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


async def start(manager: CallManager, ctx: Any) -> SipServer:
    config = ctx.config
    host = getattr(config, "host", "127.0.0.1") or "0.0.0.0"
    advertised = getattr(config, "sip_advertise", None) or (outward_address() if host in _WILDCARDS else host)
    server = SipServer(manager, host=host, port=getattr(config, "sip_port", 5060), advertised_host=advertised,
                       reuse_port=bool(getattr(ctx, "reuse_port", False)),
                       rate_limits=getattr(config, "sip_limits", None))
    await server.start()
    logger.info("SIP on udp %s:%d (Contact and SDP advertise %s)", host, server.port, advertised)
    return server
