"""Run a telephony server until cancelled: what ``voxwire serve --transport ...`` calls.

    asyncio.run(run_sip(bot_factory, host="0.0.0.0", port=5060))
    asyncio.run(run_carrier(bot_factory, "twilio", port=8080, public_url="https://bot.example.com"))
"""

from __future__ import annotations

import asyncio
import logging
import os

from transports.sip.transport import BotFactory, SipServer
from transports.telephony.carrier_api import CallControl, CarrierCredentials
from transports.telephony.guard import CallLimits
from transports.telephony.server import CarrierServer

logger = logging.getLogger(__name__)


async def run_sip(bot_factory: BotFactory, *, host: str = "0.0.0.0", port: int = 5060,
                  advertised_host: str | None = None, limits: CallLimits | None = None) -> None:
    server = SipServer(bot_factory, host=host, port=port, advertised_host=advertised_host, limits=limits)
    await server.start()
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


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


async def run_carrier(bot_factory: BotFactory, carrier: str, *, host: str = "0.0.0.0", port: int = 8080,
                      public_url: str | None = None, limits: CallLimits | None = None) -> None:
    control = credentials_from_env(carrier)
    server = CarrierServer(
        bot_factory, carriers=[carrier], host=host, port=port, public_url=public_url, limits=limits,
        twilio_auth_token=os.environ.get("TWILIO_AUTH_TOKEN") if carrier == "twilio" else None,
        call_control={carrier: control} if control else None,
    )
    await server.start()
    logger.info("point the %s webhook at %s and the stream at %s", carrier, public_url or f"http://{host}:{port}",
                server.stream_url(carrier))
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
