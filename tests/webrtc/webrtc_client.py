"""A scripted WebRTC caller in Python (aiortc), for fast tests without a browser.

It does what the page does — audio track out, ``events`` data channel, one
complete offer posted to ``/offer`` — and keeps every event and every audio
frame it receives, with arrival times.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame


class ToneTrack(MediaStreamTrack):
    """A 48 kHz mono microphone playing a tone (or silence), paced in real time."""

    kind = "audio"

    def __init__(self, freq: float | None = 440.0, level: float = 0.3) -> None:
        super().__init__()
        self.freq = freq
        self.level = level
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        samples = 960
        if self._start is None:
            self._start = time.monotonic()
        else:
            due = self._start + self._n / 48000
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        t = (self._n + np.arange(samples)) / 48000
        wave = np.zeros(samples) if self.freq is None else self.level * np.sin(2 * math.pi * self.freq * t)
        frame = AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update((wave * 32767).astype(np.int16).tobytes())
        frame.pts, frame.sample_rate, frame.time_base = self._n, 48000, fractions.Fraction(1, 48000)
        self._n += samples
        return frame


@dataclass
class Received:
    t: float
    rms: float


@dataclass
class PyCaller:
    """One call from Python; ``await caller.call(url)`` returns the HTTP status and body."""

    mic: MediaStreamTrack = field(default_factory=ToneTrack)
    events: list[dict[str, Any]] = field(default_factory=list)
    audio: list[Received] = field(default_factory=list)
    pc: RTCPeerConnection = field(default_factory=lambda: RTCPeerConnection(RTCConfiguration(iceServers=[])))
    session_id: str | None = None

    def __post_init__(self) -> None:
        self.channel = self.pc.createDataChannel("events")
        self.channel.on("message", lambda m: self.events.append(json.loads(m)))
        self.pc.addTrack(self.mic)
        self.pc.on("track", self._on_track)
        self._reader: asyncio.Task[None] | None = None

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            pcm = frame.to_ndarray().astype(np.float64) / 32768.0
            self.audio.append(Received(time.monotonic(), float(np.sqrt(np.mean(pcm**2)))))

    async def call(self, url: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        payload = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        async with aiohttp.ClientSession() as http:
            async with http.post(url + "offer", json=payload, headers=headers) as response:
                body = await response.json()
                status = response.status
        if status == 200:
            self.session_id = body["session_id"]
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
        return status, body

    async def wait_for(self, kind: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if event.get("type") == kind and all(event.get(k) == v for k, v in match.items()):
                    return event
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {kind} event {match} within {timeout} s; got {self.events}")

    async def wait_open(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.channel.readyState != "open":
            if time.monotonic() > deadline:
                raise AssertionError("the data channel did not open")
            await asyncio.sleep(0.02)

    def send(self, message: dict[str, Any] | str) -> None:
        self.channel.send(message if isinstance(message, str) else json.dumps(message))

    async def close(self) -> None:
        await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()
