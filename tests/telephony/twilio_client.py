"""A Twilio Media Streams test client written from Twilio's WebSocket message docs.

It plays Twilio's part: ``connected``, ``start``, paced 20 ms ``media``,
``dtmf``, ``stop``; and it *plays back* what the server sends in real time,
echoing each ``mark`` when the audio queued before it has played (optionally
later, like a carrier with a deep buffer), and on ``clear`` discards queued
audio and returns the marks still pending, as Twilio does.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field

import aiohttp
import numpy as np

from agent.audio import ulaw_decode, ulaw_encode


@dataclass
class Received:
    media_bytes: int = 0
    audio: bytearray = field(default_factory=bytearray)
    marks: list[tuple[float, str]] = field(default_factory=list)  # when sent back, name
    clears: list[float] = field(default_factory=list)
    first_media_at: float | None = None
    last_media_at: float | None = None
    close_code: int | None = None
    close_reason: str = ""


class TwilioTestClient:
    def __init__(self, url: str, *, call_sid: str = "CA0001", extra_ack_delay_s: float = 0.0,
                 parameters: dict[str, str] | None = None) -> None:
        self.url, self.call_sid = url, call_sid
        self.stream_sid = "MZ" + call_sid[2:]
        self.extra_ack_delay_s = extra_ack_delay_s
        self.parameters = parameters or {}
        self.got = Received()
        self._sequence = 0
        self._chunk = 0
        self._queue: list[tuple[str, float | str]] = []  # ("audio", seconds) | ("mark", name)
        self._session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._play_clock = 0.0

    async def __aenter__(self) -> TwilioTestClient:
        self._session = aiohttp.ClientSession()
        self.ws = await self._session.ws_connect(self.url)
        self._tasks = [asyncio.create_task(self._receive()), asyncio.create_task(self._playback())]
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self.send({
            "event": "start", "start": {
                "accountSid": "AC0001", "streamSid": self.stream_sid, "callSid": self.call_sid,
                "tracks": ["inbound"], "customParameters": self.parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            }, "streamSid": self.stream_sid,
        })
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        if self._session is not None:
            await self._session.close()

    async def send(self, message: dict[str, object]) -> None:
        self._sequence += 1
        message.setdefault("sequenceNumber", str(self._sequence))
        assert self.ws is not None
        await self.ws.send_str(json.dumps(message))

    async def send_raw(self, text: str) -> None:
        assert self.ws is not None
        await self.ws.send_str(text)

    async def say(self, pcm8k: np.ndarray) -> None:
        """Stream caller audio in real time, 20 ms per media message."""
        start = time.monotonic()
        for i in range(len(pcm8k) // 160):
            self._chunk += 1
            payload = base64.b64encode(ulaw_encode(pcm8k[i * 160 : (i + 1) * 160])).decode()
            await self.send({"event": "media", "streamSid": self.stream_sid, "media": {
                "track": "inbound", "chunk": str(self._chunk), "timestamp": str(self._chunk * 20),
                "payload": payload}})
            delay = start + (i + 1) * 0.02 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def silence(self, seconds: float) -> None:
        await self.say(np.zeros(int(seconds * 8000), dtype=np.int16))

    async def dtmf(self, digit: str) -> None:
        await self.send({"event": "dtmf", "streamSid": self.stream_sid, "dtmf": {"track": "inbound_track",
                                                                                 "digit": digit}})

    async def stop(self) -> None:
        await self.send({"event": "stop", "streamSid": self.stream_sid,
                         "stop": {"accountSid": "AC0001", "callSid": self.call_sid}})

    def heard(self) -> np.ndarray:
        return np.frombuffer(ulaw_decode(bytes(self.got.audio)), dtype=np.int16)

    async def _receive(self) -> None:
        assert self.ws is not None
        while True:
            message = await self.ws.receive()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                self.got.close_code = self.ws.close_code
                self.got.close_reason = str(message.extra or "")
                return
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            assert data.get("streamSid") == self.stream_sid, data
            now = time.monotonic()
            if data["event"] == "media":
                audio = base64.b64decode(data["media"]["payload"])
                self.got.media_bytes += len(audio)
                self.got.audio += audio
                self.got.first_media_at = self.got.first_media_at or now
                self.got.last_media_at = now
                self._queue.append(("audio", len(audio) / 8000))
            elif data["event"] == "mark":
                self._queue.append(("mark", data["mark"]["name"]))
            elif data["event"] == "clear":
                self.got.clears.append(now)
                pending = [name for kind, name in self._queue if kind == "mark"]
                self._queue.clear()
                for name in pending:  # Twilio returns unplayed marks after a clear
                    await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def _playback(self) -> None:
        """Play queued audio in real time; echo marks when their audio is done."""
        while True:
            if not self._queue:
                await asyncio.sleep(0.005)
                continue
            kind, value = self._queue.pop(0)
            if kind == "audio":
                await asyncio.sleep(float(value))
            else:
                if self.extra_ack_delay_s:
                    asyncio.get_running_loop().call_later(
                        self.extra_ack_delay_s, lambda n=value: asyncio.ensure_future(self._ack(str(n))))
                else:
                    await self._ack(str(value))

    async def _ack(self, name: str) -> None:
        if self.ws is None or self.ws.closed:
            return
        self.got.marks.append((time.monotonic(), name))
        await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
