"""ICE configuration: explicit servers only, and loopback candidates on request.

aiortc falls back to a public Google STUN server when a peer connection is
built without a configuration. A voice server that phones a third party on
every call, unasked, is a privacy leak and a hang when the network is closed,
so every peer connection here gets an explicit ``RTCConfiguration``: no ICE
servers unless the operator lists STUN/TURN servers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Union

from aiortc import RTCConfiguration, RTCIceServer

IceServerSpec = Union[str, Mapping[str, Any], RTCIceServer]

_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


def parse_ice_servers(specs: Iterable[IceServerSpec]) -> list[RTCIceServer]:
    """Normalise ``"stun:host:port"``, ``{"urls", "username", "credential"}`` or
    ``RTCIceServer`` entries; raises ValueError naming a bad entry."""
    servers: list[RTCIceServer] = []
    for spec in specs:
        if isinstance(spec, RTCIceServer):
            server = spec
        elif isinstance(spec, str):
            server = RTCIceServer(urls=spec)
        elif isinstance(spec, Mapping):
            if "urls" not in spec:
                raise ValueError(f"ICE server entry without 'urls': {sorted(spec)}")
            server = RTCIceServer(
                urls=spec["urls"], username=spec.get("username"), credential=spec.get("credential")
            )
        else:
            raise ValueError(f"ICE server must be a URL, a mapping or RTCIceServer, got {type(spec).__name__}")
        urls = [server.urls] if isinstance(server.urls, str) else list(server.urls)
        for url in urls:
            if not url.startswith(_SCHEMES):
                raise ValueError(f"ICE server URL must start with stun:, stuns:, turn: or turns:, got {url!r}")
            if url.startswith(("turn:", "turns:")) and not (server.username and server.credential):
                raise ValueError(f"TURN server {url!r} needs a username and a credential")
        servers.append(server)
    return servers


def rtc_configuration(servers: Iterable[RTCIceServer]) -> RTCConfiguration:
    """The configuration every peer connection gets (never aiortc's default STUN)."""
    return RTCConfiguration(iceServers=list(servers))


def browser_ice_servers(servers: Iterable[RTCIceServer]) -> list[dict[str, Any]]:
    """The same servers in the shape the page's ``RTCPeerConnection`` wants."""
    out: list[dict[str, Any]] = []
    for server in servers:
        entry: dict[str, Any] = {"urls": server.urls}
        if server.username:
            entry["username"] = server.username
        if server.credential:
            entry["credential"] = server.credential
        out.append(entry)
    return out


def allow_loopback_candidates() -> None:
    """Make aioice offer 127.0.0.1 as a host candidate (process-wide).

    aioice leaves the loopback address out of its host candidates, so a
    browser and this server cannot meet inside a network namespace that has
    only ``lo`` (the end-to-end tests) or on a machine with no network at all.
    This replaces aioice's address lookup for the whole process, which is why
    it is never done implicitly: tests call it, and ``serve_webrtc`` only with
    ``loopback_candidates=True``.
    """
    from aioice import ice

    if getattr(ice.get_host_addresses, "voxwire_loopback", False):
        return
    original = ice.get_host_addresses

    def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = original(use_ipv4, use_ipv6)
        if use_ipv4 and "127.0.0.1" not in addresses:
            addresses.append("127.0.0.1")
        return addresses

    with_loopback.voxwire_loopback = True  # type: ignore[attr-defined]
    ice.get_host_addresses = with_loopback
