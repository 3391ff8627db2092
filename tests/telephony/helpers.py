"""Test tools for telephony: speech, pcaps for sipp, a loopback sniffer, bot nodes."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile

from agent.audio import resample, ulaw_decode, ulaw_encode
from agent.frames import DTMFFrame, EventFrame, Frame, InputAudioFrame, OutputAudioFrame, StartFrame
from agent.node import Node

SIPP = shutil.which("sipp")
ESPEAK = shutil.which("espeak-ng")
TEST_SSRC = 0x5151_5151


def speech_8k(text: str) -> np.ndarray:
    """``text`` spoken by espeak-ng, as int16 at 8 kHz."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run([ESPEAK or "espeak-ng", "-s", "150", "-w", str(wav), text], check=True)
        data, rate = soundfile.read(wav, dtype="float32")
    samples = resample(data, rate, 8000)
    return np.clip(samples * 32767, -32768, 32767).astype(np.int16)


def write_rtp_pcap(path: Path, pcm8k: np.ndarray, *, payload_type: int = 0, ssrc: int = TEST_SSRC) -> None:
    """A libpcap file of 20 ms PCMU RTP packets (Ethernet/IPv4/UDP), as sipp replays."""
    frames = len(pcm8k) // 160
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(frames):
            payload = ulaw_encode(pcm8k[i * 160 : (i + 1) * 160])
            rtp = struct.pack("!BBHII", 0x80, (0x80 if i == 0 else 0) | payload_type, i, i * 160, ssrc) + payload
            udp = struct.pack("!HHHH", 6000, 6000, 8 + len(rtp), 0) + rtp
            ip = _ipv4(udp)
            frame = b"\x00" * 12 + b"\x08\x00" + ip
            seconds = 1_700_000_000 + (i * 20_000) // 1_000_000
            out.write(struct.pack("<IIII", seconds, (i * 20_000) % 1_000_000, len(frame), len(frame)))
            out.write(frame)


def _ipv4(udp: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1"))
    total = sum(struct.unpack("!10H", header))
    total = (total & 0xFFFF) + (total >> 16)
    checksum = ~total & 0xFFFF
    return header[:10] + struct.pack("!H", checksum) + header[12:] + udp


class LoopbackCapture:
    """Sniffs RTP on ``lo`` with an AF_PACKET socket (root), like tcpdump would."""

    def __init__(self) -> None:
        self.packets: list[tuple[float, int, int, bytes]] = []  # (time, src port, dst port, udp payload)
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LoopbackCapture:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            if addr[2] == socket.PACKET_OUTGOING or len(data) < 42 or data[12:14] != b"\x08\x00":
                continue
            ihl = (data[14] & 0x0F) * 4
            if data[23] != 17:
                continue
            udp = data[14 + ihl :]
            src, dst = struct.unpack("!HH", udp[:4])
            self.packets.append((time.monotonic(), src, dst, udp[8:]))

    def rtp_from(self, src_port: int, payload_type: int | None = None) -> list[tuple[float, bytes]]:
        """(arrival, RTP packet) for packets sent from ``src_port``."""
        found = []
        for at, src, _dst, payload in self.packets:
            if src == src_port and len(payload) >= 12 and payload[0] >> 6 == 2:
                if payload_type is None or payload[1] & 0x7F == payload_type:
                    found.append((at, payload))
        return found


def decode_pcmu_stream(packets: list[tuple[float, bytes]]) -> np.ndarray:
    """Concatenate PCMU payloads in sequence order (12-byte headers)."""
    ordered = sorted(packets, key=lambda p: struct.unpack("!H", p[1][2:4])[0])
    return np.frombuffer(b"".join(ulaw_decode(p[1][12:]) for p in ordered), dtype=np.int16)


def best_correlation(reference: np.ndarray, signal: np.ndarray) -> tuple[float, int]:
    """Peak normalised cross-correlation of ``reference`` inside ``signal``, and its lag."""
    ref = reference.astype(np.float64)
    sig = signal.astype(np.float64)
    if len(sig) < len(ref):
        sig = np.pad(sig, (0, len(ref) - len(sig)))
    n = 1 << (len(sig) + len(ref)).bit_length()
    corr = np.fft.irfft(np.fft.rfft(sig, n) * np.conj(np.fft.rfft(ref, n)), n)[: len(sig) - len(ref) + 1]
    window = np.convolve(sig**2, np.ones(len(ref)), mode="valid")
    norm = np.sqrt(window * np.sum(ref**2)) + 1e-9
    score = corr / norm
    lag = int(np.argmax(score))
    return float(score[lag]), lag


async def run_sipp(args: list[str], timeout: float = 60.0, cwd: Path | None = None) -> tuple[int, str]:
    """Run sipp to completion; returns (exit code, output tail). Its log files go to ``cwd``."""
    if cwd is None:
        with tempfile.TemporaryDirectory(prefix="sipp-") as tmp:
            return await run_sipp(args, timeout, Path(tmp))
    proc = await asyncio.create_subprocess_exec(
        SIPP or "sipp", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL, cwd=cwd,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return -1, out.decode(errors="replace")[-3000:]
    return proc.returncode or 0, out.decode(errors="replace")[-3000:]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RecordingBot(Node):
    """A scripted bot: records what the caller sent, says ``reply`` once audio arrives."""

    def __init__(self, reply: np.ndarray | None = None, reply_text: str = "", *, speak_after_s: float = 0.3) -> None:
        super().__init__(name="recording-bot")
        self.reply, self.reply_text, self.speak_after_s = reply, reply_text, speak_after_s
        self.heard: list[np.ndarray] = []
        self.heard_at: list[float] = []
        self.digits: list[str] = []
        self.upstream: list[Frame] = []
        self.events: list[str] = []
        self.sample_rate = 16000
        self._spoke = False

    async def process(self, frame: Frame, direction: int) -> None:
        if direction == 1:
            self.upstream.append(frame)
        elif isinstance(frame, StartFrame):
            self.sample_rate = frame.input_sample_rate
        elif isinstance(frame, InputAudioFrame):
            self.heard.append(frame.samples.copy())
            self.heard_at.append(time.monotonic())
            if self.reply is not None and not self._spoke:
                self._spoke = True
                self.spawn(self._speak(), interruptible=False)
            return
        elif isinstance(frame, EventFrame):
            self.events.append(frame.kind)
        elif isinstance(frame, DTMFFrame):
            self.digits.append(frame.digit)
            return
        await self.emit(frame, direction)

    async def _speak(self) -> None:
        await asyncio.sleep(self.speak_after_s)
        assert self.reply is not None
        await self.emit(OutputAudioFrame(pcm=self.reply.tobytes(), sample_rate=8000, text=self.reply_text, turn_id=1))

    def heard_8k(self) -> np.ndarray:
        audio = np.concatenate(self.heard) if self.heard else np.zeros(0, dtype=np.int16)
        return resample(audio.astype(np.float32) / 32768, self.sample_rate, 8000)


def is_root() -> bool:
    return os.geteuid() == 0


def windowed_match(reference: np.ndarray, signal: np.ndarray, window_s: float = 0.3, rate: int = 8000) -> float:
    """Median best correlation of each voiced window of ``reference`` anywhere in ``signal``.

    Robust to what a jitter buffer legitimately does under CPU load (conceal a
    frame, drop one to catch up), which breaks a single-lag correlation.
    """
    size = int(window_s * rate)
    scores = []
    for start in range(0, len(reference) - size + 1, size):
        window = reference[start : start + size]
        if np.sqrt(np.mean(window.astype(np.float64) ** 2)) > 500:
            scores.append(best_correlation(window, signal)[0])
    return float(np.median(scores)) if scores else 0.0
