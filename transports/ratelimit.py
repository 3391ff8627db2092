"""Per-source rate and concurrency limits for every listening socket.

A voice agent's listeners are cheap to hit and expensive to serve: one SIP
INVITE or one WebSocket ``start`` costs an RTP port, a session and model time.
These limits sit in front of that cost, keyed by source address:

* :class:`RateLimiter` — a token bucket per key (``rate`` per second, bursts up
  to ``burst``). Memory is bounded: at most ``max_keys`` buckets are kept, the
  least recently used forgotten first, so a flood from spoofed addresses
  cannot grow it.
* :class:`ConcurrencyLimiter` — at most ``limit`` things open per key at once
  (WebSockets, calls), released when they close.
* :func:`aiohttp_middleware` — both for an aiohttp app: ``429 Too Many
  Requests`` with ``Retry-After`` when over the rate, ``503`` when a source
  already holds ``max_open`` connections.

* :class:`HttpLimits` / :func:`install_limits` — the defaults every HTTP
  listener gets (the WebRTC signaling app, the carrier webhooks and media
  sockets, the worker's shared app); :class:`SipLimits` — the SIP user
  agent's, checked first thing for each datagram (the excess is dropped; an
  INVITE gets ``503`` with ``Retry-After``).

The defaults are per source address and generous: a carrier's media gateway
or a SIP trunk brings many calls from one address, so they stop a flood, not
a busy peer; ``voxwire serve --http-rate/--sip-rate ...`` tunes them (0 turns
one off). Behind a reverse proxy every request comes from the proxy's
address: name it with ``--trusted-proxy`` and HTTP limits key on the client
its ``X-Forwarded-For`` names instead.
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # aiohttp only where it is used: the command line imports the defaults below
    from aiohttp import web

Clock = Callable[[], float]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimiter:
    """Token bucket per key; ``allow(key)`` spends one token if there is one."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 10_000, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self.max_keys, self.clock = rate, float(burst), max_keys, clock
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self.refused = 0

    def _tokens(self, key: Hashable, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def allow(self, key: Hashable, cost: float = 1.0) -> bool:
        now = self.clock()
        tokens = self._tokens(key, now)
        allowed = tokens >= cost
        self._buckets[key] = (tokens - cost if allowed else tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        if not allowed:
            self.refused += 1
        return allowed

    def retry_after(self, key: Hashable, cost: float = 1.0) -> float:
        """Seconds until ``key`` may spend ``cost`` again (0 when it may now)."""
        missing = cost - self._tokens(key, self.clock())
        return max(0.0, missing / self.rate)

    def __len__(self) -> int:
        return len(self._buckets)


class ConcurrencyLimiter:
    """At most ``limit`` open per key; ``try_acquire`` then ``release`` when it closes."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._open: dict[Hashable, int] = {}

    def try_acquire(self, key: Hashable) -> bool:
        count = self._open.get(key, 0)
        if count >= self.limit:
            return False
        self._open[key] = count + 1
        return True

    def release(self, key: Hashable) -> None:
        count = self._open.get(key, 0) - 1
        if count > 0:
            self._open[key] = count
        else:
            self._open.pop(key, None)

    def open(self, key: Hashable) -> int:
        return self._open.get(key, 0)


Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


def aiohttp_middleware(
    limiter: RateLimiter | None = None,
    *,
    concurrency: ConcurrencyLimiter | None = None,
    max_body_bytes: int | None = None,
    key: Callable[[web.Request], Hashable] = lambda request: request.remote or "",
    exempt: Callable[[web.Request], bool] = lambda request: False,
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """An aiohttp middleware applying ``limiter`` per request and ``concurrency`` per open request.

    ``max_body_bytes`` refuses a declared ``Content-Length`` over it with 413
    before any handler runs (bodies without one are held to the app's
    ``client_max_size`` when read). ``key`` picks the source (behind a trusted
    proxy, derive it from ``X-Forwarded-For`` there, never from a header any
    client can set).
    """
    from aiohttp import web

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if exempt(request):
            return await handler(request)
        source = key(request)
        if max_body_bytes is not None and (request.content_length or 0) > max_body_bytes:
            return web.Response(status=413, content_type="application/json",
                                text=json.dumps({"error": f"request bodies are limited to {max_body_bytes} bytes"}))
        if limiter is not None and not limiter.allow(source):
            wait = max(1, math.ceil(limiter.retry_after(source)))
            return web.Response(status=429, content_type="application/json", headers={"Retry-After": str(wait)},
                                text=json.dumps({"error": f"too many requests; retry in {wait} s"}))
        if concurrency is None:
            return await handler(request)
        if not concurrency.try_acquire(source):
            return web.Response(status=503, content_type="application/json", headers={"Retry-After": "5"},
                                text=json.dumps({"error": f"at most {concurrency.limit} open connections per source"}))
        try:
            return await handler(request)  # a WebSocket handler returns when the socket closes
        finally:
            concurrency.release(source)

    return limit


#: Paths never limited: probes and metrics scrapes come from the platform, not callers.
OPERATIONAL_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Per-source limits for an HTTP listener; a zero turns that limit off.

    ``max_open`` counts open requests, and a WebSocket is one for as long as
    it lives: it must stay above the calls one carrier address brings (a
    worker's ``max_sessions``). ``max_body_bytes`` fits a WebRTC offer (64 KB)
    and any webhook.
    """

    rate: float = 50.0  # requests per second per source, sustained
    burst: int = 200  # requests a source may make at once
    max_open: int = 200  # requests (WebSockets) open at once per source
    max_body_bytes: int = 64 * 1024
    #: Proxies (addresses or CIDR networks) whose ``X-Forwarded-For`` names the source;
    #: behind a load balancer every request would otherwise share its address.
    trusted_proxies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _networks(self.trusted_proxies)  # a typo fails at start-up, not on the first request


def _networks(specs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(spec.strip(), strict=False) for spec in specs)
    except ValueError as exc:
        raise ValueError(f"trusted proxy: {exc}") from None


def forwarded_source(trusted_proxies: tuple[str, ...]) -> Callable[[web.Request], Hashable]:
    """The key function for requests that may come through ``trusted_proxies``.

    A request from a trusted proxy is keyed on the right-most ``X-Forwarded-For``
    address that is not itself a trusted proxy: proxies append, so the addresses
    left of it were written by the client and prove nothing. Anyone else is keyed
    on the peer address, whatever header they send.
    """
    networks = _networks(trusted_proxies)

    def trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in networks)

    def source(request: web.Request) -> Hashable:
        peer = request.remote or ""
        if not networks or not trusted(peer):
            return peer
        hops = [hop.strip() for header in request.headers.getall("X-Forwarded-For", [])
                for hop in header.split(",")]
        for hop in reversed(hops):
            if not trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # a malformed hop: the proxy's own address, not a free pass
        return peer

    return source


@dataclass(frozen=True, slots=True)
class SipLimits:
    """Per-source datagram rate for the SIP user agent (a trunk's calls share one address)."""

    rate: float = 200.0  # datagrams per second per source address; 0: off
    burst: int = 400

    def limiter(self) -> RateLimiter | None:
        return RateLimiter(self.rate, self.burst) if self.rate > 0 else None


@cache
def _installed_key() -> Any:
    from aiohttp import web

    return web.AppKey("voxwire_http_limits", HttpLimits)


def install_limits(app: web.Application, limits: HttpLimits | None = None) -> HttpLimits:
    """Put the limits middleware first in ``app`` (once; a second call keeps the first limits).

    Must run before the app starts (aiohttp freezes its middlewares then).
    """
    key = _installed_key()
    if key in app:
        return app[key]  # type: ignore[no-any-return]
    limits = limits or HttpLimits()
    app[key] = limits
    app.middlewares.insert(0, aiohttp_middleware(
        RateLimiter(limits.rate, limits.burst) if limits.rate > 0 else None,
        concurrency=ConcurrencyLimiter(limits.max_open) if limits.max_open > 0 else None,
        max_body_bytes=limits.max_body_bytes if limits.max_body_bytes > 0 else None,
        key=forwarded_source(limits.trusted_proxies),
        exempt=lambda request: request.path in OPERATIONAL_PATHS,
    ))
    return limits
