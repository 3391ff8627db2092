"""The browser assistant (examples/browser) over WebRTC, with the Python aiortc caller.

One call: the caller asks a conversion out loud, then types another in the
page's data channel; both answers come back as speech the caller hears and as
``bot_text`` events the page shows. (The page itself in Chromium is covered by
tests/webrtc.)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from agent.calls import CallManager
from examples.browser.bot import assistant_bot, warm_up
from tests.examples.conftest import heard
from tests.examples.webrtc_caller import MIC_RATE, ClipTrack, ListeningCaller
from tests.webrtc.webrtc_audio import speak
from transports.webrtc import allow_loopback_candidates, serve_webrtc

QUESTION = "How many kilometers is ten miles?"


async def bot_text(caller: ListeningCaller, needle: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in caller.events:
            if event.get("type") == "bot_text" and needle in event.get("text", ""):
                return event
        await asyncio.sleep(0.05)
    raise AssertionError(f"no bot_text with {needle!r}: {caller.events}")


@pytest.fixture(scope="module")
def call() -> dict[str, Any]:
    question = (speak(QUESTION, MIC_RATE) * 32767).astype(np.int16)

    async def run() -> dict[str, Any]:
        await asyncio.to_thread(warm_up)  # as `python -m examples.browser` does before serving
        allow_loopback_candidates()
        manager = CallManager(assistant_bot)
        server = await serve_webrtc(manager, "127.0.0.1", 0)
        track = ClipTrack(question, delay_s=2.5)  # after the greeting
        caller = ListeningCaller(mic=track)
        try:
            status, body = await caller.call(server.url)
            assert status == 200, body
            await caller.wait_open()
            spoken = await bot_text(caller, "16.09")
            question_end = track.at(len(question) / MIC_RATE)
            await asyncio.sleep(3.0)  # hear the answer out
            typed_at = time.monotonic()
            caller.send({"type": "text", "text": "What is 100 degrees Fahrenheit in Celsius?"})
            typed = await bot_text(caller, "37.78")
            await asyncio.sleep(4.0)
        finally:
            await caller.close()
            await server.close()
            await manager.close()
        return {"caller": caller, "spoken": spoken, "typed": typed, "question_end": question_end,
                "typed_at": typed_at}

    return asyncio.run(run())


def test_a_spoken_question_is_answered_with_the_tool_result(call, whisper) -> None:  # type: ignore[no-untyped-def]
    caller: ListeningCaller = call["caller"]
    transcripts = [e["text"].lower() for e in caller.events if e.get("type") == "transcript" and e.get("final")]
    assert any("kilometers" in t and "10" in t or "ten" in t for t in transcripts), transcripts
    assert call["spoken"]["text"].strip() == "10 miles is 16.09 kilometers."
    answer = heard(whisper, caller.pcm(call["question_end"]), caller.heard_rate)
    assert "16" in answer and "kilometers" in answer, answer


def test_a_typed_question_is_spoken_back(call, whisper) -> None:  # type: ignore[no-untyped-def]
    caller: ListeningCaller = call["caller"]
    assert call["typed"]["text"].strip() == "100 degrees Fahrenheit is 37.78 degrees Celsius."
    answer = heard(whisper, caller.pcm(call["typed_at"]), caller.heard_rate)
    assert "37" in answer and "celsius" in answer, answer


def test_the_spoken_answer_starts_within_a_second(call) -> None:  # type: ignore[no-untyped-def]
    caller: ListeningCaller = call["caller"]
    first = next(t for t in caller.loud_onsets() if t > call["question_end"])
    latency = first - call["question_end"]
    print(f"\nbrowser assistant: end of question → first answer audio at the caller: {latency * 1000:.0f} ms")
    assert latency < 1.5, latency  # ~0.8-0.9 s on an idle 2-core machine
