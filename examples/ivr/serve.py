"""Answer the clinic line over SIP and Twilio at once: ``python -m examples.ivr``.

One ``CallManager`` owns every call, whichever network it came in on, so the
call limit, draining and the bot factory are shared. SIP listens on UDP (point
a trunk, a PBX or a softphone at it); Twilio reaches the HTTP port: set the
number's voice webhook to ``{public_url}/twilio/voice`` and the media stream
comes back to ``/twilio/media``. Transfers use SIP REFER, or Twilio's REST API
when ``TWILIO_ACCOUNT_SID`` and ``TWILIO_AUTH_TOKEN`` are set (the token also
turns on webhook signature checks).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from dataclasses import dataclass

from agent.calls import CallManager
from examples.ivr.bot import ClinicConfig, make_ivr_bot, warm_up
from transports.sip.transport import SipServer
from transports.telephony.serve import serve_carriers, serve_sip
from transports.telephony.server import CarrierServer


@dataclass
class ClinicLine:
    manager: CallManager
    sip: SipServer
    twilio: CarrierServer

    async def close(self) -> None:
        await self.sip.close()
        await self.twilio.close()
        await self.manager.close()


async def serve_clinic_line(manager: CallManager, *, host: str = "127.0.0.1", sip_port: int = 5060,
                            http_port: int = 8080, public_url: str | None = None,
                            advertised_host: str | None = None) -> ClinicLine:
    sip = await serve_sip(manager, host, sip_port, advertised_host=advertised_host)
    twilio = await serve_carriers(manager, ["twilio"], host, http_port, public_url=public_url)
    return ClinicLine(manager, sip, twilio)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--simulate", action="store_true", help="no network: two scripted calls, then exit")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (0.0.0.0 for a real trunk)")
    parser.add_argument("--sip-port", type=int, default=5060)
    parser.add_argument("--http-port", type=int, default=8080, help="Twilio webhook and media stream")
    parser.add_argument("--public-url", default=os.environ.get("VOXWIRE_PUBLIC_URL"),
                        help="the https URL Twilio reaches (VOXWIRE_PUBLIC_URL)")
    parser.add_argument("--advertised-host", help="the address put in SDP when behind NAT")
    parser.add_argument("--max-calls", type=int, default=20, help="calls at once before answering busy")


async def run(args: argparse.Namespace) -> None:
    config = ClinicConfig.from_env()
    await asyncio.to_thread(warm_up, config.whisper_model)
    manager = CallManager(make_ivr_bot(config), max_sessions=args.max_calls)
    line = await serve_clinic_line(manager, host=args.host, sip_port=args.sip_port, http_port=args.http_port,
                                   public_url=args.public_url, advertised_host=args.advertised_host)
    print(f"Maple Street Clinic answers SIP on udp {args.host}:{line.sip.port} and Twilio on "
          f"{line.twilio.stream_url('twilio').replace('/media', '/voice').replace('ws', 'http', 1)}\n"
          f"bookings and voicemails go to {config.db_path} (Ctrl-C to stop)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await manager.drain(10.0)
    await line.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.ivr", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.simulate:
        from examples.ivr.simulate import main as simulate

        return simulate()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    asyncio.run(run(args))
    return 0
