"""The browser page as a ``voxwire serve`` plugin, configured from the environment.

    VOXWIRE_WEBRTC_PORT=8081 VOXWIRE_WEBRTC_TOKEN=... \\
        voxwire serve --plugin transports.webrtc.plugin:start

``VOXWIRE_WEBRTC_HOST`` (default: the serve ``--host``), ``VOXWIRE_WEBRTC_PORT``
(default 8081), ``VOXWIRE_WEBRTC_TOKEN`` (optional bearer token; an environment
variable keeps it out of ``ps``), ``VOXWIRE_ICE_SERVERS`` (comma-separated
``stun:``/``turn:`` URLs, or a JSON list of ``{"urls", "username", "credential"}``).
Every worker listens on the same port (SO_REUSEPORT); a call's media stays
with the worker that answered its offer.
"""

from __future__ import annotations

import json
import os
from typing import Any

from agent.calls import CallManager
from transports.webrtc.ice import IceServerSpec
from transports.webrtc.server import WebRTCServer, serve_webrtc


def ice_servers_from_env(value: str | None) -> list[IceServerSpec]:
    if not value or not value.strip():
        return []
    if value.lstrip().startswith("["):
        parsed = json.loads(value)
        if not isinstance(parsed, list):
            raise ValueError("VOXWIRE_ICE_SERVERS must be a JSON list")
        return parsed
    return [url.strip() for url in value.split(",") if url.strip()]


async def start(manager: CallManager, ctx: Any) -> WebRTCServer:
    config = getattr(ctx, "config", None)
    host = os.environ.get("VOXWIRE_WEBRTC_HOST") or getattr(config, "host", "127.0.0.1")
    return await serve_webrtc(
        manager,
        host,
        int(os.environ.get("VOXWIRE_WEBRTC_PORT", "8081")),
        token=os.environ.get("VOXWIRE_WEBRTC_TOKEN") or None,
        ice_servers=ice_servers_from_env(os.environ.get("VOXWIRE_ICE_SERVERS")),
        reuse_port=bool(getattr(ctx, "reuse_port", False)),
    )
