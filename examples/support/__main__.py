"""``python -m examples.support``: one simulated support call, offline.

A scripted caller (piper's voice through an 8 kHz μ-law line) asks about an
order, cuts the long answer off to ask for a refund, then asks for a person.
Prints the conversation as the model will see it (only what was heard), the
tool calls, the refund and the warm-transfer summary, and each answer's latency.
Talk to the agent yourself: ``python -m transports.webrtc --agent examples.support.bot:support_bot``.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import numpy as np

from agent.audio import resample, ulaw_decode, ulaw_encode
from agent.caller import ScriptedCaller, Step
from agent.calls import CallInfo
from agent.llm import LLMNode
from agent.session import Session
from examples.support.bot import SupportConfig, make_support_bot
from examples.support.handoff import HandOff
from transports.local import RecordingOutput

RATE = 8000
SCRIPT = [
    ("Hi, where is my order? The number is 4 5 1 7.", {}),
    ("Actually it arrived damaged and I want a refund please.", {"during_bot_s": 2.5}),  # cuts the answer off
    ("Thanks. Can I talk to a person about a replacement?", {"after_bot_s": 1.5}),  # waits for the refund answer
]


def phone_voice(text: str) -> np.ndarray:
    """The caller's words: piper, resampled to 8 kHz and passed through G.711 μ-law."""
    from tts.piper import load_voice, synthesize_blocking

    voice = load_voice()
    narrow = resample(synthesize_blocking(voice, text, volume=0.5), voice.config.sample_rate, RATE)
    line = np.frombuffer(ulaw_decode(ulaw_encode(narrow.astype(np.int16))), dtype=np.int16)
    loud = np.flatnonzero(np.abs(line) > 300)
    return line[loud[0] : loud[-1] + 1]


async def call(config: SupportConfig) -> None:
    caller = ScriptedCaller([Step(text, phone_voice(text), **opts) for text, opts in SCRIPT], sample_rate=RATE)
    speaker = RecordingOutput(sample_rate=RATE)
    bot = make_support_bot(config)(CallInfo(session_id="demo", transport="simulated", caller="+15550123",
                                            input_sample_rate=RATE, output_sample_rate=RATE))
    session = Session([caller, *bot, speaker], input_sample_rate=RATE, output_sample_rate=RATE, max_duration_s=120)
    result = await session.run()
    llm = next(n for n in bot if isinstance(n, LLMNode))
    print("\nthe conversation, as the model sees it next turn (only what the caller heard):")
    for message in llm.conversation.messages:
        if message.tool_calls:
            for tool_call in message.tool_calls:
                print(f"  tool call  {tool_call['function']['name']}({tool_call['function']['arguments']})")
        else:
            cut = "  [cut off by the caller]" if message.interrupted else ""
            print(f"  {message.role:<9}  {message.content}{cut}")
    played = [c.t for c in speaker.played]
    print("\nend of the caller's words → first bot audio:")
    for spoken in caller.spoken:
        first = next((t for t in played if t > spoken.end_t), None)
        if first is not None:
            print(f"  {(first - spoken.end_t) * 1000:5.0f} ms  after {spoken.step.text!r}")
    for done in next(n for n in bot if isinstance(n, HandOff)).done:
        print(f"\nwarm transfer to {done['target']}; summary for the colleague:\n  {done['summary']}")
    print(f"\nrefunds in {config.db_path}: {config.store.refunds()}\ncall ended: {result.reason}")


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(call(SupportConfig.from_env()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
