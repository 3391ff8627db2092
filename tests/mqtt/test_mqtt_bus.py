"""The MQTT bus against a real mosquitto: a call's events out, commands in."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from agent.calls import CallInfo, CallManager
from agent.frames import EventFrame, InterruptFrame, TransferFrame
from agent.session import Session
from tests.mqtt.broker import Broker
from tests.mqtt.helpers import Collect, ScriptedConversation, TextRecordingOutput, ToneTTS, Watcher, publish
from transports.local import ScriptedInput, Segment
from transports.mqtt import Bus, start_bus
from transports.mqtt.schema import ENVELOPE, EVENTS

HOST = "127.0.0.1"


@dataclass
class LiveCall:
    manager: CallManager
    bus: Bus
    session: Session
    out: TextRecordingOutput
    watch: Watcher
    prefix: str
    collect: Collect

    @property
    def commands(self) -> str:
        return f"{self.prefix}/w1/{self.session.session_id}/commands"

    async def command(self, broker: Broker, **body: object) -> None:
        await publish(HOST, broker.plain_port, self.commands, json.dumps({"v": 1, **body}))


@contextlib.asynccontextmanager
async def live_call(broker: Broker, bot: Callable[[Collect], list] | None = None) -> AsyncIterator[LiveCall]:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    collect = Collect()
    factory = bot or (lambda c: [c, ScriptedConversation(), ToneTTS()])
    manager = CallManager(lambda info: factory(collect))
    bus = await start_bus(manager, broker.url(prefix=prefix), "w1")
    try:
        async with Watcher(HOST, broker.plain_port, f"{prefix}/#") as watch:
            out = TextRecordingOutput()
            session = await manager.start_call(
                CallInfo(session_id=f"call-{uuid.uuid4().hex[:6]}", transport="test", caller="+15550100"),
                ScriptedInput([Segment(gap_s=30.0)], end_after_s=None), out)
            yield LiveCall(manager, bus, session, out, watch, prefix, collect)
    finally:
        await manager.close()
        await bus.close()


def assert_schema(event: dict) -> None:
    spec_fields = EVENTS[event["type"]].fields
    assert set(event) == set(ENVELOPE) | set(spec_fields), event
    assert event["v"] == 1


@pytest.mark.asyncio
async def test_events_of_a_call_arrive_in_order(broker: Broker) -> None:
    async with live_call(broker) as call:
        stopped = await call.watch.event("bot_stopped_speaking", timeout=8)
        await call.command(broker, command="hangup")
        ended = await call.watch.event("call_ended")
    events = [e for e in call.watch.events() if e["session"] == call.session.session_id]
    for event in events:
        assert_schema(event)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), "events arrived out of order or with gaps"
    types = [e["type"] for e in events]
    assert types[0] == "call_started" and types[-1] == "call_ended"
    order = [types.index(t) for t in ("call_started", "transcript", "user_turn", "bot_started_speaking",
                                      "bot_heard", "bot_stopped_speaking", "command_ack", "call_ended")]
    assert order == sorted(order), types
    transcripts = call.watch.events("transcript")
    assert [(t["text"], t["final"]) for t in transcripts] == [("book a", False), ("book a table for two", True)]
    assert call.watch.events("call_started")[0]["caller"] == "+15550100"
    assert stopped["interrupted"] is False and stopped["text_heard"].strip() == "Sure, for what time?"
    assert call.watch.events("bot_said")[0]["text"] == "Sure, for what time?"
    latency = call.watch.events("turn_latency")[0]
    assert 250 < latency["figures"]["eos_to_first_audio_ms"] < 2000, latency
    assert ended["reason"] == "hangup"
    topics = {topic.rsplit("/", 1)[-1] for topic, _ in call.watch.messages}
    assert {"call", "transcript", "bot", "latency", "ack", "status"} <= topics


@pytest.mark.asyncio
async def test_say_command_mid_call_is_spoken(broker: Broker) -> None:
    async with live_call(broker) as call:
        await call.watch.event("bot_stopped_speaking", timeout=8)
        played_before = len(call.out.played)
        await call.command(broker, command="say", text="Your table is booked for seven.", id="c1")
        await call.watch.event("command_ack", command_id="c1")
        heard = await call.watch.wait_for(lambda: [e for e in call.watch.events("bot_stopped_speaking")
                                                   if "booked" in e["text_heard"]], timeout=6)
    assert heard[0]["text_heard"].strip() == "Your table is booked for seven."
    assert "Your table is booked for seven." in call.out.spoken
    # the caller heard about 30 ms per character of tone after the command
    played_s = (len(call.out.played) - played_before) * 0.02
    assert played_s >= 0.8 * 0.03 * len("Your table is booked for seven."), played_s
    said = [e for e in call.watch.events("bot_said") if e["source"] == "say"]
    assert said and said[0]["text"] == "Your table is booked for seven."


@pytest.mark.asyncio
async def test_hangup_command_ends_the_call(broker: Broker) -> None:
    async with live_call(broker) as call:
        await call.watch.event("call_started")
        await call.command(broker, command="hangup", reason="operator", id="h1")
        result = await asyncio.wait_for(call.manager.wait(call.session.session_id), 3)
        ended = await call.watch.event("call_ended")
    assert result is not None and result.reason == "operator"
    assert ended["reason"] == "operator" and call.manager.sessions == {}


@pytest.mark.asyncio
async def test_invalid_commands_get_error_events_and_the_call_goes_on(broker: Broker) -> None:
    bad = {
        b"{not json": "not valid UTF-8 JSON",
        b"[1, 2]": "must be a JSON object",
        json.dumps({"command": "say", "text": "hi"}).encode(): "missing schema version",
        json.dumps({"v": 2, "command": "say", "text": "hi"}).encode(): "unsupported schema version 2",
        json.dumps({"v": 1, "command": "dance"}).encode(): "unknown command 'dance'",
        json.dumps({"v": 1, "command": "say", "text": 5}).encode(): "'text' must be str, got int",
        json.dumps({"v": 1, "command": "say"}).encode(): "missing field 'text'",
        json.dumps({"v": 1, "command": "say", "text": "x", "loud": True}).encode(): "unknown field(s) ['loud']",
        json.dumps({"v": 1, "command": "transfer", "target": "sip:a@b", "reason": 7}).encode(): "'reason' must be str",
        json.dumps({"v": 1, "command": "llm_config"}).encode(): "give 'system_prompt', 'tools' or both",
        b"x" * (65 * 1024): "the limit is 65536",
    }
    async with live_call(broker) as call:
        await call.watch.event("call_started")
        for payload in bad:
            await publish(HOST, broker.plain_port, call.commands, payload)
        await publish(HOST, broker.plain_port, f"{call.prefix}/w1/nobody/commands",
                      json.dumps({"v": 1, "command": "interrupt"}))
        await call.watch.wait_for(lambda: len(call.watch.events("error")) >= len(bad) + 1)
        await call.command(broker, command="interrupt", id="still-alive")
        await call.watch.event("command_ack", command_id="still-alive")
        assert call.session.session_id in call.manager.sessions
    errors = call.watch.events("error")
    for event in errors:
        assert_schema(event)
    messages = [e["message"] for e in errors]
    for expected in bad.values():
        assert any(expected in m for m in messages), (expected, messages)
    unknown = [e for e in errors if e["session"] == "nobody"]
    assert unknown and "no live call 'nobody'" in unknown[0]["message"] and unknown[0]["command"] == "interrupt"
    topics = {t for t, b in call.watch.messages if isinstance(b, dict) and b.get("type") == "error"}
    assert all(t.endswith("/errors") for t in topics)


@pytest.mark.asyncio
async def test_control_commands_become_frames_in_the_call(broker: Broker) -> None:
    async with live_call(broker, bot=lambda c: [c]) as call:
        await call.watch.event("call_started")
        await call.command(broker, command="mute", id="1")
        await call.command(broker, command="unmute", id="2")
        await call.command(broker, command="llm_config", system_prompt="Be brief.",
                           tools=[{"type": "function", "function": {"name": "book"}}], id="3")
        await call.command(broker, command="transfer", target="sip:desk@example.com", id="4")
        await call.command(broker, command="interrupt", id="5")
        await call.watch.wait_for(lambda: len(call.watch.events("command_ack")) == 5)
    seen = call.collect.seen
    events = [(f.kind, f.data) for f in seen if isinstance(f, EventFrame) and f.kind in ("mute", "llm_config")]
    assert events == [("mute", {"muted": True}), ("mute", {"muted": False}),
                      ("llm_config", {"system_prompt": "Be brief.",
                                      "tools": [{"type": "function", "function": {"name": "book"}}]})]
    transfers = [f for f in seen if isinstance(f, TransferFrame)]
    assert [t.target for t in transfers] == ["sip:desk@example.com"]
    assert any(isinstance(f, InterruptFrame) for f in seen)
    assert [e["command_id"] for e in call.watch.events("command_ack")] == ["1", "2", "3", "4", "5"]


@pytest.mark.asyncio
async def test_say_command_is_spoken_by_piper_and_understood_by_whisper(broker: Broker) -> None:
    pytest.importorskip("piper")
    pytest.importorskip("faster_whisper")
    from stt.models import load_model
    from stt.whisper import transcribe
    from tts.piper import PiperTTSNode

    async with live_call(broker, bot=lambda c: [c, PiperTTSNode()]) as call:
        await call.watch.event("call_started")
        await call.command(broker, command="say", text="Your table is booked for seven o'clock.", id="p1")
        stopped = await call.watch.event("bot_stopped_speaking", timeout=15)
    audio = call.out.audio()
    assert 1.0 < len(audio) / 16000 < 5.0
    model = await asyncio.get_running_loop().run_in_executor(None, load_model)
    text, _ = await asyncio.get_running_loop().run_in_executor(None, transcribe, model, audio)
    words = set(text.lower().replace(".", "").replace(",", "").split())
    assert {"table", "booked"} <= words and words & {"seven", "7"}, text
    assert stopped["text_heard"] == "Your table is booked for seven o'clock."
