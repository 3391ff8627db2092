"""The bus's link to the broker: restarts, login, TLS, and the worker's status."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid

import pytest

from agent.calls import CallInfo, CallManager
from agent.frames import SpeakFrame
from tests.mqtt.broker import PASSWORD, USER, Broker
from tests.mqtt.helpers import ScriptedConversation, TextRecordingOutput, ToneTTS, Watcher, publish
from transports.local import ScriptedInput, Segment
from transports.mqtt import MqttConnectError, start_bus

HOST = "127.0.0.1"


def quiet_manager() -> CallManager:
    return CallManager(lambda info: [ScriptedConversation(after_s=0.1), ToneTTS()])


@pytest.mark.asyncio
async def test_a_live_call_survives_a_broker_restart_and_events_resume(private_broker: Broker) -> None:
    manager = quiet_manager()
    bus = await start_bus(manager, private_broker.url(prefix="rs"), "w1")
    out = TextRecordingOutput()
    try:
        async with Watcher(HOST, private_broker.plain_port, "rs/#") as before:
            session = await manager.start_call(CallInfo(session_id="c1", transport="test"),
                                               ScriptedInput([Segment(gap_s=30)], end_after_s=None), out)
            await before.event("bot_stopped_speaking", timeout=8)
            last_seq_before = max(e["seq"] for e in before.events() if e["session"] == "c1")
        private_broker.stop()
        await asyncio.sleep(0.3)
        assert not bus.connection.connected.is_set()
        # The call goes on without the broker: the bot speaks, its events wait in the outbox.
        await session.push(SpeakFrame(text="Still here while the broker is down."))
        await asyncio.sleep(1.5)
        assert "Still here while the broker is down." in out.spoken
        assert "c1" in manager.sessions and bus.connection.queued > 0
        private_broker.start()
        await asyncio.wait_for(bus.connection.connected.wait(), 10)
        async with Watcher(HOST, private_broker.plain_port, "rs/#") as after:
            await publish(HOST, private_broker.plain_port, "rs/w1/c1/commands",
                          json.dumps({"v": 1, "command": "say", "text": "Back again.", "id": "after"}))
            await after.event("command_ack", command_id="after", timeout=5)
            await after.wait_for(lambda: [e for e in after.events("bot_stopped_speaking")
                                          if e["text_heard"].endswith("Back again.")], timeout=6)
            seqs = [e["seq"] for e in after.events() if e["session"] == "c1"]
            await publish(HOST, private_broker.plain_port, "rs/w1/c1/commands",
                          json.dumps({"v": 1, "command": "hangup"}))
            ended = await after.event("call_ended")
        said_back = [e for e in after.events("bot_said") if e["text"] == "Back again."][0]
        # the events of the speech during the outage were queued, numbered, and came before
        assert said_back["seq"] > last_seq_before + 5 and min(seqs) > last_seq_before
        assert len(seqs) == len(set(seqs))
        assert ended["reason"] == "hangup" and ended["turns"] >= 2
        assert bus.connection.connects == 2
    finally:
        await manager.close()
        await bus.close()


@pytest.mark.asyncio
async def test_password_login_and_tls_carry_events(broker: Broker) -> None:
    for kind in ("password", "tls"):
        prefix = f"{kind}{uuid.uuid4().hex[:6]}"
        manager = quiet_manager()
        async with Watcher(HOST, broker.plain_port, f"{prefix}/#") as watch:
            bus = await start_bus(manager, broker.url(kind, prefix=prefix), "w1")
            try:
                await manager.start_call(CallInfo(session_id="c1", transport="test"),
                                         ScriptedInput([Segment(gap_s=5)], end_after_s=None), TextRecordingOutput())
                final = await watch.event("transcript", final=True, timeout=5)
            finally:
                await manager.close()
                await bus.close()
        assert final["text"] == "book a table for two"


@pytest.mark.asyncio
async def test_a_refused_login_is_reported_clearly(broker: Broker) -> None:
    with pytest.raises(MqttConnectError) as wrong:
        await start_bus(quiet_manager(), broker.url("password", password="wrong"), "w1")
    assert wrong.value.kind == "auth"
    assert f"refused the login of user '{USER}'" in str(wrong.value) and "check the user name and password" in str(wrong.value)
    assert "wrong" not in str(wrong.value) and PASSWORD not in str(wrong.value)
    with pytest.raises(MqttConnectError) as anonymous:
        await start_bus(quiet_manager(), f"mqtt://{HOST}:{broker.password_port}/x", "w1")
    assert anonymous.value.kind == "auth" and "anonymous client" in str(anonymous.value)


@pytest.mark.asyncio
async def test_tls_failures_are_reported_clearly(broker: Broker) -> None:
    with pytest.raises(MqttConnectError) as untrusted:
        await start_bus(quiet_manager(), broker.url("tls", ca=False), "w1")
    assert untrusted.value.kind == "tls"
    assert "certificate verify failed" in str(untrusted.value) and "?ca=" in str(untrusted.value)
    with pytest.raises(MqttConnectError) as not_tls:
        await start_bus(quiet_manager(), f"mqtts://{USER}:{PASSWORD}@{HOST}:{broker.password_port}/x?ca={broker.cert}",
                        "w1")
    assert not_tls.value.kind == "tls" and "is this a TLS port?" in str(not_tls.value)


@pytest.mark.asyncio
async def test_worker_status_is_retained_and_the_last_will_reports_a_lost_worker(broker: Broker) -> None:
    prefix = f"st{uuid.uuid4().hex[:6]}"
    bus = await start_bus(quiet_manager(), broker.url(prefix=prefix), "w7")
    try:
        async with Watcher(HOST, broker.plain_port, f"{prefix}/w7/status") as watch:
            await watch.wait_for(lambda: watch.events("worker_status"))
            client = bus.connection._client
            assert client is not None
            raw = client._client.socket()
            raw.shutdown(socket.SHUT_RDWR)  # the network dies under the worker: no DISCONNECT sent
            await watch.wait_for(lambda: [e["state"] for e in watch.events()][-2:] == ["offline", "online"], 10)
            bus.set_state("draining")
            await watch.wait_for(lambda: watch.events()[-1]["state"] == "draining")
    finally:
        await bus.close()
    async with Watcher(HOST, broker.plain_port, f"{prefix}/w7/status") as late:
        retained = await late.wait_for(lambda: late.events("worker_status"))
    assert retained[-1]["state"] == "offline" and retained[-1]["worker"] == "w7"
    assert bus.connection.connects == 2


@pytest.mark.asyncio
async def test_a_worker_that_starts_before_its_broker_connects_when_it_comes_up(private_broker: Broker) -> None:
    private_broker.stop()
    manager = quiet_manager()
    bus = await start_bus(manager, private_broker.url(prefix="late"), "w1", wait_s=0.3)
    try:
        assert not bus.connection.connected.is_set() and bus.connection.last_error is not None
        assert bus.connection.last_error.kind == "network" and "Connection refused" in str(bus.connection.last_error)
        await manager.start_call(CallInfo(session_id="early", transport="test"),
                                 ScriptedInput([Segment(gap_s=10)], end_after_s=None), TextRecordingOutput())
        private_broker.start()
        await asyncio.wait_for(bus.connection.connected.wait(), 10)
        async with Watcher(HOST, private_broker.plain_port, "late/#") as watch:
            await publish(HOST, private_broker.plain_port, "late/w1/early/commands",
                          json.dumps({"v": 1, "command": "hangup", "reason": "operator"}))
            ended = await watch.event("call_ended", timeout=5)
        assert ended["reason"] == "operator"
    finally:
        await manager.close()
        await bus.close()
