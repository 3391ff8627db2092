"""``voxwire serve --transport twilio|telnyx|vonage|plivo|exotel``: carrier media streams as a plugin.

The carriers named with ``--transport`` share one :class:`CarrierServer`,
whose routes are added to the worker's HTTP app: webhooks and media
WebSockets are served on ``--host``/``--port`` next to ``/healthz`` and
``/metrics`` (SO_REUSEPORT across workers). ``--public-url`` is the address
carriers reach (it goes into the webhook answers' stream URLs; Twilio
signatures are checked against it). Each webhook answer carries a per-call
token the media socket must present at ``start`` (see
:mod:`transports.telephony.stream_auth`; workers share its key, and separate
machines need the same ``VOXWIRE_STREAM_SECRET``). REST credentials for transfer, hang-up
and busy announcements come from the environment (see
:func:`transports.telephony.serve.credentials_from_env`).

Point the carrier's incoming-call webhook at:

* Twilio: ``POST {public_url}/twilio/voice`` (TwiML ``<Connect><Stream>``);
* Telnyx: ``POST {public_url}/telnyx/texml`` (TeXML);
* Plivo: ``{public_url}/plivo/answer`` (Plivo XML ``<Stream>``);
* Vonage: ``GET {public_url}/vonage/answer`` (NCCO);
* Exotel: the Voicebot applet's URL ``{public_url}/exotel/stream``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from agent.calls import CallManager
from transports.telephony.serializers import SERIALIZERS
from transports.telephony.serve import credentials_from_env
from transports.telephony.server import CarrierServer
from transports.telephony.stream_auth import StreamTokens

logger = logging.getLogger(__name__)


async def start(manager: CallManager, ctx: Any) -> CarrierServer:
    config = ctx.config
    carriers = [name for name in getattr(config, "transports", []) if name in SERIALIZERS] or list(SERIALIZERS)
    controls = {carrier: control for carrier in carriers if (control := credentials_from_env(carrier))}
    public_url = getattr(config, "public_url", None)
    twilio_token = os.environ.get("TWILIO_AUTH_TOKEN") if "twilio" in carriers else None
    server = CarrierServer(
        manager, carriers=carriers, host=getattr(config, "host", "127.0.0.1"), port=getattr(config, "port", 8080),
        public_url=public_url, call_control=controls,
        twilio_auth_token=twilio_token or None,
        reuse_port=bool(getattr(ctx, "reuse_port", False)),
        stream_tokens=StreamTokens(getattr(config, "stream_secret", None)),
        start_timeout_s=getattr(config, "stream_start_timeout_s", 10.0),
        http_limits=getattr(config, "http_limits", None),
    )
    app = getattr(ctx, "http_app", None)
    if app is not None:
        server.mount(app)
    else:
        await server.start()
    base = public_url or f"http://{server.host}:{server.port}"
    logger.info("carrier media streams for %s on %s (webhooks under %s/<carrier>/...)%s", ", ".join(carriers),
                f"{server.host}:{server.port}", base, "" if public_url else "; set --public-url for real carriers")
    return server
