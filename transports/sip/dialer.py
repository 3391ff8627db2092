"""Outbound SIP calls for jobs: ``--dialer transports.sip.dialer:dial``.

An outbound-call job (``POST /calls`` or the MQTT job queue, see
:mod:`agent.serving.jobs`) becomes a SIP INVITE from the worker's SIP server
(``--transport sip``), and the answered call runs through the worker's
``CallManager`` like every call: admission first (a full or draining worker
raises ``CallRejected`` and the job goes to another worker), then the bot.

Where the INVITE goes:

* ``to`` is a SIP URI (``sip:alice@10.0.0.5:5070``): to that host and port;
* ``to`` is a number (``+15550100``): to ``sip:NUMBER@TRUNK`` through the
  trunk in ``metadata.proxy`` or ``VOXWIRE_SIP_TRUNK`` (``host[:port]``);
* ``metadata.proxy`` (or ``VOXWIRE_SIP_TRUNK``) also overrides where a SIP
  URI is sent (an outbound proxy).

Digest credentials for the trunk come from ``VOXWIRE_SIP_USER`` and
``VOXWIRE_SIP_PASSWORD``. ``from`` becomes the caller id (``sip:FROM@ADVERTISED``
unless it is a URI already).
"""

from __future__ import annotations

import asyncio
import os
import socket

from agent.calls import CallManager
from agent.serving.jobs import CallJob
from agent.session import Session
from transports.sip.auth import Credentials
from transports.sip.message import parse_uri
from transports.sip.transport import SipServer

DEFAULT_SIP_PORT = 5060


def _host_port(text: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` → (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = text.partition(":")
    return host, int(port) if port else DEFAULT_SIP_PORT


def route(job: CallJob) -> tuple[str, tuple[str, int]]:
    """(Request-URI, (host, port) to send the INVITE to) for a job; raises ValueError."""
    proxy = str(job.metadata.get("proxy") or os.environ.get("VOXWIRE_SIP_TRUNK") or "")
    if job.to.startswith(("sip:", "sips:")):
        uri = parse_uri(job.to)
        if proxy:
            return job.to, _host_port(proxy)
        return job.to, (uri.host.strip("[]"), uri.port or DEFAULT_SIP_PORT)
    if not proxy:
        raise ValueError(f"job {job.job_id}: {job.to!r} is a number; set metadata.proxy or VOXWIRE_SIP_TRUNK")
    number = job.to.removeprefix("tel:")
    host, port = _host_port(proxy)
    return f"sip:{number}@{host}", (host, port)


async def dial(manager: CallManager, job: CallJob) -> Session:
    """Place the job's call over SIP; returns the live session once the callee answers."""
    server = SipServer.serving(manager)
    if server is None:
        raise RuntimeError("the SIP dialer needs a SIP server in this worker: add --transport sip")
    manager.admit("sip")  # before DNS and the INVITE: a refused job goes back to the queue at once
    target, (host, port) = route(job)
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
    address = (str(infos[0][4][0]), int(infos[0][4][1]))
    from_uri = None
    if job.from_:
        uri = job.from_ if job.from_.startswith(("sip:", "sips:")) else f"sip:{job.from_}@{server.media_host}"
        from_uri = f"<{uri}>"
    user, password = os.environ.get("VOXWIRE_SIP_USER"), os.environ.get("VOXWIRE_SIP_PASSWORD")
    credentials = Credentials(user, password) if user and password else None
    timeout = float(job.metadata.get("ring_timeout_s", 60.0))
    call = await server.call(target, address, from_uri=from_uri, credentials=credentials, timeout=timeout,
                             metadata=dict(job.metadata, job_id=job.job_id))
    assert call.session is not None
    return call.session
