"""What the fault tests check a call with: real caller speech, what was heard, what was left behind."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import soxr

from agent.session import Session
from agent.workers import run_blocking
from transports.local import RecordingOutput
from transports.sip import message as sipmsg

_speech: dict[tuple[str, int], np.ndarray] = {}


def speech(text: str, rate: int = 16000) -> np.ndarray:
    """``text`` spoken by piper as int16 at ``rate`` (cached per process)."""
    if (text, rate) not in _speech:
        from tts.piper import load_voice, synthesize_blocking

        voice = load_voice()
        native = synthesize_blocking(voice, text, volume=0.5)
        _speech[(text, rate)] = np.asarray(soxr.resample(native, voice.config.sample_rate, rate), dtype=np.int16)
    return _speech[(text, rate)]


async def heard(model: Any, output: RecordingOutput, since: float = 0.0, until: float = float("inf")) -> str:
    """Lower-case words Whisper hears in what ``output`` played between two instants."""
    from stt.whisper import transcribe

    chunks = [c.pcm for c in output.played if since <= c.t <= until]
    if not chunks:
        return ""
    rate = output.sample_rate or 16000
    audio = np.frombuffer(b"".join(chunks), dtype=np.int16).astype(np.float32) / 32768.0
    pad = np.zeros(rate // 2, dtype=np.float32)
    audio = np.concatenate([pad, audio, pad])
    if rate != 16000:
        audio = soxr.resample(audio, rate, 16000).astype(np.float32)
    text, _ = await run_blocking(transcribe, model, audio, pool="stt")
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def first_audio_after(output: RecordingOutput, t: float) -> float | None:
    return next((c.t for c in output.played if c.t >= t), None)


def longest_gap(output: RecordingOutput, since: float = 0.0) -> float:
    """Longest silence the caller heard between two played chunks after ``since``."""
    times = [c.t for c in output.played if c.t >= since]
    return max((b - a for a, b in zip(times, times[1:])), default=0.0)


def leftover_tasks(session: Session) -> list[asyncio.Task[Any]]:
    """Live tasks still running code of this session's nodes (should be none after it ends)."""
    ours = {id(node) for node in session._root.nodes()}
    found = []
    for task in asyncio.all_tasks():
        if task.done() or task is asyncio.current_task():
            continue
        if any(id(f.f_locals.get("self")) in ours for f in _frames(task)):
            found.append(task)
    owned = [t for node in session._root.nodes() for t in (*node._tasks, node._worker) if t and not t.done()]
    return found + [t for t in owned if t not in found]


@contextmanager
def loop_errors() -> Iterator[list[dict[str, Any]]]:
    """Collect what reaches the event loop's exception handler (exceptions that escaped)."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
    finally:
        loop.set_exception_handler(previous)


def _frames(task: asyncio.Task[Any]) -> list[Any]:
    """Every frame of a suspended task, innermost last (``get_stack`` gives only the outer one)."""
    frames, awaiting = [], task.get_coro()
    while awaiting is not None:
        frame = getattr(awaiting, "cr_frame", None) or getattr(awaiting, "gi_frame", None)
        if frame is not None:
            frames.append(frame)
        awaiting = getattr(awaiting, "cr_await", None) or getattr(awaiting, "gi_yieldfrom", None)
    return frames


class UdpPeer(asyncio.DatagramProtocol):
    """A SIP peer on a real UDP socket (any 127.0.0.0/8 address): sends datagrams, keeps the replies."""

    def __init__(self) -> None:
        self.replies: list[sipmsg.SipMessage] = []
        self._transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, host: str = "127.0.0.1") -> UdpPeer:
        _, peer = await asyncio.get_running_loop().create_datagram_endpoint(cls, local_addr=(host, 0))
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.replies.append(sipmsg.parse(data))

    def send(self, data: bytes, port: int, host: str = "127.0.0.1") -> None:
        assert self._transport is not None
        self._transport.sendto(data, (host, port))

    async def wait_for(self, count: int, timeout: float = 2.0) -> list[sipmsg.SipMessage]:
        """The replies once there are ``count`` of them (or whatever came within ``timeout``)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.replies) < count and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        return list(self.replies)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def sip_request(method: str, call_id: str, *, uri: str = "sip:bot@127.0.0.1", version: str = "SIP/2.0",
                body: bytes = b"") -> bytes:
    """A minimal well-formed request (``version`` and ``uri`` may be made wrong on purpose)."""
    head = (f"{method} {uri} {version}\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-{call_id}\r\n"
            f"From: <sip:caller@127.0.0.1>;tag=1\r\nTo: <sip:bot@127.0.0.1>\r\nCall-ID: {call_id}\r\n"
            f"CSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body
