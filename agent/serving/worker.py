"""One worker process: its calls, its admission, its endpoints, its drain.

A worker owns a ``CallManager`` (one set of models per process, shared by its
calls), admission checks on its CPU budget and STT queue, the HTTP endpoints on a port
shared with its siblings (``SO_REUSEPORT``), and optionally the MQTT bus,
MQTT audio calls and the outbound-job queue. On SIGTERM it drains: it stops
taking calls (readiness 503, jobs left to others, status ``draining``), lets
live calls finish until the deadline, then exits 0 — what a Kubernetes
rolling update needs.

Transports plug in as *plugins*: ``module:function`` names of
``async def start(manager, ctx: WorkerContext) -> object with async close()``.
An HTTP transport adds its routes to ``ctx.http_app`` (the worker's own app,
not yet started), so it shares ``--host``/``--port`` with health and metrics;
one with its own socket binds with ``reuse_port=ctx.reuse_port``. The
``--transport`` names map to the built-in plugins in
:data:`agent.serving.transports.TRANSPORT_PLUGINS`.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from agent.calls import DEFAULT_MAX_SESSIONS, CallManager, load_bot
from agent.serving import prometheus
from agent.serving.admission import DEFAULT_MAX_STT_WAIT_S, CpuBudget, attach_admission
from agent.serving.http import make_app
from agent.serving.jobs import load_dialer
from agent.serving.transports import TRANSPORT_PLUGINS
from transports.ratelimit import HttpLimits, SipLimits, install_limits

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class WorkerConfig:
    """Everything a worker needs; picklable, so the supervisor can spawn workers."""

    agent: str | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    max_sessions: int | None = DEFAULT_MAX_SESSIONS
    cpu_budget: float | None = None  # cores per worker; None: a fair share of the machine; 0: off
    max_stt_wait_s: float | None = DEFAULT_MAX_STT_WAIT_S  # refuse while STT jobs queue longer; 0: off
    drain_deadline_s: float = 300.0
    mqtt: str | None = None
    mqtt_audio: bool = False
    dispatch: bool = False
    dialer: str | None = None
    name: str | None = None
    plugins: list[str] = field(default_factory=list)
    transports: list[str] = field(default_factory=list)  # --transport names (see TRANSPORTS)
    sip_port: int = 5060
    sip_advertise: str | None = None  # address in SIP Contact/SDP when --host is a wildcard
    public_url: str | None = None  # how carriers reach this service (webhook answers, stream URLs)
    http_limits: HttpLimits = field(default_factory=HttpLimits)  # per source, on the worker's HTTP app
    sip_limits: SipLimits = field(default_factory=SipLimits)  # per source, on the SIP socket
    stream_start_timeout_s: float = 10.0  # a carrier media socket's time to send a valid start
    #: Key of the carrier stream tokens, shared by the workers (None: VOXWIRE_STREAM_SECRET or random).
    stream_secret: str | None = field(default=None, repr=False)

    def plugin_specs(self) -> list[str]:
        """The plugins to start: one per --transport (deduplicated), then --plugin ones."""
        specs = [TRANSPORT_PLUGINS[name] for name in self.transports if name in TRANSPORT_PLUGINS]
        return list(dict.fromkeys([*specs, *self.plugins]))

    def worker_id(self, index: int) -> str:
        """Unique per worker and stable across restarts: the MQTT client id depends on it."""
        return f"{self.name or socket.gethostname()}-{index}"


@dataclass(slots=True)
class WorkerContext:
    config: WorkerConfig
    index: int
    worker_id: str
    bus: Any = None  # transports.mqtt.Bus when --mqtt is on
    reuse_port: bool = True
    http_app: web.Application | None = None  # the worker's HTTP app; plugins may add routes before it starts


def _load(spec: str) -> Callable[..., Awaitable[Any]]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"plugin must look like MODULE:FUNCTION, got {spec!r}")
    return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]


async def _publish_cpu(budget: CpuBudget) -> None:
    while True:
        prometheus.CPU_CORES.set(round(budget.process_cores, 3))
        await asyncio.sleep(1.0)


async def run_worker(config: WorkerConfig, index: int = 0, *, stop: asyncio.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT (or ``stop``), then drain and return 0."""
    worker_id = config.worker_id(index)
    manager = CallManager(load_bot(config.agent), max_sessions=config.max_sessions)
    closers: list[Callable[[], Awaitable[Any]]] = [manager.close]
    budget = await attach_admission(manager, workers=config.workers, cpu_budget=config.cpu_budget,
                                    max_stt_wait_s=config.max_stt_wait_s)
    if budget is not None:
        closers.append(budget.close)
    prometheus.attach(manager)
    manager.on_refusal(lambda transport, reason: prometheus.count_refusal(reason))
    dialer = load_dialer(config.dialer) if config.dialer else None
    ctx = WorkerContext(config, index, worker_id)
    dispatcher = None
    if config.mqtt:
        from transports.mqtt import JobDispatcher, serve_mqtt_audio, start_bus

        ctx.bus = bus = await start_bus(manager, config.mqtt, worker_id)
        closers.append(bus.close)
        if config.mqtt_audio:
            closers.append((await serve_mqtt_audio(manager, bus.connection, worker_id)).close)
        if config.dispatch:
            if dialer is None:
                raise ValueError("--dispatch needs --dialer MODULE:FUNCTION to place the calls")
            dispatcher = JobDispatcher(manager, bus.connection, dialer, worker_id)
            await dispatcher.start()
            closers.append(dispatcher.close)
    ctx.http_app = make_app(manager, worker=worker_id, dialer=dialer)
    install_limits(ctx.http_app, config.http_limits)  # before plugins mount their routes on it
    for spec in config.plugin_specs():
        closers.append((await _load(spec)(manager, ctx)).close)
    runner = web.AppRunner(ctx.http_app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.host, config.port, reuse_port=True).start()
    closers.append(runner.cleanup)

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    cpu_task = loop.create_task(_publish_cpu(budget)) if budget else None
    logger.info("worker %s (pid %d) serving on %s:%d", worker_id, os.getpid(), config.host, config.port)
    try:
        await stop.wait()
        logger.info("worker %s draining: %d live call(s), deadline %.0f s",
                    worker_id, len(manager.sessions), config.drain_deadline_s)
        prometheus.DRAINING.set(1)
        if ctx.bus is not None:
            ctx.bus.set_state("draining")
        if dispatcher is not None:
            await dispatcher.stop_taking()
        await manager.drain(config.drain_deadline_s)
    finally:
        if cpu_task is not None:
            cpu_task.cancel()
        for close in reversed(closers):
            try:
                await close()
            except Exception:
                logger.exception("worker %s: shutdown step %r failed", worker_id, close)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    logger.info("worker %s drained and stopped", worker_id)
    return 0


#: Exit code of a worker whose configuration cannot work (bad --mqtt login, bad --agent):
#: restarting it would fail the same way, so the supervisor stops instead.
EXIT_CONFIG = 78


def worker_entry(config: WorkerConfig, index: int, log_level: int) -> None:
    """Process entry point (spawned by the supervisor)."""
    logging.basicConfig(level=log_level, format=f"%(asctime)s %(levelname)s w{index} %(name)s: %(message)s")
    config_errors: tuple[type[BaseException], ...] = (ValueError, ImportError, AttributeError, OSError)
    if config.mqtt:
        from transports.mqtt.connection import MqttConnectError

        config_errors += (MqttConnectError,)
    try:
        code = asyncio.run(run_worker(config, index))
    except config_errors as exc:
        logger.error("worker %d cannot start: %s", index, exc)
        code = EXIT_CONFIG
    raise SystemExit(code)
