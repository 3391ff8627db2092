"""``voxwire serve --transport webrtc``: the browser page as a serving plugin.

The page (``GET /``), its ICE config (``GET /config``) and signaling
(``POST /offer``) are added to the worker's HTTP app, so they are served on
``--host``/``--port`` next to ``/healthz`` and ``/metrics``; every worker
shares that port (SO_REUSEPORT) and a call's media stays with the worker that
answered its offer. Without a worker app (or with ``VOXWIRE_WEBRTC_PORT``
set) the page gets its own listening port instead.

Environment: ``VOXWIRE_WEBRTC_TOKEN`` (optional bearer token; an environment
variable keeps it out of ``ps``), ``VOXWIRE_ICE_SERVERS`` (comma-separated
``stun:``/``turn:`` URLs, or a JSON list of ``{"urls", "username", "credential"}``),
``VOXWIRE_WEBRTC_HOST``/``VOXWIRE_WEBRTC_PORT`` (a separate listener).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from aiohttp import web

from agent.calls import CallManager
from transports.webrtc.ice import IceServerSpec
from transports.webrtc.server import WebRTCServer

logger = logging.getLogger(__name__)


def ice_servers_from_env(value: str | None) -> list[IceServerSpec]:
    if not value or not value.strip():
        return []
    if value.lstrip().startswith("["):
        parsed = json.loads(value)
        if not isinstance(parsed, list):
            raise ValueError("VOXWIRE_ICE_SERVERS must be a JSON list")
        return parsed
    return [url.strip() for url in value.split(",") if url.strip()]


def mount(server: WebRTCServer, app: web.Application) -> None:
    """Serve ``server``'s routes (page, config, offer) from ``app`` at the same paths."""
    for route in server.app.router.routes():
        app.router.add_route(route.method, route.resource.canonical, route.handler)  # type: ignore[union-attr]


async def start(manager: CallManager, ctx: Any) -> WebRTCServer:
    config = getattr(ctx, "config", None)
    ice_log = logging.getLogger("aioice")
    if ice_log.level == logging.NOTSET:
        ice_log.setLevel(logging.WARNING)  # every candidate check at INFO drowns the worker's log
    own_port = os.environ.get("VOXWIRE_WEBRTC_PORT")
    app = getattr(ctx, "http_app", None)
    server = WebRTCServer(
        manager,
        os.environ.get("VOXWIRE_WEBRTC_HOST") or getattr(config, "host", "127.0.0.1"),
        int(own_port) if own_port else getattr(config, "port", 8080),
        token=os.environ.get("VOXWIRE_WEBRTC_TOKEN") or None,
        ice_servers=ice_servers_from_env(os.environ.get("VOXWIRE_ICE_SERVERS")),
        reuse_port=bool(getattr(ctx, "reuse_port", False)),
        http_limits=getattr(config, "http_limits", None),
    )
    if app is not None and not own_port:
        mount(server, app)
        logger.info("WebRTC page on http://%s:%d/", "localhost" if server.host in ("0.0.0.0", "::") else server.host,
                    server.port)
    else:
        await server.start()
    return server
