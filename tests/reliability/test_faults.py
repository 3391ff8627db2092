"""Faults in a live call, judged by what the caller hears and what is left behind.

* the Voxtral server refuses, stays silent, is unreachable or drops the stream
  mid-sentence → the fallback voice (piper) is heard within 1 s of the answer's
  text (a silent server is hedged: piper starts on the clause after 0.4 s);
* the LLM errors or times out, or the hook never answers → the caller hears an
  apology and the next turn is answered;
* the STT model raises → the turn is retried once, then the caller is asked
  to repeat, and the call goes on;
* the transport disconnects mid-utterance or mid-answer → the session ends at
  once with the caller's reason, nothing escapes to the event loop, no task of
  the call is left running;
* a node hangs → the stall watchdog ends that call, naming the node, and a
  call running beside it does not notice.

The remote services are protocol emulators (the Voxtral emulator of
``tts.voxtral``, the OpenAI-compatible emulator of ``tests/llm``); the speech
models are the real local ones.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio

from agent.frames import (
    ErrorFrame,
    Frame,
    InputAudioFrame,
    LLMTextFrame,
    LLMTurnEndFrame,
    SpeakFrame,
    TranscriptionFrame,
    UserTurnFrame,
)
from agent.llm import LLMNode
from agent.node import Node
from agent.openai_llm import OpenAICompatibleLLM
from agent.session import Session
from agent.workers import run_blocking
from tests.llm.openai_emulator import ChatEmulator
from tests.reliability.helpers import (
    first_audio_after,
    heard,
    leftover_tasks,
    longest_gap,
    loop_errors,
    speech,
)
from transports.local import RecordingOutput, ScriptedInput, Segment
from tts.piper import PiperTTSNode
from tts.voxtral.emulator import VoxtralEmulator
from tts.voxtral.node import VoxtralTTSNode

pytestmark = pytest.mark.asyncio(loop_scope="session")

ANSWER = "Your appointment is on Tuesday at three in the afternoon."


@pytest.fixture(scope="session")
def whisper():  # type: ignore[no-untyped-def]
    from stt.models import load_model

    return load_model()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def voxtral() -> AsyncIterator[VoxtralEmulator]:
    emulator = VoxtralEmulator("vllm-omni", rtf=0.05)
    await emulator.start()
    # The emulator's voice is piper on this machine's CPU (a real server's GPU is elsewhere): have the
    # answer ready in its cache, so it does not compete with the fallback voice for the same cores.
    await run_blocking(emulator.speech, ANSWER, pool="tts")
    yield emulator
    await emulator.close()


async def started(session: Session) -> asyncio.Task:
    task = asyncio.create_task(session.run())
    await asyncio.wait_for(session.started.wait(), 10)
    return task


async def wait_for(condition, timeout: float, step: float = 0.02) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)


async def ask(session: Session, output: RecordingOutput, whisper, text: str, turn_id: int,  # type: ignore[no-untyped-def]
              *, first_within: float) -> tuple[float, float | None, str]:
    """Push a user turn; return when it was asked, when the bot's first audio came, and what was heard."""
    asked = time.monotonic()
    await session.push(UserTurnFrame(text=text, turn_id=turn_id))
    await wait_for(lambda: first_audio_after(output, asked) is not None, timeout=first_within)
    first_at = first_audio_after(output, asked)
    await wait_for(lambda: not output.speaking, timeout=15)
    return asked, first_at, await heard(whisper, output, since=asked)


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ------------------------------------------------------------------ Voxtral


@pytest.mark.parametrize("fault", ["refused_503", "connection_refused", "timeout", "drop_mid_sentence"])
async def test_voxtral_fault_is_covered_by_the_fallback_voice_within_a_second(
    fault: str, voxtral: VoxtralEmulator, whisper, caplog  # type: ignore[no-untyped-def]
) -> None:
    voxtral.faults.__init__()  # type: ignore[misc]
    url = voxtral.url
    if fault == "refused_503":
        voxtral.faults.update({"refuse_status": 503})
    elif fault == "connection_refused":
        url = f"http://127.0.0.1:{unused_port()}"
    elif fault == "timeout":
        voxtral.faults.update({"ttfa_s": 30.0})  # defaults: hedged after 0.4 s, no 2.5 s wait
    else:
        voxtral.faults.update({"drop_after_bytes": 40_000})  # ~0.8 s of audio, then the TCP connection dies
    node = VoxtralTTSNode(url, "vllm-omni", voice="casual_female", fallback=PiperTTSNode())
    output = RecordingOutput(sample_rate=16000)
    session = Session([node, output], output_sample_rate=16000)
    errors: list[ErrorFrame] = []
    session.subscribe(lambda f, _d: errors.append(f) if isinstance(f, ErrorFrame) else None)
    caplog.set_level(logging.WARNING, logger="tts.voxtral.node")
    task = await started(session)
    asked = time.monotonic()
    await session.push(LLMTextFrame(text=ANSWER, turn_id=1))
    await session.push(LLMTurnEndFrame(turn_id=1))
    await wait_for(lambda: output.played and not output.speaking and time.monotonic() - output.played[-1].t > 0.5,
                   timeout=20, step=0.05)
    await session.cancel()
    await task
    voxtral.faults.__init__()  # type: ignore[misc]

    first = first_audio_after(output, asked)
    assert first is not None
    # End to end: from the answer's text to the first sound the caller hears, whatever the fault.
    print(f"\n{fault}: first audio {first - asked:.3f} s after the text; longest gap {longest_gap(output):.3f} s")
    assert first - asked <= 1.0, f"first audio {first - asked:.2f} s after the text"
    assert longest_gap(output) < 1.0  # a cut mid-sentence is bridged too
    words = await heard(whisper, output)
    assert "tuesday" in words and "afternoon" in words, words
    assert errors and not errors[0].fatal and "speaks the rest" in errors[0].message
    assert any("Voxtral" in r.getMessage() or "voxtral" in r.name for r in caplog.records)


# ---------------------------------------------------------------------- LLM


def _reply(messages):  # type: ignore[no-untyped-def]
    return [{"content": word + " "} for word in "We are open on Saturday mornings too.".split()]


@pytest.mark.parametrize("fault", ["server_error", "timeout"])
async def test_llm_failure_is_apologised_for_and_the_call_goes_on(fault: str, whisper) -> None:  # type: ignore[no-untyped-def]
    emulator = ChatEmulator(_reply, fail_first=10 if fault == "server_error" else 0,
                            delay_s=3.0 if fault == "timeout" else 0.0)
    await emulator.start()
    llm = OpenAICompatibleLLM(emulator.url, "emulated", timeout_s=1.0, retries=1)
    output = RecordingOutput(sample_rate=16000)
    session = Session([LLMNode(llm), PiperTTSNode(), output], output_sample_rate=16000)
    errors: list[ErrorFrame] = []
    session.subscribe(lambda f, _d: errors.append(f) if isinstance(f, ErrorFrame) else None)
    task = await started(session)
    try:
        asked, apology_at, apology = await ask(session, output, whisper, "When are you open?", 1, first_within=10)
        emulator.fail_first, emulator.delay_s = 0, 0.0  # the model recovers
        _, _, answer = await ask(session, output, whisper, "When are you open?", 2, first_within=10)
        assert not task.done()  # the call is still up
    finally:
        await session.cancel()
        await task
        await llm.aclose()
        await emulator.close()
    assert apology_at is not None and apology_at - asked < (3.5 if fault == "timeout" else 2.0)
    assert "sorry" in apology and "again" in apology, apology
    assert "saturday" in answer, answer
    assert any(e.message.startswith("LLM failed") and not e.fatal for e in errors)


async def test_an_llm_hook_that_never_answers_is_cut_off_by_the_apology(whisper) -> None:  # type: ignore[no-untyped-def]
    """No client timeout to help: the hook just never yields. LLMNode's own limit ends the silence."""

    async def hung(conversation, user):  # type: ignore[no-untyped-def]
        await asyncio.Event().wait()
        yield "never"

    output = RecordingOutput(sample_rate=16000)
    node = LLMNode(hung, first_token_timeout_s=0.8, apology="Sorry, please say that again.")
    session = Session([node, PiperTTSNode(), output], output_sample_rate=16000)
    errors: list[ErrorFrame] = []
    session.subscribe(lambda f, _d: errors.append(f) if isinstance(f, ErrorFrame) else None)
    task = await started(session)
    try:
        asked, apology_at, apology = await ask(session, output, whisper, "When are you open?", 1, first_within=5)
        assert not task.done()
    finally:
        await session.cancel()
        await task
    assert apology_at is not None and 0.8 <= apology_at - asked < 1.8
    assert "sorry" in apology and "again" in apology, apology
    assert [e.message for e in errors] == ["LLM failed: no first token from the hook within 0.8 s"]


# ---------------------------------------------------------------------- STT


class Tap(Node):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    async def process(self, frame: Frame, direction: int) -> None:
        if not isinstance(frame, InputAudioFrame):
            self.frames.append(frame)
        await self.emit(frame, direction)


async def test_stt_model_error_does_not_end_the_call(monkeypatch, whisper) -> None:  # type: ignore[no-untyped-def]
    """The model raises: a retry covers one failure; after two the bot asks again; the call goes on."""
    import stt.whisper as whisper_module
    from agent.turns import TurnTaker
    from agent.vad import VADNode
    from stt.whisper import WhisperSTTNode

    real = whisper_module.transcribe_clip
    plan = ["fail", "fail", "fail"]  # turn 1: both tries fail; turn 2: the retry works

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        if plan and plan.pop(0) == "fail":
            raise RuntimeError("CUDA error: out of memory (emulated)")
        return real(*args, **kwargs)

    async def desk(conversation, user):  # type: ignore[no-untyped-def]
        yield "Yes, Friday at ten is free." if "appointment" in user.text.lower() else "We open at nine."

    monkeypatch.setattr(whisper_module, "transcribe_clip", flaky)
    caller = ScriptedInput([Segment(speech("What are your opening hours?"), gap_s=0.3),
                            Segment(speech("Can I book an appointment?"), gap_s=4.5),
                            Segment(gap_s=2.2)], end_after_s=0.1)  # the caller listens to the answer
    stt, tap, output = WhisperSTTNode(interims="off", speculative=False), Tap(), RecordingOutput(sample_rate=16000)
    session = Session([caller, VADNode(), stt, tap, TurnTaker(), LLMNode(desk), PiperTTSNode(), output],
                      output_sample_rate=16000)
    errors: list[ErrorFrame] = []
    session.subscribe(lambda f, _d: errors.append(f) if isinstance(f, ErrorFrame) else None)
    result = await asyncio.wait_for(session.run(), 40)

    assert result.reason == "script_finished", result.error
    first_end = caller.onsets[0] + len(speech("What are your opening hours?")) / 16000
    asked_again = await heard(whisper, output, since=first_end, until=caller.onsets[1])
    answered = await heard(whisper, output, since=caller.onsets[1])
    print(f"\nasked again: {asked_again!r}; answered: {answered!r}")
    assert "sorry" in asked_again and "again" in asked_again, asked_again
    assert first_audio_after(output, first_end) - first_end < 2.5  # type: ignore[operator]
    assert "friday" in answered, answered  # the second turn was transcribed on its retry and answered
    finals = [f.text.lower() for f in tap.frames if isinstance(f, TranscriptionFrame) and f.final]
    assert any("appointment" in t for t in finals), finals
    assert stt.failures == {"final": 3, "partial": 0, "gave_up": 1}
    assert len(errors) == 1 and not errors[0].fatal and errors[0].node == stt.name
    assert "STT failed" in errors[0].message and "out of memory" in errors[0].message


async def test_failed_partials_and_speculations_do_not_end_the_call(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Partials and speculative transcripts fail every time; the final (its own try) still arrives."""
    import stt.whisper as whisper_module
    from agent.vad import VADNode
    from stt.whisper import WhisperSTTNode

    real = whisper_module.transcribe_clip
    ran: list[int] = []

    def partials_fail(model, audio, **kwargs):  # type: ignore[no-untyped-def]
        ran.append(len(audio))
        if len(ran) < 3:
            raise RuntimeError("CUDA error: out of memory (emulated)")
        return real(model, audio, **kwargs)

    monkeypatch.setattr(whisper_module, "transcribe_clip", partials_fail)
    words = "I would like to book an appointment for Tuesday."
    caller = ScriptedInput([Segment(speech(words), gap_s=0.3), Segment(gap_s=0.8)], end_after_s=0.1)
    stt, tap = WhisperSTTNode(interims="always", interim_every_s=0.5), Tap()
    result = await asyncio.wait_for(Session([caller, VADNode(), stt, tap, RecordingOutput()]).run(), 30)
    finals = [f.text.lower() for f in tap.frames if isinstance(f, TranscriptionFrame) and f.final]
    assert result.reason == "script_finished", result.error
    assert stt.failures["partial"] >= 1 and stt.failures["gave_up"] == 0, stt.failures
    assert any("appointment" in t for t in finals), finals
    assert not any(isinstance(f, SpeakFrame) for f in tap.frames)


# ------------------------------------------------------------ disconnects


async def test_caller_hangs_up_mid_utterance_and_the_call_is_gone(caplog) -> None:  # type: ignore[no-untyped-def]
    from agent.vad import VADNode
    from stt.whisper import WhisperSTTNode

    words = speech("I would like to book an appointment for next Tuesday afternoon if you have one.")
    caller = ScriptedInput([Segment(words, gap_s=0.2)], end_after_s=None)
    vad = VADNode()
    session = Session([caller, vad, WhisperSTTNode(), RecordingOutput()])
    caplog.set_level(logging.ERROR)
    with loop_errors() as escaped:
        task = await started(session)
        await wait_for(lambda: vad.speaking, timeout=5)
        await asyncio.sleep(1.0)  # well into the sentence: partial transcripts are running
        hung_up = time.monotonic()
        await caller.hangup()
        result = await asyncio.wait_for(task, 5)
        ended_after = time.monotonic() - hung_up
        await asyncio.sleep(0.1)
        gc.collect()  # "Task exception was never retrieved" is reported when a task is collected
    assert result.reason == "caller_hangup" and result.error is None
    assert ended_after < 0.5
    assert not leftover_tasks(session)
    assert not escaped and not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_caller_hangs_up_while_the_bot_speaks_and_the_call_is_gone(caplog) -> None:  # type: ignore[no-untyped-def]
    async def long_answer(conversation, user):  # type: ignore[no-untyped-def]
        for sentence in ("Let me read you our full list of opening hours.", "On Monday we open at eight.",
                         "On Tuesday we open at nine.", "On Wednesday we open at ten."):
            yield sentence + " "
            await asyncio.sleep(0.1)

    caller = ScriptedInput([Segment(np.zeros(16000 * 30, dtype=np.int16))], end_after_s=None)
    output = RecordingOutput(sample_rate=16000)
    session = Session([caller, LLMNode(long_answer), PiperTTSNode(), output], output_sample_rate=16000)
    caplog.set_level(logging.ERROR)
    with loop_errors() as escaped:
        task = await started(session)
        await session.push(UserTurnFrame(text="When are you open?", turn_id=1))
        await wait_for(lambda: output.speaking, timeout=10)
        await asyncio.sleep(0.5)
        hung_up = time.monotonic()
        await caller.hangup()
        result = await asyncio.wait_for(task, 5)
        ended_after = time.monotonic() - hung_up
        await asyncio.sleep(0.1)
        gc.collect()
    assert result.reason == "caller_hangup" and ended_after < 0.5
    assert not [c for c in output.played if c.t > hung_up + 0.05]  # nothing played into a dead line
    assert not leftover_tasks(session)
    assert not escaped and not [r for r in caplog.records if r.levelno >= logging.ERROR]


# ---------------------------------------------------------------- watchdog


class Echo(Node):
    """Caller audio straight back out (a cheap stand-in for a bot)."""

    async def process(self, frame: Frame, direction: int) -> None:
        await self.emit(frame, direction)
        if isinstance(frame, InputAudioFrame):
            from agent.frames import OutputAudioFrame

            await self.emit(OutputAudioFrame(pcm=frame.pcm, sample_rate=frame.sample_rate))


class HangsOnFrame(Node):
    """A node whose ``process`` never returns once the call is under way (a deadlock)."""

    def __init__(self, after_frames: int) -> None:
        super().__init__(name="stuck-node")
        self.after_frames = after_frames
        self.seen = 0

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, InputAudioFrame):
            self.seen += 1
            if self.seen == self.after_frames:
                await asyncio.Event().wait()  # nothing will ever set it
        await self.emit(frame, direction)


async def test_a_hung_node_is_ended_by_the_watchdog_and_the_other_call_carries_on(caplog) -> None:  # type: ignore[no-untyped-def]
    tone = (3000 * np.sin(np.arange(16000 * 4) * 2 * np.pi * 440 / 16000)).astype(np.int16)
    healthy_out = RecordingOutput()
    healthy = Session([ScriptedInput([Segment(tone)], end_after_s=0.2), Echo(), healthy_out], stall_timeout_s=0.5)
    stuck = Session([ScriptedInput([Segment(tone)], end_after_s=0.2), HangsOnFrame(after_frames=25), Echo(),
                     RecordingOutput()], stall_timeout_s=0.5)
    caplog.set_level(logging.ERROR, logger="agent.session")
    with loop_errors() as escaped:
        healthy_task, stuck_task = asyncio.create_task(healthy.run()), asyncio.create_task(stuck.run())
        stuck_result = await asyncio.wait_for(stuck_task, 5)
        stuck_ended = time.monotonic()
        healthy_result = await asyncio.wait_for(healthy_task, 10)
        gc.collect()
    assert stuck_result.reason == "stalled" and "stuck-node.process" in (stuck_result.error or "")
    assert 0.5 + 0.5 <= stuck_result.duration_s < 0.5 + 0.5 + 0.6  # hung after 25 frames (0.5 s), 0.5 s timeout
    assert any("stuck in stuck-node.process" in r.getMessage() for r in caplog.records)
    assert not leftover_tasks(stuck)
    # The other call heard its whole echo, before and after its neighbour died.
    assert healthy_result.reason == "script_finished"
    assert len(healthy_out.played) >= 195 and healthy_out.played[-1].t > stuck_ended + 1.0
    assert not escaped


async def test_the_watchdog_leaves_a_quiet_but_live_call_alone() -> None:
    """Silence from the caller is still traffic: 20 ms frames keep crossing the graph."""
    output = RecordingOutput()
    session = Session([ScriptedInput([Segment(np.zeros(16000 * 2, dtype=np.int16))], end_after_s=0.0), output],
                      stall_timeout_s=0.3)
    result = await asyncio.wait_for(session.run(), 5)
    assert result.reason == "script_finished" and result.duration_s > 1.9


async def test_a_slow_start_is_not_a_stall() -> None:
    """Loading a model in ``on_start`` takes seconds; the watchdog starts counting after it."""

    class SlowLoad(Node):
        async def on_start(self) -> None:
            await asyncio.sleep(0.8)

    session = Session([ScriptedInput([Segment(np.zeros(3200, dtype=np.int16))], end_after_s=0.0), SlowLoad(),
                       RecordingOutput()], stall_timeout_s=0.3)
    result = await asyncio.wait_for(session.run(), 5)
    assert result.reason == "script_finished"


async def test_a_node_stuck_in_on_stop_cannot_hold_the_call_open(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import agent.session as session_module

    class StuckOnStop(Node):
        async def on_stop(self) -> None:
            await asyncio.Event().wait()

    monkeypatch.setattr(session_module, "TEARDOWN_TIMEOUT_S", 0.3)
    session = Session([StuckOnStop(), RecordingOutput()])
    task = await started(session)
    await session.cancel("operator")
    result = await asyncio.wait_for(task, 2)
    assert result.reason == "operator" and result.duration_s < 1.0
    left_behind = list(session_module.ABANDONED)
    assert len(left_behind) == 1 and not left_behind[0].done()  # kept alive, not garbage-collected
    left_behind[0].cancel()
    await asyncio.gather(*left_behind, return_exceptions=True)
    assert not session_module.ABANDONED


class Talker(Node):
    """Answers the first caller audio with 3 s of speech-like tone (so the line is busy both ways)."""

    def __init__(self) -> None:
        super().__init__(name="talker")
        self.talking = False

    async def process(self, frame: Frame, direction: int) -> None:
        await self.emit(frame, direction)
        if isinstance(frame, InputAudioFrame) and not self.talking:
            from agent.frames import OutputAudioFrame

            self.talking = True
            tone = (3000 * np.sin(np.arange(8000 * 3) * 2 * np.pi * 300 / 8000)).astype(np.int16)
            await self.emit(OutputAudioFrame(pcm=tone.tobytes(), sample_rate=8000, text="tone", turn_id=1))


@pytest.mark.parametrize("how", ["tcp_reset", "close_without_stop"])
async def test_carrier_socket_dropped_mid_utterance_ends_the_call_cleanly(how: str, caplog) -> None:  # type: ignore[no-untyped-def]
    """The carrier's TCP connection dies (or closes without ``stop``) while both sides talk."""
    import base64
    import json

    import aiohttp

    from agent.audio import ulaw_encode
    from agent.calls import CallManager
    from tests.reliability.contracts import CARRIER_STARTS
    from transports.telephony.server import CarrierServer

    sessions: list[Session] = []
    manager = CallManager(lambda info: [Talker()])
    manager.on_session(lambda session, info: sessions.append(session))
    server = CarrierServer(manager, carriers=["twilio"], host="127.0.0.1", port=0)
    await server.start()
    caplog.set_level(logging.ERROR)
    voice = ulaw_encode(speech("I would like to book an appointment please.", rate=8000))
    try:
        with loop_errors() as escaped:
            async with aiohttp.ClientSession() as http:
                ws = await http.ws_connect(server.media_url("twilio"))
                await ws.send_str(CARRIER_STARTS["twilio"])
                for i in range(0, 160 * 50, 160):  # one second of the caller speaking
                    payload = base64.b64encode(voice[i : i + 160]).decode()
                    await ws.send_str(json.dumps({"event": "media", "media": {"payload": payload}}))
                    await asyncio.sleep(0.02)
                await wait_for(lambda: bool(sessions), timeout=2)
                dropped = time.monotonic()
                if how == "tcp_reset":
                    ws._conn.transport.abort()  # type: ignore[union-attr]  # no close frame, no FIN handshake
                else:
                    await ws.close()
                await wait_for(lambda: not manager.sessions and not server.calls, timeout=3)
                ended_after = time.monotonic() - dropped
            await asyncio.sleep(0.1)
            gc.collect()
    finally:
        await server.stop()
        await manager.close()
    result = sessions[0].result
    assert result is not None and result.reason == "caller_hangup" and result.error is None
    assert ended_after < 1.0
    assert not leftover_tasks(sessions[0])
    assert not escaped and not [r for r in caplog.records if r.levelno >= logging.ERROR]
