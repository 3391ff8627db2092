"""Calls from a Python WebRTC peer (aiortc): media, data channel, interrupt, clean-up.

These run in the host namespace in a second or two each; the browser test
proves the same path with Chromium.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from agent.calls import CallInfo, CallManager
from agent.frames import (
    DTMFFrame,
    Frame,
    InputAudioFrame,
    OutputAudioFrame,
    UserTurnFrame,
)
from agent.node import DOWNSTREAM, Node
from transports.webrtc import WebRTCServer, allow_loopback_candidates, serve_webrtc
from tests.webrtc.webrtc_client import PyCaller

TOKEN = "s3cret-test-token"


class Recorder(Node):
    """Keeps every frame that reaches it; answers 'talk' with seconds of tone, word by word."""

    def __init__(self, talk_s: float = 3.0) -> None:
        super().__init__(name="recorder")
        self.seen: list[Frame] = []
        self.talk_s = talk_s

    async def process(self, frame: Frame, direction: int) -> None:
        self.seen.append(frame)
        await self.emit(frame, direction)
        if isinstance(frame, UserTurnFrame) and frame.text == "talk":
            self.spawn(self._talk())

    async def _talk(self) -> None:
        rate, n = 16000, 320
        t = np.arange(int(self.talk_s * rate)) / rate
        tone = (0.3 * 32767 * np.sin(2 * np.pi * 500 * t)).astype(np.int16)
        for i in range(0, len(tone), n):
            word = f"w{i // n} " if i % (10 * n) == 0 else ""
            await self.emit(OutputAudioFrame(pcm=tone[i:i + n].tobytes(), sample_rate=rate, text=word, turn_id=1))

    def of(self, cls: type) -> list:
        return [f for f in self.seen if isinstance(f, cls)]


class Echo(Node):
    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, InputAudioFrame) and direction == DOWNSTREAM:
            await self.emit(OutputAudioFrame(pcm=frame.pcm, sample_rate=frame.sample_rate))
        await self.emit(frame, direction)


@contextlib.asynccontextmanager
async def running(bot, **options) -> AsyncIterator[tuple[WebRTCServer, CallManager]]:  # type: ignore[no-untyped-def]
    allow_loopback_candidates()
    manager = CallManager(bot)
    server = await serve_webrtc(manager, "127.0.0.1", 0, **options)
    try:
        yield server, manager
    finally:
        await server.close()
        await manager.close()


async def connected(caller: PyCaller, server: WebRTCServer, token: str | None = None) -> None:
    status, body = await caller.call(server.url, token)
    assert status == 200, body
    await caller.wait_open()


async def until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.asyncio
async def test_caller_audio_reaches_the_graph_at_its_rate_and_the_bot_is_heard() -> None:
    recorder = Recorder()
    async with running(lambda info: [recorder, Echo()]) as (server, manager):
        caller = PyCaller()
        await connected(caller, server)
        await until(lambda: len(recorder.of(InputAudioFrame)) >= 60)
        frames = recorder.of(InputAudioFrame)[10:60]
        assert {(f.sample_rate, f.channels) for f in frames} == {(16000, 1)}
        pcm = np.concatenate([f.samples for f in frames]).astype(np.float64) / 32768
        assert abs(dominant_hz(pcm, 16000) - 440) < 10
        assert 0.1 < np.sqrt(np.mean(pcm**2)) < 0.3  # a 0.3-peak tone survives Opus at its level
        await until(lambda: sum(r.rms > 0.05 for r in caller.audio) >= 20)  # the echo came back
        await caller.close()


@pytest.mark.asyncio
async def test_typed_text_and_keypad_reach_the_graph_and_bad_messages_do_not_end_the_call() -> None:
    recorder = Recorder()
    async with running(lambda info: [recorder], token=TOKEN) as (server, manager):
        caller = PyCaller()
        await connected(caller, server, TOKEN)
        await caller.wait_for("session", session_id=caller.session_id)
        caller.send({"type": "text", "text": "  book me for Tuesday "})
        caller.send({"type": "dtmf", "digit": "5"})
        caller.send("{not json")
        caller.send({"type": "dtmf", "digit": "X"})
        caller.send({"type": "dtmf", "digit": "#"})
        await until(lambda: len(recorder.of(DTMFFrame)) == 2)
        assert [f.digit for f in recorder.of(DTMFFrame)] == ["5", "#"]
        typed = recorder.of(UserTurnFrame)
        assert [f.text for f in typed] == ["book me for Tuesday"]
        shown = await caller.wait_for("transcript", source="text")
        assert shown["text"] == "book me for Tuesday" and shown["turn_id"] == typed[0].turn_id
        await until(lambda: len([e for e in caller.events if e["type"] == "error"]) >= 2)
        errors = [e for e in caller.events if e["type"] == "error"]
        assert len(errors) == 2 and "not JSON" in errors[0]["message"] and "digit" in errors[1]["message"]
        assert manager.sessions, "a bad message ended the call"
        await caller.close()


@pytest.mark.asyncio
async def test_an_interrupt_silences_the_bot_within_one_frame() -> None:
    recorder = Recorder(talk_s=4.0)
    async with running(lambda info: [recorder]) as (server, manager):
        caller = PyCaller()
        await connected(caller, server)
        call = next(iter(server.calls.values()))
        caller.send({"type": "text", "text": "talk"})
        await until(lambda: sum(r.rms > 0.05 for r in caller.audio) >= 25)  # half a second of bot speech
        session = manager.sessions[call.session_id]
        sent_before = call.output.track.audio_frames_sent
        interrupted_at = time.monotonic()
        await session.interrupt()
        await asyncio.sleep(0.4)
        assert call.output.track.audio_frames_sent - sent_before <= 1
        # At the caller: only what was already in flight, which is aiortc's receive jitter buffer
        # (4 frames of prefetch) plus the frame on the wire; nothing audible after that.
        audible_after = [r for r in caller.audio if r.t > interrupted_at and r.rms > 0.01]
        assert len(audible_after) <= 6, f"{len(audible_after)} bot frames arrived after the interrupt"
        assert all(r.t < interrupted_at + 0.2 for r in audible_after), "bot audio arrived 200 ms after the interrupt"
        assert any(r.t > interrupted_at + 0.3 for r in caller.audio), "the track stopped sending silence"
        barge_in = await caller.wait_for("barge_in")
        assert barge_in["heard"].startswith("w0 w10 ") and "w190" not in barge_in["heard"]
        await caller.close()


@pytest.mark.asyncio
async def test_hanging_up_or_dropping_the_connection_ends_the_call() -> None:
    async with running(lambda info: [Recorder()]) as (server, manager):
        polite = PyCaller()
        await connected(polite, server)
        polite.send({"type": "hangup"})
        await until(lambda: not manager.sessions and not server.calls, timeout=3)
        assert manager.results[-1].reason == "caller_hangup"
        await polite.close()

        rude = PyCaller()
        await connected(rude, server)
        await until(lambda: bool(manager.sessions))
        await rude.close()  # no goodbye: DTLS closes, aiortc notices
        await until(lambda: not manager.sessions and not server.calls, timeout=5)


@pytest.mark.asyncio
async def test_the_bot_ending_the_call_closes_the_connection() -> None:
    async with running(lambda info: [Recorder()]) as (server, manager):
        caller = PyCaller()
        await connected(caller, server)
        session = next(iter(manager.sessions.values()))
        await session.end("goodbye")
        ended = await caller.wait_for("call_ended")
        assert ended["reason"] == "goodbye"
        await until(lambda: caller.pc.connectionState == "closed" and not server.calls, timeout=5)


@pytest.mark.asyncio
async def test_a_peer_that_never_connects_is_cleaned_up() -> None:
    async with running(lambda info: [Recorder()], connect_timeout_s=0.5) as (server, manager):
        caller = PyCaller()
        await caller.pc.setLocalDescription(await caller.pc.createOffer())
        import aiohttp

        async with aiohttp.ClientSession() as http:
            offer = {"sdp": caller.pc.localDescription.sdp, "type": "offer"}
            async with http.post(server.url + "offer", json=offer) as response:
                assert response.status == 200
        await caller.pc.close()  # gone before ICE could start
        call = next(iter(server.calls.values()))
        await until(lambda: not server.calls and not manager.sessions, timeout=3)
        assert call.close_reason == "connect_timeout"


@pytest.mark.asyncio
async def test_peer_connections_get_only_the_configured_ice_servers() -> None:
    async with running(lambda info: [Recorder()]) as (server, manager):
        caller = PyCaller()
        await connected(caller, server)
        call = next(iter(server.calls.values()))
        assert call.pc._RTCPeerConnection__configuration.iceServers == []  # not aiortc's Google default
        assert "typ srflx" not in call.pc.localDescription.sdp
        await caller.close()


def test_call_info_describes_a_webrtc_call() -> None:
    seen: list[CallInfo] = []

    async def scenario() -> None:
        def bot(info: CallInfo) -> list[Node]:
            seen.append(info)
            return [Recorder()]

        async with running(bot) as (server, manager):
            caller = PyCaller()
            await connected(caller, server)
            await caller.close()

    asyncio.run(scenario())
    assert seen[0].transport == "webrtc"
    assert (seen[0].input_sample_rate, seen[0].output_sample_rate) == (16000, 48000)
    assert seen[0].caller == "127.0.0.1"
