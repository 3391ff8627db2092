"""A device (kiosk, intercom) calls a worker over MQTT audio topics."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import aiomqtt
import numpy as np
import pytest

from agent.calls import CallManager
from tests.mqtt.broker import Broker
from tests.mqtt.helpers import Echo, Watcher
from transports.mqtt import serve_mqtt_audio, start_bus

HOST = "127.0.0.1"
RATE = 16000
FRAME = RATE // 50


def tone(seconds: float, hz: float = 300.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16)


async def stream(device: aiomqtt.Client, topic: str, pcm: np.ndarray, between=None) -> None:  # type: ignore[no-untyped-def]
    """Publish 20 ms frames in real time; ``between(i)`` runs before frame i."""
    start = time.monotonic()
    for i in range(len(pcm) // FRAME):
        if between is not None:
            await between(i)
        await device.publish(topic, pcm[i * FRAME:(i + 1) * FRAME].tobytes(), qos=0)
        delay = start + (i + 1) * 0.02 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def rms(frame: bytes) -> float:
    samples = np.frombuffer(frame, dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


@pytest.mark.asyncio
async def test_a_device_call_echoes_audio_honours_mute_and_hangs_up(broker: Broker,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    prefix = f"au{uuid.uuid4().hex[:6]}"
    manager = CallManager(lambda info: [Echo()])
    bus = await start_bus(manager, broker.url(prefix=prefix), "w1")
    server = await serve_mqtt_audio(manager, bus.connection, "w1")
    base = f"{prefix}/w1/kiosk-1"
    try:
        async with Watcher(HOST, broker.plain_port, f"{base}/#") as watch, \
                aiomqtt.Client(HOST, broker.plain_port, protocol=aiomqtt.ProtocolVersion.V5) as device:

            async def mute_half_way(i: int) -> None:
                if i == 3:
                    await device.publish(f"{base}/audio/in", b"\x01\x02\x03", qos=0)  # odd length: dropped
                if i == 40:
                    await device.publish(f"{base}/commands", json.dumps({"v": 1, "command": "mute", "id": "m"}), qos=1)
                    await watch.event("command_ack", command_id="m", timeout=2)

            with caplog.at_level(logging.WARNING, logger="transports.mqtt.audio"):
                await stream(device, f"{base}/audio/in", tone(1.6), between=mute_half_way)
            await asyncio.sleep(0.3)
            out = [b for t, b in watch.messages if t == f"{base}/audio/out"]
            await device.publish(f"{base}/audio/in", b"", qos=0)
            ended = await watch.event("call_ended", timeout=3)
            await watch.wait_for(lambda: [b for t, b in watch.messages if t == f"{base}/audio/out" and b == b""])
    finally:
        await server.close()
        await manager.close()
        await bus.close()
    assert ended["reason"] == "caller_hangup" and watch.events("call_started")[0]["transport"] == "mqtt"
    assert len(out) >= 70 and all(len(frame) == FRAME * 2 for frame in out)
    loud = [rms(frame) > 3000 for frame in out]
    assert all(loud[:30]), "the caller's tone came straight back"
    assert not any(loud[-15:]), "after mute the bot heard silence"
    assert any("dropped a 3-byte frame" in r.message for r in caplog.records)


@pytest.mark.asyncio
async def test_a_device_call_over_capacity_is_refused_once_with_the_reason(broker: Broker) -> None:
    prefix = f"ar{uuid.uuid4().hex[:6]}"
    manager = CallManager(lambda info: [Echo()], max_sessions=1)
    bus = await start_bus(manager, broker.url(prefix=prefix), "w1")
    server = await serve_mqtt_audio(manager, bus.connection, "w1")
    try:
        async with Watcher(HOST, broker.plain_port, f"{prefix}/#") as watch, \
                aiomqtt.Client(HOST, broker.plain_port, protocol=aiomqtt.ProtocolVersion.V5) as device:
            first = asyncio.create_task(stream(device, f"{prefix}/w1/first/audio/in", tone(1.0)))
            await watch.event("call_started")
            await stream(device, f"{prefix}/w1/second/audio/in", tone(0.5))
            await first
            refused = await watch.event("call_refused")
            await device.publish(f"{prefix}/w1/first/audio/in", b"", qos=0)
            await watch.event("call_ended")
    finally:
        await server.close()
        await manager.close()
        await bus.close()
    assert refused["session"] == "second" and refused["reason"] == "busy"
    assert len(watch.events("call_refused")) == 1
    assert [e["session"] for e in watch.events("call_started")] == ["first"]
