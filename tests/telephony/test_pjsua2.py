"""pjsua2 (PJSIP, a real softphone stack) calls voxwire, and voxwire calls pjsua2.

The softphone runs in a child process (``pjsua2_phone.py``): pjsua2's global
endpoint and media threads stay out of pytest. Its null sound device means the
call's audio goes only where the script connects it: a WAV player into the
call and a WAV recorder out of it, so what the far end heard and said can be
checked with Whisper afterwards.

Both ends bind to and advertise 127.0.0.1 (the server under test lives in
pytest's network namespace, so ``unshare -n`` cannot isolate the phone alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from agent.audio import resample
from agent.calls import CallInfo, CallManager
from agent.frames import EndFrame, Frame, SpeakFrame, StartFrame, TranscriptionFrame, UserTurnFrame
from agent.node import Node
from agent.session import Session
from tests.telephony.helpers import ESPEAK, free_udp_port, speech_8k
from transports.sip.transport import SipServer

PHONE = Path(__file__).with_name("pjsua2_phone.py")


def _pjsua2_import_error() -> str | None:
    """Why the pjsua2 wheel cannot be used here (checked in a child: never imported by pytest)."""
    probe = subprocess.run([sys.executable, "-c", "import pjsua2; pjsua2.Endpoint()"], capture_output=True,
                           text=True, timeout=30)
    if probe.returncode == 0:
        return None
    lines = (probe.stderr or probe.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {probe.returncode}"


_IMPORT_ERROR = _pjsua2_import_error()
pytestmark = [
    pytest.mark.skipif(_IMPORT_ERROR is not None,
                       reason=f"pjsua2 unusable (pip install pjsua2-python==2.15.1.post1): {_IMPORT_ERROR}"),
    pytest.mark.skipif(ESPEAK is None, reason="espeak-ng (apt) synthesizes the caller's speech"),
]


class Softphone:
    """The pjsua2 child process, seen through its JSON event lines."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.events: list[dict[str, Any]] = []
        self.output: list[str] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Softphone:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, str(PHONE), *self.args, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()
        if self._reader is not None:
            await asyncio.wait({self._reader}, timeout=2)

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for raw in self._proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.output.append(line)
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    self.events.append(json.loads(line))
                    self._changed.set()
        self._changed.set()

    def event(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e["event"] == name), None)

    async def wait_for(self, name: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (found := self.event(name)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self._reader is not None and self._reader.done()):
                raise AssertionError(f"softphone never reported {name!r}; output:\n" + "\n".join(self.output[-30:]))
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return found

    async def exit_code(self, timeout: float) -> int:
        assert self._proc is not None
        return await asyncio.wait_for(self._proc.wait(), timeout)


@pytest.fixture(scope="module")
def whisper():  # type: ignore[no-untyped-def]
    from stt.models import load_model

    return load_model()


def transcript_of(model: Any, path: Path) -> str:
    from stt.whisper import transcribe

    audio, rate = soundfile.read(path, dtype="float32")
    assert len(audio) > rate, f"{path.name} holds only {len(audio) / rate:.2f} s"
    text, _ = transcribe(model, resample(audio, rate, 16000).astype(np.float32))
    return text.lower()


def _say_wav(path: Path, text: str) -> Path:
    soundfile.write(path, speech_8k(text), 8000, subtype="PCM_16")
    return path


@pytest.mark.asyncio
async def test_pjsua2_calls_the_clinic_bot_and_both_sides_hear_each_other(tmp_path: Path, whisper: Any) -> None:
    from agent.clinic import clinic_bot

    said: list[str] = []

    def watch(session: Session, info: CallInfo) -> None:
        def observe(frame: Frame, direction: int) -> None:
            if isinstance(frame, (TranscriptionFrame, UserTurnFrame)) and getattr(frame, "final", True):
                said.append(frame.text.lower())
        session.subscribe(observe)

    manager = CallManager(clinic_bot)
    manager.on_session(watch)
    server = SipServer(manager, host="127.0.0.1", port=0)
    await server.start()
    question = _say_wav(tmp_path / "question.wav", "What time do you open on Saturday?")
    heard = tmp_path / "heard.wav"
    try:
        async with Softphone("call", f"sip:clinic@127.0.0.1:{server.port}", "--play", str(question),
                             "--record", str(heard), "--quiet-s", "0.9", "--answer-s", "20") as phone:
            confirmed = await phone.wait_for("confirmed", 10)
            call_id = confirmed["call_id"]
            assert (await phone.wait_for("media", 5))["codec"] == "PCMU"
            await phone.wait_for("speaking", 20)  # the greeting was heard and ended
            await phone.wait_for("disconnected", 40)  # the phone hangs up after the answer
            assert await phone.exit_code(10) == 0
            rtp = await phone.wait_for("rtp", 5)
        await asyncio.sleep(0.3)
    finally:
        await server.stop()
    assert [r.reason for r in manager.results] == ["caller_hangup"], manager.results
    assert not server.calls and call_id
    assert rtp["rx_packets"] > 300 and rtp["tx_packets"] > 300 and rtp["rx_lost"] == 0, rtp

    # Phone → bot: the server's own speech recognition got the caller's question.
    assert any("open" in text for text in said), f"the server transcribed {said!r}"
    # Bot → phone: the recording on the softphone holds the greeting and the answer to that question.
    text = transcript_of(whisper, heard)
    assert "maple street" in text, text
    assert any(day in text for day in ("monday", "friday", "saturday")), text


class CallbackGreeter(Node):
    """A call-back bot: says one thing through the TTS after it, then hangs up."""

    def __init__(self, text: str) -> None:
        super().__init__(name="callback-greeter")
        self.text = text

    async def process(self, frame: Frame, direction: int) -> None:
        await self.emit(frame, direction)
        if isinstance(frame, StartFrame):
            self.spawn(self._speak(), interruptible=False)

    async def _speak(self) -> None:
        await asyncio.sleep(0.3)  # the callee says hello first
        await self.emit(SpeakFrame(text=self.text))
        await self.emit(EndFrame(reason="bot_hangup"))  # behind the speech: it is heard first


@pytest.mark.asyncio
async def test_voxwire_calls_pjsua2_which_answers_and_records_the_greeting(tmp_path: Path, whisper: Any) -> None:
    from tts.piper import PiperTTSNode

    greeting = "Hello, this is Maple Street Clinic calling to confirm your appointment on Tuesday."
    server = SipServer(lambda info: [CallbackGreeter(greeting), PiperTTSNode()], host="127.0.0.1", port=0)
    await server.start()
    port = free_udp_port()
    heard = tmp_path / "callee.wav"
    try:
        async with Softphone("answer", "--port", str(port), "--record", str(heard), "--max-s", "25") as phone:
            await phone.wait_for("ready", 10)
            call = await server.call(f"sip:phone@127.0.0.1:{port}", ("127.0.0.1", port), timeout=10)
            assert (await phone.wait_for("incoming", 5))["call_id"] == call.info.call_id
            await asyncio.wait_for(call.ended.wait(), 25)
            disconnected = await phone.wait_for("disconnected", 5)
            assert await phone.exit_code(10) == 0
            rtp = await phone.wait_for("rtp", 5)
    finally:
        await server.stop()
    assert call.result is not None and call.result.reason == "bot_hangup", call.result
    assert disconnected["reason"].startswith("200"), disconnected  # the bot's BYE ended it, not a failure
    assert rtp["rx_packets"] > 150 and rtp["rx_lost"] == 0, rtp
    text = transcript_of(whisper, heard)
    assert "appointment" in text and "tuesday" in text, text
