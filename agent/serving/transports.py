"""The ``--transport`` names of ``voxwire serve`` and the plugins that serve them.

Kept apart from the worker so the command line can list them without
importing aiohttp, prometheus or psutil.
"""

from __future__ import annotations

CARRIERS = ("twilio", "telnyx", "vonage", "plivo", "exotel")

#: ``--transport NAME`` → ``module:function`` of its plugin (all carriers share one server).
TRANSPORT_PLUGINS: dict[str, str] = {
    "webrtc": "transports.webrtc.plugin:start",
    "sip": "transports.sip.plugin:start",
    **{carrier: "transports.telephony.plugin:start" for carrier in CARRIERS},
}

#: Every name ``--transport`` accepts; ``mqtt`` is the MQTT audio transport, part of the bus.
TRANSPORTS = (*TRANSPORT_PLUGINS, "mqtt")
