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

Where they plug in (see the reliability notes in the README): the WebRTC
signaling app and the carrier media-stream app take the middleware before
they start (``server.app.middlewares.append(aiohttp_middleware(...))``); the
SIP user agent asks ``limiter.allow(addr[0])`` first thing for each datagram
and drops (or answers ``503`` with ``Retry-After`` to an INVITE) when refused.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable

from aiohttp import web

Clock = Callable[[], float]


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


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def aiohttp_middleware(
    limiter: RateLimiter | None = None,
    *,
    concurrency: ConcurrencyLimiter | None = None,
    key: Callable[[web.Request], Hashable] = lambda request: request.remote or "",
    exempt: Callable[[web.Request], bool] = lambda request: False,
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """An aiohttp middleware applying ``limiter`` per request and ``concurrency`` per open request.

    ``key`` picks the source (behind a trusted proxy, derive it from
    ``X-Forwarded-For`` there, never from a header any client can set).
    """

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if exempt(request):
            return await handler(request)
        source = key(request)
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
