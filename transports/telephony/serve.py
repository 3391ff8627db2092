"""Convenience starters for the telephony servers, from a bot factory or a manager.

``voxwire serve --transport sip|twilio|...`` uses the plugins
(:mod:`transports.sip.plugin`, :mod:`transports.telephony.plugin`) inside its
workers; these are for scripts that run one server on their own::

    asyncio.run(run_sip(my_bot, host="0.0.0.0", port=5060, max_sessions=50))
    asyncio.run(run_carrier(my_bot, "twilio", port=8080, public_url="https://bot.example.com"))

Either accepts a bot factory (a private :class:`~agent.calls.CallManager` is
built, with ``max_sessions``) or a manager shared with other transports.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable

from agent.calls import DEFAULT_MAX_SESSIONS, BotFactory, CallManager
from transports.sip.transport import SipServer
from transports.telephony.carrier_api import CallControl, CarrierCredentials
from transports.telephony.guard import CallLimits
from transports.telephony.server import CarrierServer

logger = logging.getLogger(__name__)


def as_manager(bot_or_manager: CallManager | BotFactory, max_sessions: int | None = DEFAULT_MAX_SESSIONS) -> CallManager:
    if isinstance(bot_or_manager, CallManager):
        return bot_or_manager
    return CallManager(bot_or_manager, max_sessions=max_sessions)


def credentials_from_env(carrier: str) -> CallControl | None:
    """REST credentials from the environment (TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN, TELNYX_API_KEY,
    PLIVO_AUTH_ID/PLIVO_AUTH_TOKEN, VONAGE_JWT), or None when not set."""
    env = os.environ.get
    creds = CarrierCredentials(
        account_sid=env("TWILIO_ACCOUNT_SID", ""), auth_token=env("TWILIO_AUTH_TOKEN", env("PLIVO_AUTH_TOKEN", "")),
        auth_id=env("PLIVO_AUTH_ID", ""), api_key=env("TELNYX_API_KEY", ""), jwt=env("VONAGE_JWT", ""),
        answer_url=env("PLIVO_TRANSFER_URL", ""),
    )
    present = {"twilio": creds.account_sid and creds.auth_token, "telnyx": creds.api_key,
               "plivo": creds.auth_id and creds.auth_token, "vonage": creds.jwt}
    return CallControl(carrier, creds) if present.get(carrier) else None


async def serve_sip(bot_or_manager: CallManager | BotFactory, host: str = "0.0.0.0", port: int = 5060, *,
                    advertised_host: str | None = None, limits: CallLimits | None = None,
                    max_sessions: int | None = DEFAULT_MAX_SESSIONS, reuse_port: bool = False) -> SipServer:
    """A started SIP server; ``await server.close()`` stops it."""
    server = SipServer(as_manager(bot_or_manager, max_sessions), host=host, port=port,
                       advertised_host=advertised_host, limits=limits, reuse_port=reuse_port)
    await server.start()
    return server


async def serve_carriers(bot_or_manager: CallManager | BotFactory, carriers: Iterable[str], host: str = "0.0.0.0",
                         port: int = 8080, *, public_url: str | None = None, limits: CallLimits | None = None,
                         max_sessions: int | None = DEFAULT_MAX_SESSIONS, reuse_port: bool = False) -> CarrierServer:
    """A started carrier media server (credentials from the environment); ``await server.close()`` stops it."""
    carriers = list(carriers)
    controls = {carrier: control for carrier in carriers if (control := credentials_from_env(carrier))}
    server = CarrierServer(
        as_manager(bot_or_manager, max_sessions), carriers=carriers, host=host, port=port, public_url=public_url,
        limits=limits, twilio_auth_token=os.environ.get("TWILIO_AUTH_TOKEN") if "twilio" in carriers else None,
        call_control=controls, reuse_port=reuse_port,
    )
    await server.start()
    for carrier in carriers:
        logger.info("point the %s webhook at %s and the stream at %s", carrier,
                    public_url or f"http://{host}:{server.port}", server.stream_url(carrier))
    return server


async def run_sip(bot_or_manager: CallManager | BotFactory, *, host: str = "0.0.0.0", port: int = 5060,
                  advertised_host: str | None = None, limits: CallLimits | None = None,
                  max_sessions: int | None = DEFAULT_MAX_SESSIONS) -> None:
    """Serve SIP until cancelled."""
    server = await serve_sip(bot_or_manager, host, port, advertised_host=advertised_host, limits=limits,
                             max_sessions=max_sessions)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()
        await server.manager.close()


async def run_carrier(bot_or_manager: CallManager | BotFactory, carrier: str, *, host: str = "0.0.0.0",
                      port: int = 8080, public_url: str | None = None, limits: CallLimits | None = None,
                      max_sessions: int | None = DEFAULT_MAX_SESSIONS) -> None:
    """Serve one carrier's media streams until cancelled."""
    server = await serve_carriers(bot_or_manager, [carrier], host, port, public_url=public_url, limits=limits,
                                  max_sessions=max_sessions)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()
        await server.manager.close()
