"""A real browser as the caller: headless Chromium or Firefox against the page's test mode.

The end-to-end tests and ``bench/webrtc.py`` use this to call the server the
way a user would. The page's test mode (``?autostart=1&record=N&report=PATH``)
calls at once, records what the microphone sent and what the bot played
(WebAudio: channel 0 and 1), and posts that back with ``getStats()`` and the
data-channel log. Chromium's fake microphone plays a WAV file. Firefox's is a
tone, and without a sound card its WebAudio never starts, so there the page
records the bot alone with MediaRecorder (decoded here with PyAV).

How Chromium behaves here (flags, loopback-only namespaces, aioice's missing
127.0.0.1 candidate) is written up in the project's real-peers notes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

REPORT_PATH = "/__report"


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise FileNotFoundError("chromium is not installed (Debian: apt-get install chromium)")
    return path


def chromium_args(url: str, mic_wav: Path, profile_dir: str) -> list[str]:
    """Headless, no network chatter, fake devices, loopback ICE allowed."""
    return [
        chromium_path(),
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        f"--use-file-for-fake-audio-capture={mic_wav}%noloop",
        "--allow-loopback-in-peer-connection",
        f"--user-data-dir={profile_dir}",
        url,
    ]


@functools.cache
def loopback_namespace_available() -> bool:
    """Can this process create a network namespace with only ``lo`` (``unshare -n``)?"""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    try:
        done = subprocess.run(
            ["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def in_loopback_namespace(argv: list[str]) -> list[str]:
    """``argv`` wrapped to run in a fresh namespace whose only interface is ``lo``."""
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', *argv]


@dataclass
class PageReport:
    """What the page saw: a 2-channel recording (mic, bot), stats, events, timings."""

    audio: np.ndarray  # float32, shape (frames, 2): [:, 0] microphone, [:, 1] bot
    sample_rate: int
    recorder: str = "webaudio"  # or "mediarecorder": no output device, bot channel only
    marks: dict[str, float] = field(default_factory=dict)  # performance.now() ms
    log: list[dict[str, Any]] = field(default_factory=list)  # data-channel events, with "t"
    stats: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    session_id: str | None = None

    @property
    def mic(self) -> np.ndarray:
        return self.audio[:, 0]

    @property
    def bot(self) -> np.ndarray:
        return self.audio[:, 1]

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.log if e.get("type") == kind]

    def stat(self, kind: str, media: str = "audio") -> dict[str, Any]:
        """The first ``getStats()`` entry of a type (e.g. ``inbound-rtp``) for a media kind."""
        for entry in self.stats:
            if entry.get("type") == kind and entry.get("kind", media) == media:
                return entry
        return {}

    def to_json(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate, "recorder": self.recorder, "marks": self.marks, "log": self.log,
            "stats": self.stats, "error": self.error, "session_id": self.session_id,
        }

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "page_audio.npy", self.audio)
        (directory / "page.json").write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, directory: Path) -> PageReport:
        meta = json.loads((directory / "page.json").read_text())
        return cls(audio=np.load(directory / "page_audio.npy"), **meta)


def decode_recording(data: bytes) -> tuple[np.ndarray, int]:
    """A MediaRecorder file (WebM/Ogg Opus) as float32 mono and its rate."""
    import io

    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=48000)
        parts = [
            out.to_ndarray().reshape(-1)
            for frame in container.decode(stream)
            for out in resampler.resample(frame)
        ]
    return (np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)), 48000


class ReportCollector:
    """Receives the page's test-mode report on the signaling server's own app."""

    def __init__(self) -> None:
        self._audio: bytes | None = None
        self._media: bytes | None = None
        self._done: asyncio.Future[PageReport] | None = None

    def install(self, app: web.Application, path: str = REPORT_PATH) -> None:
        app.router.add_post(path, self._receive)

    async def _receive(self, request: web.Request) -> web.Response:
        part = request.query.get("part")
        body = await request.content.read()  # the recording is larger than the offer limit
        if part == "audio":
            self._audio = body
        elif part == "media":
            self._media = body
        elif part == "meta":
            meta = json.loads(body)
            rate = int(meta.get("sample_rate") or 48000)
            if self._media is not None:  # MediaRecorder: the bot's channel only
                bot, rate = decode_recording(self._media)
                audio = np.stack([np.zeros_like(bot), bot], axis=1)
            else:
                pcm = np.frombuffer(self._audio or b"", dtype=np.int16)
                channels = int(meta.get("channels") or 2)
                audio = (pcm[: len(pcm) // channels * channels].reshape(-1, channels).astype(np.float32) / 32768.0)
            report = PageReport(
                audio=audio, sample_rate=rate, recorder=meta.get("recorder", "webaudio"), marks=meta.get("marks", {}),
                log=meta.get("log", []), stats=meta.get("stats", []), error=meta.get("error"),
                session_id=meta.get("session_id"),
            )
            if self._done is not None and not self._done.done():
                self._done.set_result(report)
        return web.json_response({"ok": True})

    async def wait(self, timeout_s: float) -> PageReport:
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
        return await asyncio.wait_for(asyncio.shield(self._done), timeout_s)

    def arm(self) -> None:
        """Be ready for a report that may arrive before :meth:`wait` is called."""
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()


class HeadlessBrowser:
    """``async with Headless...(url):`` runs one browser, then cleans up after it."""

    def __init__(self, url: str, *, log_path: Path | None = None) -> None:
        self.url = url
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.profile: str | None = None
        self._log: Any = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        return None

    async def __aenter__(self) -> HeadlessBrowser:
        self.profile = tempfile.mkdtemp(prefix="voxwire-browser-")
        self._log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self.process = await asyncio.create_subprocess_exec(
            *self.command(),
            env=self.environment(),
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            start_new_session=True,  # its own process group: child processes go with it
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 5)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
            self._log = None
        if self.profile is not None:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = None


class HeadlessChromium(HeadlessBrowser):
    """Chromium whose microphone plays ``mic_wav`` once."""

    def __init__(self, url: str, mic_wav: Path, *, log_path: Path | None = None) -> None:
        super().__init__(url, log_path=log_path)
        self.mic_wav = Path(mic_wav)

    def command(self) -> list[str]:
        assert self.profile is not None
        return chromium_args(self.url, self.mic_wav, self.profile)


#: Firefox preferences: fake devices without prompts, loopback and plain host
#: candidates (no mDNS names), autoplay, and none of its own network traffic.
FIREFOX_PREFS = {
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.autoplay.default": 0,
    "media.autoplay.block-webaudio": False,
    "media.autoplay.blocking_policy": 0,
    "media.peerconnection.ice.loopback": True,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    "media.peerconnection.use_document_iceservers": True,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
    "app.update.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "devtools.console.stdout.content": True,  # page console → the browser log
    "media.cubeb.backend": "alsa",  # with the null device below: WebAudio runs with no sound card
}
#: ALSA's software "null" device, so Firefox has an audio output to clock WebAudio.
_NULL_ALSA = "pcm.!default { type null }\nctl.!default { type hw card 0 }\n"


def firefox_path() -> str:
    path = shutil.which("firefox-esr") or shutil.which("firefox")
    if path is None:
        raise FileNotFoundError("firefox is not installed (Debian: apt-get install firefox-esr)")
    return path


class HeadlessFirefox(HeadlessBrowser):
    """Firefox with its fake microphone (a tone: it cannot play a file)."""

    def command(self) -> list[str]:
        assert self.profile is not None
        prefs = "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in FIREFOX_PREFS.items())
        Path(self.profile, "user.js").write_text(prefs)
        return [firefox_path(), "--headless", "--no-remote", "--profile", self.profile, self.url]

    def environment(self) -> dict[str, str]:
        assert self.profile is not None
        Path(self.profile, ".asoundrc").write_text(_NULL_ALSA)
        return {**os.environ, "HOME": self.profile, "MOZ_LOG": os.environ.get("VOXWIRE_MOZ_LOG", "")}
