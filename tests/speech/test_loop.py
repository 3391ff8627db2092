"""A whole local turn: caller audio → VAD → Whisper → a bot → piper → audio that says the answer."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from agent import Node
from agent.frames import Frame, LLMTextFrame, LLMTurnEndFrame, OutputAudioFrame, TranscriptionFrame
from agent.vad import VADNode
from stt import WhisperSTTNode, transcribe
from tts.piper import PiperTTSNode
from tests.speech.helpers import call, silence, speech, word_error_rate, words


class ClinicHours(Node):
    """A stand-in for the LLM hook: answers a final transcript in streamed deltas."""

    ANSWER = "Yes, we are open on Saturday morning, and we close at noon."

    async def process(self, frame: Frame, direction: int) -> None:
        await self.emit(frame, direction)
        if isinstance(frame, TranscriptionFrame) and frame.final and "saturday" in words(frame.text):
            for i in range(0, len(self.ANSWER), 5):
                await self.emit(LLMTextFrame(text=self.ANSWER[i : i + 5], turn_id=frame.turn_id))
            await self.emit(LLMTurnEndFrame(text=self.ANSWER, turn_id=frame.turn_id))


@pytest.mark.asyncio
async def test_a_phone_caller_asks_and_hears_the_answer(whisper_model, piper_voice) -> None:
    question = "What time do you open on Saturday?"
    audio = np.concatenate([silence(0.6, 8000), speech(question, 8000), silence(1.0, 8000)])
    frames = await call(
        [VADNode(), WhisperSTTNode(), ClinicHours(), PiperTTSNode(sample_rate=8000)],
        audio, 8000,
        until=lambda seen: any(isinstance(f, LLMTurnEndFrame) for f in seen),
    )
    (final,) = [f for f in frames if isinstance(f, TranscriptionFrame) and f.final]
    assert word_error_rate(question, final.text) <= 0.15, final.text
    answer = [f for f in frames if isinstance(f, OutputAudioFrame)]
    assert answer and all(f.turn_id == final.turn_id for f in answer)
    pcm = np.frombuffer(b"".join(f.pcm for f in answer), dtype=np.int16)
    heard, _ = transcribe(whisper_model, soxr.resample(pcm, 8000, 16000))
    assert word_error_rate(ClinicHours.ANSWER, heard) <= 0.15, heard
