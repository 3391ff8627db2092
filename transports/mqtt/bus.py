"""The event/control bus: every call's life on MQTT, and a remote control for it.

The bus hangs off a ``CallManager``: each new call gets a :class:`SessionFeed`
that observes the frames leaving the call's graph and publishes the ones an
operator cares about under ``<prefix>/<worker>/<session>/<class>`` (see
:mod:`transports.mqtt.schema`). Commands arrive on
``<prefix>/<worker>/<session>/commands`` and become frames pushed into the
call. A bad command costs an error event and a log line, nothing more.

Observers run inside the graph, so a feed only encodes and queues; the
connection publishes from its own task, and a broker outage never reaches a
call.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

from agent import metrics
from agent.calls import CallInfo, CallManager
from agent.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    ErrorFrame,
    EventFrame,
    Frame,
    LLMTurnEndFrame,
    MetricsFrame,
    PlayoutProgressFrame,
    SpeakFrame,
    TranscriptionFrame,
    TransferFrame,
    UserTurnFrame,
)
from agent.session import Session
from transports.mqtt.connection import MqttConnection
from transports.mqtt.schema import EVENTS, Command, CommandError, encode_event, parse_command, qos_of
from transports.mqtt.settings import MqttSettings, parse_mqtt_url, topic_level

logger = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 5.0
_BARGE_IN_WINDOW_S = 5.0


class SessionFeed:
    """One call's events out, its commands in."""

    def __init__(self, bus: Bus, session: Session, info: CallInfo) -> None:
        self.bus = bus
        self.session = session
        self.info = info
        self.level = topic_level(session.session_id)
        self.base = f"{bus.prefix}/{bus.worker}/{self.level}"
        self.seq = 0
        self.heard_turn = 0
        self.heard_text = ""
        self.heard_s = 0.0
        self._barge_start_t: float | None = None
        self._commands: asyncio.Queue[Command] = asyncio.Queue(maxsize=100)
        self._runner: asyncio.Task[None] | None = None
        self._routes: dict[type, Callable[[Any], None] | None] = {}

    # ---------------------------------------------------------------- events

    def emit(self, event_type: str, **fields: Any) -> None:
        self.seq += 1
        payload = encode_event(event_type, worker=self.bus.worker, session=self.level, seq=self.seq, **fields)
        self.bus.connection.publish(f"{self.base}/{EVENTS[event_type].topic}", payload,
                                    qos=qos_of(event_type, fields))

    def observe(self, frame: Frame, direction: int) -> None:
        """Session observer: cheap for the frames nobody publishes (audio)."""
        kind = type(frame)
        if kind not in self._routes:
            self._routes[kind] = next(
                (route for cls, route in self._route_table() if issubclass(kind, cls)), None)
        route = self._routes[kind]
        if route is not None:
            route(frame)

    def _route_table(self) -> list[tuple[type, Callable[[Any], None]]]:
        return [
            (EventFrame, self._on_event),
            (TranscriptionFrame, lambda f: self.emit(
                "transcript", text=f.text, final=f.final, language=f.language, turn_id=f.turn_id)),
            (UserTurnFrame, lambda f: self.emit("user_turn", text=f.text, turn_id=f.turn_id)),
            (LLMTurnEndFrame, self._on_llm_turn_end),
            (BotStartedSpeakingFrame, lambda f: self.emit("bot_started_speaking", turn_id=f.turn_id)),
            (PlayoutProgressFrame, self._on_progress),
            (BotStoppedSpeakingFrame, self._on_bot_stopped),
            (MetricsFrame, self._on_metric),
            (ErrorFrame, lambda f: self.emit(
                "error", message=f.message, node=f.node, fatal=f.fatal, command=None, command_id=None)),
        ]

    def _on_event(self, frame: EventFrame) -> None:
        if frame.kind == "call_started":
            info = self.info
            self.emit("call_started", transport=info.transport, direction=info.direction,
                      caller=info.caller, callee=info.callee)
        elif frame.kind == "call_ended":
            result = self.session.result
            self.emit("call_ended", reason=frame.data.get("reason"), error=frame.data.get("error"),
                      duration_s=round(result.duration_s, 3) if result else None,
                      turns=len(result.turns) if result else None)
            self.bus.detach(self)
        else:
            self.emit("event", kind=frame.kind, data=frame.data)

    def _on_llm_turn_end(self, frame: LLMTurnEndFrame) -> None:
        if frame.text:
            self.emit("bot_said", text=frame.text, turn_id=frame.turn_id, source="llm")

    def _on_progress(self, frame: PlayoutProgressFrame) -> None:
        changed = frame.turn_id != self.heard_turn or frame.text_heard != self.heard_text
        self.heard_turn, self.heard_text, self.heard_s = frame.turn_id, frame.text_heard, frame.played_s
        if changed and frame.text_heard:
            self.emit("bot_heard", text=frame.text_heard.strip(), turn_id=frame.turn_id,
                      played_s=round(frame.played_s, 3))

    def _on_bot_stopped(self, frame: BotStoppedSpeakingFrame) -> None:
        same_turn = frame.turn_id == self.heard_turn
        self.emit("bot_stopped_speaking", turn_id=frame.turn_id, interrupted=frame.interrupted,
                  text_heard=self.heard_text.strip() if same_turn else "",
                  played_s=round(self.heard_s, 3) if same_turn else 0.0)

    def _on_metric(self, frame: MetricsFrame) -> None:
        if frame.name == metrics.BARGE_IN_START:
            self._barge_start_t = frame.t
        elif frame.name == metrics.BARGE_IN_STOP:
            start = self._barge_start_t
            recent = start is not None and 0 <= frame.t - start < _BARGE_IN_WINDOW_S
            barge_ms = round((frame.t - start) * 1000, 1) if recent and start is not None else None
            self._barge_start_t = None
            self.emit("barge_in", turn_id=self.heard_turn, text_heard=self.heard_text.strip(),
                      played_s=round(self.heard_s, 3), barge_in_ms=barge_ms)
        elif frame.name == metrics.FIRST_AUDIO_OUT:
            row = next((r for r in self.session.turns.summary() if r["turn_id"] == frame.turn_id), None)
            figures = {k: v for k, v in (row or {}).items() if k != "turn_id"}
            if any(name.endswith("_ms") for name in figures):
                self.emit("turn_latency", turn_id=frame.turn_id, figures=figures)

    # -------------------------------------------------------------- commands

    def submit(self, command: Command) -> None:
        """Queue a command; they run one at a time, in arrival order."""
        try:
            self._commands.put_nowait(command)
        except asyncio.QueueFull:
            self.command_failed(CommandError("too many commands queued for this call", command.name, command.id))
            return
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run_commands())

    def command_failed(self, error: CommandError) -> None:
        logger.warning("MQTT command for call %s refused: %s", self.session.session_id, error.reason)
        self.emit("error", message=error.reason, node=None, fatal=False, command=error.command,
                  command_id=error.command_id)

    async def _run_commands(self) -> None:
        while True:
            command = await self._commands.get()
            try:
                await asyncio.wait_for(self._apply(command), COMMAND_TIMEOUT_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure becomes an error event
                self.command_failed(CommandError(f"{command.name} failed: {type(exc).__name__}: {exc}",
                                                 command.name, command.id))
            else:
                self.emit("command_ack", command=command.name, command_id=command.id)

    async def _apply(self, command: Command) -> None:
        session, args = self.session, command.args
        if command.name == "say":
            frame = SpeakFrame(text=args["text"], uninterruptible=args.get("uninterruptible", False))
            await session.push(frame)
            self.emit("bot_said", text=frame.text, turn_id=frame.turn_id, source="say")
        elif command.name == "interrupt":
            await session.interrupt()
        elif command.name == "hangup":
            await session.end(args.get("reason", "hangup"))
        elif command.name == "transfer":
            await session.push(TransferFrame(target=args["target"], reason=args.get("reason", "transfer")))
        elif command.name in ("mute", "unmute"):
            await session.push(EventFrame(kind="mute", data={"muted": command.name == "mute"}))
        elif command.name == "llm_config":
            await session.push(EventFrame(kind="llm_config", data=dict(args)))

    def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            self._runner = None


class Bus:
    """Publishes every call of a ``CallManager`` and takes commands for them."""

    def __init__(self, manager: CallManager, connection: MqttConnection, worker_id: str) -> None:
        self.manager = manager
        self.connection = connection
        self.prefix = connection.settings.prefix
        self.worker = topic_level(worker_id)
        self.state = "online"
        self.feeds: dict[str, SessionFeed] = {}
        self._attached = False

    @property
    def status_topic(self) -> str:
        return f"{self.prefix}/{self.worker}/status"

    @property
    def commands_filter(self) -> str:
        return f"{self.prefix}/{self.worker}/+/commands"

    def status(self, state: str | None = None) -> tuple[str, bytes]:
        payload = encode_event("worker_status", worker=self.worker, session=None, seq=0,
                               state=state or self.state, pid=os.getpid(), sessions=len(self.manager.sessions))
        return self.status_topic, payload

    async def start(self, wait_s: float = 5.0) -> None:
        """Subscribe to commands, connect (raises MqttConnectError on bad login/TLS), attach."""
        await self.connection.subscribe(self.commands_filter, self._on_command, qos=1)
        await self.connection.start(wait_s)
        if not self._attached:
            self.manager.on_session(self.attach)
            self._attached = True

    def set_state(self, state: str) -> None:
        """Announce ``online``/``draining`` (retained) to whoever watches the fleet."""
        self.state = state
        topic, payload = self.status()
        self.connection.publish(topic, payload, qos=1, retain=True)

    async def close(self) -> None:
        for feed in list(self.feeds.values()):
            feed.close()
        await self.connection.close(final=self.status("offline"))

    def attach(self, session: Session, info: CallInfo) -> None:
        feed = SessionFeed(self, session, info)
        self.feeds[feed.level] = feed
        session.subscribe(feed.observe)

    def detach(self, feed: SessionFeed) -> None:
        feed.close()
        if self.feeds.get(feed.level) is feed:
            del self.feeds[feed.level]

    async def _on_command(self, topic: str, payload: bytes) -> None:
        level = topic.split("/")[-2]
        feed = self.feeds.get(level)
        try:
            command = parse_command(payload)
            if feed is None:
                raise CommandError(f"no live call {level!r} on worker {self.worker}", command.name, command.id)
        except CommandError as error:
            if feed is not None:
                feed.command_failed(error)
            else:
                logger.warning("MQTT command on %s refused: %s", topic, error.reason)
                body = encode_event("error", worker=self.worker, session=level, seq=0, message=error.reason,
                                    node=None, fatal=False, command=error.command, command_id=error.command_id)
                self.connection.publish(f"{self.prefix}/{self.worker}/{level}/errors", body, qos=1)
            return
        feed.submit(command)


def connection_for(settings: MqttSettings, worker_id: str, role: str = "bus",
                   status: Callable[[], tuple[str, bytes]] | None = None,
                   will: tuple[str, bytes] | None = None) -> MqttConnection:
    """A connection with a client id unique to this worker and role."""
    return MqttConnection(settings, client_id=f"voxwire-{topic_level(worker_id)}-{role}"[:64],
                          online=status, will=will)


async def start_bus(manager: CallManager, url: str, worker_id: str, *, wait_s: float = 5.0) -> Bus:
    """Turn the bus on for ``manager`` (the ``--mqtt URL`` option); ``await bus.close()`` at exit.

    Raises ValueError for a malformed URL and ``MqttConnectError`` when the
    broker refuses the login or the TLS handshake fails.
    """
    settings = parse_mqtt_url(url)
    bus: Bus | None = None

    def online() -> tuple[str, bytes]:
        assert bus is not None
        return bus.status()

    offline_will = encode_event("worker_status", worker=topic_level(worker_id), session=None, seq=0,
                                state="offline", pid=os.getpid(), sessions=None)
    connection = connection_for(settings, worker_id, status=online,
                                will=(f"{settings.prefix}/{topic_level(worker_id)}/status", offline_will))
    bus = Bus(manager, connection, worker_id)
    await bus.start(wait_s)
    logger.info("MQTT bus for worker %s on %s (prefix %s, TLS %s)", bus.worker, settings.address,
                settings.prefix, "on" if settings.tls else "off")
    return bus
