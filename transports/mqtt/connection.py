"""One MQTT connection per worker that survives broker restarts.

Calls must never notice the broker: publishing only appends to an outbox, and
a supervisor task connects, reconnects with jittered exponential backoff,
re-subscribes, re-announces the worker, and drains the outbox in order. What
the broker had not acknowledged when the link broke is sent again after the
reconnect (QoS 1 is at-least-once; events carry a ``seq`` to spot repeats),
except *expendable* messages (live audio), which are worthless late.

Login and certificate problems are not transient: the first connection
attempt raises :class:`MqttConnectError` with a message that says what to fix.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiomqtt

from transports.mqtt.settings import MqttSettings

logger = logging.getLogger(__name__)

Handler = Callable[[str, bytes], Awaitable[None]]

#: Publishes handed to the client before the oldest is acknowledged. At most
#: mosquitto's default receive-maximum, so QoS 1 is never held back inside the
#: client while a later QoS 0 message overtakes it.
PUBLISH_WINDOW = 20
_AUTH_CODES = {134: "bad user name or password", 135: "not authorized"}  # MQTT 5 CONNACK reason codes


class MqttConnectError(Exception):
    """The broker refused us for a reason retrying will not fix (login, TLS)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind  # "auth" | "tls" | "network"


@dataclass(slots=True)
class _Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    expendable: bool


def describe_failure(exc: BaseException, settings: MqttSettings) -> MqttConnectError:
    """Turn a client error into a message an operator can act on."""
    where = f"MQTT broker {settings.address}"
    code = getattr(getattr(exc, "rc", None), "value", getattr(exc, "rc", None))
    text = str(exc)
    if isinstance(code, int) and code in _AUTH_CODES:
        who = f"user {settings.username!r}" if settings.username else "an anonymous client"
        return MqttConnectError(
            f"{where} refused the login of {who}: {_AUTH_CODES[code]} (code {code}); "
            "check the user name and password in the --mqtt URL", "auth")
    lowered = text.lower()
    tls_words = ("certificate", "ssl", "tls", "wrong version number")
    # A TLS client whose handshake is answered with a reset has reached a plain listener.
    if any(word in lowered for word in tls_words) or (settings.tls and "reset by peer" in lowered):
        hint = (" (pass the CA that signed the broker's certificate with ?ca=/path/ca.pem)"
                if "verify" in lowered else " (is this a TLS port? use mqtts:// only for TLS listeners)")
        return MqttConnectError(f"TLS handshake with {where} failed: {text}{hint}", "tls")
    if "timed out" in lowered and not settings.tls:
        text += " (no MQTT answer: if this is a TLS listener, use mqtts://)"
    return MqttConnectError(f"cannot reach {where}: {text}", "network")


class MqttConnection:
    """Publish and subscribe through one self-healing client."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str,
        online: Callable[[], tuple[str, bytes]] | None = None,
        will: tuple[str, bytes] | None = None,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 15.0,
        outbox_limit: int = 20000,
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self.online = online
        self.will = will
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.outbox_limit = outbox_limit
        self.connected = asyncio.Event()
        self.connects = 0
        self.dropped = 0
        self.last_error: MqttConnectError | None = None
        self._outbox: deque[_Outgoing] = deque()
        self._wakeup = asyncio.Event()
        self._handlers: dict[str, tuple[Handler, int]] = {}
        self._client: aiomqtt.Client | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._first_attempt: asyncio.Future[None] | None = None
        self._closing = False

    # ------------------------------------------------------------- lifecycle

    async def start(self, wait_s: float = 5.0) -> None:
        """Connect in the background; raise at once if login or TLS is refused.

        A broker that is merely unreachable is retried forever (a worker may
        start before its broker does); the call returns after ``wait_s``.
        """
        loop = asyncio.get_running_loop()
        self._first_attempt = loop.create_future()
        self._supervisor = loop.create_task(self._supervise(), name=f"mqtt {self.client_id}")
        try:
            await asyncio.wait_for(asyncio.shield(self._first_attempt), wait_s)
        except TimeoutError:
            logger.warning("MQTT: %s not reachable yet; retrying in the background", self.settings.address)
        except MqttConnectError as exc:
            if exc.kind != "network":
                await self.close()
                raise
            logger.warning("MQTT: %s; retrying in the background", exc)

    async def close(self, final: tuple[str, bytes] | None = None, flush_s: float = 2.0) -> None:
        """Publish ``final`` (retained), flush what is queued, disconnect."""
        if final is not None:
            self.publish(final[0], final[1], qos=1, retain=True)
        if self.connected.is_set() and self._outbox:
            deadline = asyncio.get_running_loop().time() + flush_s
            while self._outbox and self.connected.is_set() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.05 if self.connected.is_set() else 0)  # let the last PUBACKs land
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        self.connected.clear()

    # ------------------------------------------------------------ publishing

    def publish(
        self, topic: str, payload: bytes | str, *, qos: int = 0, retain: bool = False, expendable: bool = False
    ) -> bool:
        """Queue a message; never blocks. Returns False if it was dropped.

        Expendable messages are dropped while the broker is away instead of
        queued; when the outbox is full the oldest message is dropped.
        """
        if expendable and not self.connected.is_set():
            self.dropped += 1
            return False
        data = payload.encode() if isinstance(payload, str) else payload
        if len(self._outbox) >= self.outbox_limit:
            self._outbox.popleft()
            self.dropped += 1
            if self.dropped % 1000 == 1:
                logger.warning("MQTT outbox full (%d): dropping the oldest messages", self.outbox_limit)
        self._outbox.append(_Outgoing(topic, data, qos, retain, expendable))
        self._wakeup.set()
        return True

    @property
    def queued(self) -> int:
        return len(self._outbox)

    # ----------------------------------------------------------- subscribing

    async def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        """Route messages matching ``topic_filter`` to ``handler``, now and after reconnects."""
        self._handlers[topic_filter] = (handler, qos)
        client = self._client
        if client is not None and self.connected.is_set():
            try:
                await client.subscribe(topic_filter, qos=qos)
            except aiomqtt.MqttError as exc:
                logger.warning("MQTT: subscribe %s failed (%s); retried on reconnect", topic_filter, exc)

    async def unsubscribe(self, topic_filter: str) -> None:
        self._handlers.pop(topic_filter, None)
        client = self._client
        if client is not None and self.connected.is_set():
            try:
                await client.unsubscribe(topic_filter)
            except aiomqtt.MqttError as exc:
                logger.warning("MQTT: unsubscribe %s failed: %s", topic_filter, exc)

    # ------------------------------------------------------------- the link

    def _new_client(self) -> aiomqtt.Client:
        settings = self.settings
        will = aiomqtt.Will(self.will[0], self.will[1], qos=1, retain=True) if self.will else None
        client = aiomqtt.Client(
            settings.host, settings.port, username=settings.username, password=settings.password,
            identifier=self.client_id, protocol=aiomqtt.ProtocolVersion.V5, will=will,
            keepalive=settings.keepalive, tls_context=settings.tls_context(), timeout=5,
            max_inflight_messages=PUBLISH_WINDOW, logger=logging.getLogger("aiomqtt"),
        )
        client.pending_calls_threshold = PUBLISH_WINDOW + 10
        return client

    async def _supervise(self) -> None:
        backoff = self.backoff_min_s
        while not self._closing:
            client = self._new_client()
            try:
                async with client:
                    self._client = client
                    self.connects += 1
                    backoff = self.backoff_min_s
                    await self._announce(client)
                    self.connected.set()
                    self._settle_first(None)
                    logger.info("MQTT: connected to %s as %s", self.settings.address, self.client_id)
                    await self._pump(client)
            except Exception as exc:  # noqa: BLE001 - nothing may stop the reconnect loop
                if not isinstance(exc, (aiomqtt.MqttError, OSError)):
                    logger.exception("MQTT: unexpected error on the link to %s", self.settings.address)
                failure = describe_failure(exc, self.settings)
                self.last_error = failure
                self._settle_first(failure)
                if self.connected.is_set():
                    logger.warning("MQTT: lost %s (%s); reconnecting", self.settings.address, exc)
                else:
                    logger.log(logging.ERROR if failure.kind != "network" else logging.WARNING, "MQTT: %s", failure)
            finally:
                self.connected.clear()
                self._client = None
            delay = backoff * random.uniform(0.8, 1.2)
            backoff = min(backoff * 2, self.backoff_max_s)
            await asyncio.sleep(delay)

    def _settle_first(self, error: MqttConnectError | None) -> None:
        first = self._first_attempt
        if first is not None and not first.done():
            if error is None:
                first.set_result(None)
            else:
                first.set_exception(error)
                first.exception()  # retrieved here: start() may have stopped waiting

    async def _announce(self, client: aiomqtt.Client) -> None:
        for topic_filter, (_, qos) in list(self._handlers.items()):
            await client.subscribe(topic_filter, qos=qos)
        if self.online is not None:
            topic, payload = self.online()  # re-announced first after every (re)connect
            self._outbox.appendleft(_Outgoing(topic, payload, 1, True, False))

    async def _pump(self, client: aiomqtt.Client) -> None:
        reader = asyncio.ensure_future(self._read(client))
        writer = asyncio.ensure_future(self._write(client))
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
        for task in done:
            task.result()

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload or "").encode()
            for topic_filter, (handler, _) in list(self._handlers.items()):
                if message.topic.matches(topic_filter):
                    try:
                        await handler(topic, payload)
                    except Exception:
                        logger.exception("MQTT: handler for %s failed on %s", topic_filter, topic)

    async def _write(self, client: aiomqtt.Client) -> None:
        """Hand queued messages to the client in order, ``PUBLISH_WINDOW`` at a time."""
        inflight: deque[tuple[_Outgoing, asyncio.Task[None]]] = deque()
        try:
            while True:
                while self._outbox and len(inflight) < PUBLISH_WINDOW:
                    msg = self._outbox.popleft()
                    task = asyncio.ensure_future(
                        client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain, timeout=15))
                    inflight.append((msg, task))
                while inflight and inflight[0][1].done():
                    msg, task = inflight[0]
                    error = None if task.cancelled() else task.exception()
                    if isinstance(error, aiomqtt.MqttError):
                        raise error  # the link is broken: reconnect, then resend from here
                    if error is not None:  # the client refused this message itself (e.g. a bad topic)
                        logger.error("MQTT: dropped a message to %s: %r", msg.topic, error)
                    inflight.popleft()
                if not inflight and not self._outbox:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                elif inflight:
                    waiters: set[asyncio.Future[object]] = {inflight[0][1]}
                    if not self._outbox:
                        self._wakeup.clear()
                        waiters.add(asyncio.ensure_future(self._wakeup.wait()))
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                    for waiter in waiters - {inflight[0][1]}:
                        waiter.cancel()
        finally:
            for msg, task in reversed(inflight):
                if task.done() and not task.cancelled() and task.exception() is None:
                    continue
                task.cancel()
                if not msg.expendable:
                    self._outbox.appendleft(msg)  # sent again, in order, after the reconnect
