"""Try the clinic line without a phone: a scripted caller that talks and presses keys.

``python -m examples.ivr --simulate`` runs two calls against the real graph
(Silero, Whisper, piper; the caller's voice is piper too, sent as 8 kHz μ-law
like a phone line): one in opening hours that books by voice and keypad and
asks for the front desk, one after hours that leaves a voicemail. It prints
what the bot said, what it did, and how long each answer took.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from agent.audio import resample, ulaw_decode, ulaw_encode
from agent.caller import ScriptedCaller, Spoken, Step
from agent.calls import CallInfo, CallManager
from agent.frames import BotStartedSpeakingFrame, Frame, TransferFrame
from agent.node import UPSTREAM, Node
from agent.session import Session, SessionResult
from transports.local import RecordingOutput

RATE = 8000  # a phone line
_call_ids = itertools.count(1)


@dataclass(slots=True)
class KeyPress(Step):
    """A keypad digit instead of words (``pcm`` stays empty)."""

    digit: str = ""


@dataclass(slots=True)
class AfterAnswer(Step):
    """Words said only once the bot has answered the previous step and gone quiet
    (a polite caller; a slow answer does not make them talk into the silence)."""


class KeypadCaller(ScriptedCaller):
    """``agent.caller.ScriptedCaller`` that can also press keys (RFC 4733 on a real line)
    and wait for an answer before going on."""

    def __init__(self, steps: list[Step], **options: Any) -> None:
        super().__init__(steps, **options)
        self.bot_started_at = 0.0

    async def process(self, frame: Frame, direction: int) -> None:
        if direction == UPSTREAM and isinstance(frame, BotStartedSpeakingFrame):
            self.bot_started_at = time.monotonic()
        await super().process(frame, direction)

    async def _speak(self, step: Step) -> None:
        if isinstance(step, AfterAnswer):
            said_last = self.spoken[-1].end_t if self.spoken else 0.0
            deadline = time.monotonic() + 15.0
            while self.bot_started_at < said_last and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await self._wait_quiet(step.after_bot_s)
        if isinstance(step, KeyPress):
            now = time.monotonic()
            await self.push_dtmf(step.digit)
            self.spoken.append(Spoken(step, now, now))
            return
        await super()._speak(step)


def phone_voice(text: str) -> np.ndarray:
    """``text`` in piper's voice as a phone delivers it: 8 kHz through G.711 μ-law, silence trimmed."""
    from tts.piper import load_voice, synthesize_blocking

    voice = load_voice()
    speech = synthesize_blocking(voice, text, volume=0.5)
    narrow = resample(speech, voice.config.sample_rate, RATE).astype(np.int16)
    line = np.frombuffer(ulaw_decode(ulaw_encode(narrow)), dtype=np.int16)
    loud = np.flatnonzero(np.abs(line) > 300)
    return line[loud[0] : loud[-1] + 1] if len(loud) else line


def say(text: str, *, after_answer: bool = False, **options: Any) -> Step:
    """The caller says ``text`` (``after_answer``: not before the bot answered the last step)."""
    return (AfterAnswer if after_answer else Step)(text=text, pcm=phone_voice(text), **options)


def press(digit: str, **options: Any) -> KeyPress:
    return KeyPress(text=f"[keypad {digit}]", pcm=np.zeros(0, dtype=np.int16), digit=digit, **options)


@dataclass
class CallRecord:
    result: SessionResult
    caller: KeypadCaller
    speaker: RecordingOutput
    bot: list[Node]
    left_graph: list[tuple[float, Frame]] = field(default_factory=list)  # frames out of the graph, timed

    def node(self, cls: type) -> Any:
        return next(n for n in self.bot if isinstance(n, cls))

    def bot_audio(self, start: float = 0.0, end: float = float("inf")) -> np.ndarray:
        chunks = [c.pcm for c in self.speaker.played if start <= c.t < end]
        return np.frombuffer(b"".join(chunks), dtype=np.int16)

    def transfers(self) -> list[tuple[float, TransferFrame]]:
        return [(t, f) for t, f in self.left_graph if isinstance(f, TransferFrame)]

    def answer_latencies_ms(self) -> list[float]:
        """Per caller step: end of the words (or the key press) → first bot audio after it."""
        played = [c.t for c in self.speaker.played]
        out = []
        for spoken in self.caller.spoken:
            first = next((t for t in played if t > spoken.end_t), None)
            if first is not None:
                out.append((first - spoken.end_t) * 1000.0)
        return out


async def scripted_call(bot_factory: Any, steps: list[Step], *, caller_id: str = "+15550123",
                        max_duration_s: float = 120.0) -> CallRecord:
    """One call through a ``CallManager``, as a SIP or Twilio server would place it."""
    built: list[Node] = []

    def factory(info: CallInfo) -> list[Node]:
        built.extend(bot_factory(info))
        return built

    manager = CallManager(factory)
    left: list[tuple[float, Frame]] = []
    manager.on_session(lambda session, _info: session.subscribe(lambda f, _d: left.append((time.monotonic(), f))))
    caller = KeypadCaller(steps, sample_rate=RATE)
    speaker = RecordingOutput(sample_rate=RATE)
    info = CallInfo(session_id=f"sim{next(_call_ids)}", transport="simulated", input_sample_rate=RATE,
                    output_sample_rate=RATE, caller=caller_id, callee="+15550100")
    session: Session = await manager.start_call(info, caller, speaker, max_duration_s=max_duration_s)
    result = await manager.wait(session.session_id)
    assert result is not None
    return CallRecord(result, caller, speaker, built, left)


OPEN_CALL = [  # (what the caller does, options)
    ("say", "I'd like to book an appointment, please.", {}),
    ("press", "2", {}),  # Tuesday
    ("say", "Can I talk to the front desk?", {}),
]
CLOSED_CALL = [
    ("say", "Hi, this is Dana Smith. Please call me back about my blood test results. Thank you.",
     {"after_bot_s": 0.8}),
]


def steps_of(script: list[tuple[str, str, dict[str, Any]]]) -> list[Step]:
    return [say(arg, **opts) if kind == "say" else press(arg, **opts) for kind, arg, opts in script]


def main() -> int:
    import logging

    from examples.ivr.bot import ClinicConfig, make_ivr_bot
    from examples.ivr.line import IVRNode

    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    config = ClinicConfig.from_env()
    for label, script, now in (("opening hours", OPEN_CALL, datetime(2026, 3, 3, 10, 0)),
                               ("after hours", CLOSED_CALL, datetime(2026, 3, 3, 21, 0))):
        config.now = lambda now=now: now
        print(f"\n--- a simulated call in {label} ({now:%A %H:%M}) ---", flush=True)
        record = asyncio.run(scripted_call(make_ivr_bot(config), steps_of(script)))
        ivr = record.node(IVRNode)
        for text in ivr.said:
            print(f"  bot:    {text}")
        for spoken, ms in zip(record.caller.spoken, record.answer_latencies_ms()):
            print(f"  caller: {spoken.step.text!r} → first bot audio after {ms:.0f} ms")
        for kind, detail in ivr.actions:
            print(f"  action: {kind} {detail}")
        if ivr.voicemail.saved:
            print(f"  voicemail: {ivr.voicemail.saved}")
        print(f"  call ended: {record.result.reason}")
    print(f"\nappointments in {config.db_path}: {config.book.appointments()}")
    return 0
