"""Browser calls over WebRTC (aiortc): signaling server, audio tracks, data-channel events.

``serve_webrtc(manager, host, port)`` serves the page at ``/`` and answers
offers at ``POST /offer``; each peer connection is one call created through the
``CallManager``::

    manager = CallManager(load_bot("agent.clinic:clinic_bot"))
    server = await serve_webrtc(manager, "127.0.0.1", 8080, token=None, ice_servers=())
    ...
    await server.close()

Or from a shell: ``python -m transports.webrtc --port 8080``.
"""

from transports.webrtc.events import EventChannel, frame_event, parse_message
from transports.webrtc.ice import allow_loopback_candidates, parse_ice_servers
from transports.webrtc.peer import BadOffer, PeerCall
from transports.webrtc.server import WebRTCServer, serve_webrtc
from transports.webrtc.tracks import BotAudioTrack, WebRTCInput, WebRTCOutput

__all__ = [
    "BadOffer",
    "BotAudioTrack",
    "EventChannel",
    "PeerCall",
    "WebRTCInput",
    "WebRTCOutput",
    "WebRTCServer",
    "allow_loopback_candidates",
    "frame_event",
    "parse_ice_servers",
    "parse_message",
    "serve_webrtc",
]
