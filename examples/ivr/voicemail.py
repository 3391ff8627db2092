"""After-hours voicemail: record the caller's message to a WAV file, transcribe it, file it.

``VoicemailRecorder`` sits after the VAD, so it sees the caller's audio and
when they speak. Once started it keeps the audio until the caller has been
quiet for ``end_silence_s`` after speaking (or hangs up, or hits ``max_s``),
then writes the WAV, transcribes it with the same Whisper model the call uses,
and stores both in the clinic database — all in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from agent.audio import resample, to_mono
from agent.frames import EndFrame, Frame, InputAudioFrame, UserStartedSpeakingFrame, UserStoppedSpeakingFrame
from agent.node import Node
from agent.workers import run_blocking
from examples.ivr.clinic_db import ClinicBook

logger = logging.getLogger(__name__)

OnDone = Callable[[bool], Awaitable[None]]


class VoicemailRecorder(Node):
    """Records one message per call when :meth:`start` is called; passes every frame on."""

    def __init__(
        self,
        book: ClinicBook,
        folder: str | os.PathLike[str],
        *,
        caller: str,
        call_id: str,
        whisper_model: str | os.PathLike[str] | None = None,
        end_silence_s: float = 2.0,
        no_message_s: float = 8.0,
        max_s: float = 60.0,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name or "voicemail")
        self.book, self.folder = book, Path(folder)
        self.caller, self.call_id = caller, call_id
        self.whisper_model = whisper_model
        self.end_silence_s, self.no_message_s, self.max_s = end_silence_s, no_message_s, max_s
        self.saved: dict[str, object] | None = None  # the stored row, once saved
        self._chunks: list[np.ndarray] = []
        self._rate = 16000
        self._recording = False
        self._spoke = False
        self._speaking = False
        self._quiet_since = 0.0
        self._started = 0.0
        self._on_done: OnDone | None = None
        self._watch: asyncio.Task[None] | None = None

    def start(self, on_done: OnDone) -> None:
        """Begin recording now; ``on_done(saved)`` runs when the message is filed."""
        self._recording, self._on_done = True, on_done
        self._started = self._quiet_since = time.monotonic()
        self._watch = self.spawn(self._watch_for_end(), interruptible=False)

    async def process(self, frame: Frame, direction: int) -> None:
        if self._recording:
            if isinstance(frame, InputAudioFrame):
                self._rate = frame.sample_rate
                self._chunks.append(to_mono(frame.samples, frame.channels).copy())
            elif isinstance(frame, UserStartedSpeakingFrame):
                self._spoke = self._speaking = True
            elif isinstance(frame, UserStoppedSpeakingFrame):
                self._speaking = False
                self._quiet_since = time.monotonic()
            elif isinstance(frame, EndFrame):  # the caller hung up: keep what they said
                if self._watch is not None:
                    self._watch.cancel()
                await self._finish(notify=False)
        await self.emit(frame, direction)

    async def _watch_for_end(self) -> None:
        while self._recording:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            quiet = not self._speaking and now - self._quiet_since
            if (self._spoke and quiet and quiet >= self.end_silence_s) or now - self._started >= self.max_s \
                    or (not self._spoke and now - self._started >= self.no_message_s):
                await self._finish(notify=True)

    async def _finish(self, *, notify: bool) -> None:
        if not self._recording:
            return
        self._recording = False
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
        self._chunks = []
        saved = self._spoke and len(audio) > 0
        if saved:
            self.saved = await self._file(audio)
        if notify and self._on_done is not None:
            await self._on_done(saved)

    async def _file(self, audio: np.ndarray) -> dict[str, object]:
        import soundfile

        from stt.models import load_model
        from stt.whisper import transcribe

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{self.call_id}.wav"
        await run_blocking(soundfile.write, str(path), audio, self._rate, "PCM_16")
        model = await run_blocking(load_model, self.whisper_model, pool="stt")
        wide = resample(audio, self._rate, 16000).astype(np.int16) if self._rate != 16000 else audio
        text, _ = await run_blocking(transcribe, model, wide, pool="stt")
        seconds = len(audio) / self._rate
        row_id = await run_blocking(self.book.save_voicemail, self.caller, seconds, str(path), text, self.call_id)
        logger.info("call %s: voicemail %d saved (%.1f s) to %s", self.call_id, row_id, seconds, path)
        return {"id": row_id, "wav_path": str(path), "transcript": text, "seconds": seconds}
