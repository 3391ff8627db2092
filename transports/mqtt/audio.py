"""Calls over MQTT for devices that cannot do WebRTC (kiosks, intercoms).

A device talks to a worker on two topics, raw 16-bit little-endian mono PCM
at the server's rate (16 kHz by default), one 20 ms frame per message, QoS 0:

* ``<prefix>/<worker>/<session>/audio/in``  device → bot. The first frame of
  an unknown ``<session>`` (the device picks the id) starts a call; an empty
  message hangs up; silence longer than ``idle_timeout_s`` hangs up too.
* ``<prefix>/<worker>/<session>/audio/out`` bot → device, paced in real time
  by the output transport; an empty message means the call is over.

A refused call (busy, draining) gets a ``call_refused`` event with the reason
on ``<prefix>/<worker>/<session>/call``. Events and commands of a call are the
bus's (run :func:`~transports.mqtt.bus.start_bus` on the same manager).
Malformed frames are dropped with a log line; they never end the call.
"""

from __future__ import annotations

import asyncio
import logging
import time

from agent.calls import CallInfo, CallManager, CallRejected
from agent.frames import EventFrame, Frame
from agent.session import SessionResult
from transports.base import InputTransport, OutputTransport
from transports.mqtt.connection import MqttConnection
from transports.mqtt.schema import encode_event
from transports.mqtt.settings import topic_level

logger = logging.getLogger(__name__)

TRANSPORT = "mqtt"
REFUSAL_COOLDOWN_S = 5.0


class MqttAudioInput(InputTransport):
    """Caller audio from ``…/audio/in``; ``EventFrame(kind="mute")`` silences it."""

    def __init__(self, *, sample_rate: int, name: str | None = None) -> None:
        super().__init__(sample_rate=sample_rate, name=name)
        self.muted = False

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, EventFrame) and frame.kind == "mute":
            self.muted = bool(frame.data.get("muted", True))
        await super().process(frame, direction)

    async def feed(self, pcm: bytes) -> None:
        # Muted audio becomes silence rather than nothing, so media time and the VAD keep running.
        await self.push_audio(bytes(len(pcm)) if self.muted else pcm)


class MqttAudioOutput(OutputTransport):
    """Bot audio to ``…/audio/out``, one chunk per message, dropped while the broker is away."""

    def __init__(self, connection: MqttConnection, topic: str, *, sample_rate: int, name: str | None = None) -> None:
        super().__init__(sample_rate=sample_rate, name=name)
        self.connection = connection
        self.topic = topic

    async def write_audio(self, pcm: bytes) -> None:
        self.connection.publish(self.topic, pcm, qos=0, expendable=True)


class _AudioCall:
    """One device's call: a bounded frame queue and the task feeding the graph."""

    def __init__(self, server: MqttAudioServer, level: str) -> None:
        self.server = server
        self.level = level
        self.base = f"{server.prefix}/{server.worker}/{level}"
        self.frames: asyncio.Queue[bytes] = asyncio.Queue(maxsize=50)  # 1 s of 20 ms frames
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"mqtt audio {level}")
        self.bad_frames = 0

    def deliver(self, pcm: bytes) -> None:
        if self.frames.full():  # the graph is behind: old audio is worth less than new
            self.frames.get_nowait()
        self.frames.put_nowait(pcm)

    async def _run(self) -> None:
        server = self.server
        rate = server.sample_rate
        transport_in = MqttAudioInput(sample_rate=rate)
        transport_out = MqttAudioOutput(server.connection, f"{self.base}/audio/out", sample_rate=rate)
        info = CallInfo(session_id=self.level, transport=TRANSPORT, input_sample_rate=rate,
                        output_sample_rate=rate, caller=self.level)
        try:
            if self.level in server.manager.sessions:
                raise CallRejected("session id in use")
            session = await server.manager.start_call(info, transport_in, transport_out)
        except CallRejected as exc:
            server.refused(self.level, exc.reason)
            return
        ended = asyncio.ensure_future(server.manager.wait(session.session_id))
        try:
            await self._pump(transport_in, ended)
        finally:
            if not ended.done():
                await transport_in.hangup("transport_closed")
            result: SessionResult | None = await ended
            server.connection.publish(f"{self.base}/audio/out", b"", qos=1)
            logger.info("MQTT audio call %s ended: %s", self.level, result.reason if result else "?")

    async def _pump(self, transport_in: MqttAudioInput, ended: asyncio.Future[SessionResult | None]) -> None:
        max_bytes = self.server.sample_rate * 2 * self.server.max_frame_ms // 1000
        while not ended.done():
            getter = asyncio.ensure_future(self.frames.get())
            done, _ = await asyncio.wait({getter, ended}, timeout=self.server.idle_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                if not done:
                    await transport_in.hangup("audio_timeout")
                    return
                continue
            pcm = getter.result()
            if not pcm:
                await transport_in.hangup("caller_hangup")
                return
            if len(pcm) % 2 or len(pcm) > max_bytes:
                self.bad_frames += 1
                if self.bad_frames in (1, 10, 100) or self.bad_frames % 1000 == 0:
                    logger.warning("MQTT audio call %s: dropped a %d-byte frame (need 16-bit PCM, at most %d ms)"
                                   " [%d so far]", self.level, len(pcm), self.server.max_frame_ms, self.bad_frames)
                continue
            await transport_in.feed(pcm)


class MqttAudioServer:
    """Answers devices that stream audio to this worker over MQTT."""

    def __init__(
        self,
        manager: CallManager,
        connection: MqttConnection,
        worker_id: str,
        *,
        sample_rate: int = 16000,
        idle_timeout_s: float = 10.0,
        max_frame_ms: int = 200,
    ) -> None:
        self.manager = manager
        self.connection = connection
        self.prefix = connection.settings.prefix
        self.worker = topic_level(worker_id)
        self.sample_rate = sample_rate
        self.idle_timeout_s = idle_timeout_s
        self.max_frame_ms = max_frame_ms
        self.calls: dict[str, _AudioCall] = {}
        self._refused: dict[str, float] = {}

    @property
    def audio_filter(self) -> str:
        return f"{self.prefix}/{self.worker}/+/audio/in"

    async def start(self) -> None:
        await self.connection.subscribe(self.audio_filter, self._on_audio, qos=0)

    async def close(self) -> None:
        await self.connection.unsubscribe(self.audio_filter)
        calls = list(self.calls.values())
        for call in calls:
            call.deliver(b"")
        if calls:
            await asyncio.wait([call.task for call in calls], timeout=5)

    def refused(self, level: str, reason: str) -> None:
        logger.info("MQTT audio call %s refused: %s", level, reason)
        self._refused[level] = time.monotonic()
        self.calls.pop(level, None)
        payload = encode_event("call_refused", worker=self.worker, session=level, seq=0, reason=reason)
        self.connection.publish(f"{self.prefix}/{self.worker}/{level}/call", payload, qos=1)

    async def _on_audio(self, topic: str, payload: bytes) -> None:
        level = topic.split("/")[-3]
        call = self.calls.get(level)
        if call is None or call.task.done():
            if not payload:
                return
            refused_at = self._refused.get(level)
            if refused_at is not None and time.monotonic() - refused_at < REFUSAL_COOLDOWN_S:
                return  # one refusal per attempt, not one per 20 ms frame
            self._refused.pop(level, None)
            call = self.calls[level] = _AudioCall(self, level)
            call.task.add_done_callback(lambda _t, lv=level, c=call: self._forget(lv, c))
        call.deliver(payload)

    def _forget(self, level: str, call: _AudioCall) -> None:
        if self.calls.get(level) is call:
            del self.calls[level]
        if call.task.cancelled():
            return
        exc = call.task.exception()
        if exc is not None:
            logger.error("MQTT audio call %s failed: %r", level, exc)


async def serve_mqtt_audio(manager: CallManager, connection: MqttConnection, worker_id: str,
                           **options: float | int) -> MqttAudioServer:
    """Start answering MQTT audio calls on ``connection`` (e.g. ``bus.connection``)."""
    server = MqttAudioServer(manager, connection, worker_id, **options)  # type: ignore[arg-type]
    await server.start()
    return server
