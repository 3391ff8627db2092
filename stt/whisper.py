"""Speech-to-text with faster-whisper: finals at end of speech, partials while speaking.

``WhisperSTTNode`` sits after the VAD. It keeps a short rolling buffer of the
caller's audio so that, when the VAD dates an onset in the past, the utterance
still starts a little before it (pre-roll). On ``UserStoppedSpeakingFrame`` it
transcribes the utterance in a shared worker thread and emits a final
``TranscriptionFrame``; while the caller talks it emits partials, but only when
no transcription is running anywhere in the process, so partials never delay
somebody's final. A VAD pause inside a segment starts a speculative
transcript, which becomes the final if the caller does not go on.

A failing model (out of GPU memory, a corrupt file) does not end the call: a
failed final is tried once more, and if that fails too the turn closes empty,
a non-fatal ``ErrorFrame`` names the problem and the bot asks the caller to
say it again. Failed partials and speculations are only logged; the final
decides.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from agent.audio import Resampler, to_mono
from agent.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioFrame,
    MetricsFrame,
    SpeakFrame,
    TranscriptionFrame,
    UserPausedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from agent.metrics import STT_FINAL
from agent.node import UPSTREAM, Node
from agent.workers import STT_POOL, run_blocking
from stt.clip import Transcript, transcribe_clip
from stt.models import load_model, resolve_model

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

logger = logging.getLogger(__name__)

RATE = 16000
#: Audio kept while nobody speaks: the VAD confirms an onset ~70 ms after it,
#: plus the pre-roll, plus slack for frames that arrive in bursts.
_IDLE_KEEP_S = 1.5
_MAX_UTTERANCE_S = 60.0
#: What the bot says when a turn could not be transcribed even on a second try.
REPEAT_PROMPT = "Sorry, I didn't catch that. Could you say that again?"
_FINAL_ATTEMPTS = 2

_jobs_running = 0  # Whisper jobs in flight in this process, for every session


def stt_busy() -> bool:
    """True while any Whisper transcription runs (partials wait for idle)."""
    return _jobs_running > 0


def transcribe(
    model: WhisperModel,
    audio: np.ndarray,
    *,
    language: str | None = "en",
    beam_size: int = 1,
    prompt: str | None = None,
) -> tuple[str, str | None]:
    """Blocking: (text, detected language) of 16 kHz int16 or float32 audio."""
    if audio.dtype == np.int16:
        audio = audio.astype(np.float32) * (1.0 / 32768.0)
    segments, info = model.transcribe(
        audio,
        language=language,
        beam_size=beam_size,
        without_timestamps=True,
        condition_on_previous_text=False,
        vad_filter=False,
        initial_prompt=prompt,
    )
    text = " ".join(segment.text.strip() for segment in segments).strip()
    return text, info.language


class WhisperSTTNode(Node):
    """Transcribes each VAD-delimited utterance; passes every frame on.

    ``model`` is None (the bundled tiny.en), a model directory, or a
    faster-whisper name already in the local cache; a missing model raises
    ``WhisperModelNotFound`` here, at construction, naming what to install.

    Latency: with ``speculative`` on, a VAD pause (``UserPausedFrame``) starts
    the transcript of the segment so far at once, emitted as a speculative
    partial; if the VAD then stops without the caller going on, that result
    *is* the final (no second run), and if the caller goes on it is dropped.
    ``short_window`` encodes each utterance in a window just longer than itself
    instead of Whisper's 30 s (see :func:`transcribe_clip`). ``interims``
    chooses when partials run: ``"always"``, ``"bot_speaking"`` (only while
    the bot is heard, where a barge-in needs words early; partials then never
    occupy the model when a caller's turn is about to end) or ``"off"``.
    ``repeat_prompt`` is spoken (as a ``SpeakFrame``) when a turn cannot be
    transcribed; None leaves it to the graph (the ``ErrorFrame`` still goes up).
    """

    def __init__(
        self,
        *,
        model: str | os.PathLike[str] | None = None,
        language: str | None = "en",
        compute_type: str = "int8",
        beam_size: int = 1,
        prompt: str | None = None,
        pre_roll_ms: float = 250.0,
        post_roll_ms: float = 150.0,
        interim_every_s: float | None = 0.7,
        interims: str = "always",
        speculative: bool = True,
        short_window: bool = True,
        repeat_prompt: str | None = REPEAT_PROMPT,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if interims not in ("always", "bot_speaking", "off"):
            raise ValueError("interims must be 'always', 'bot_speaking' or 'off'")
        self.model_path = resolve_model(model)
        self.language = language
        self.compute_type = compute_type
        self.beam_size = beam_size
        self.prompt = prompt
        self.interims = interims
        self.speculative = speculative
        self.short_window = short_window and beam_size == 1
        self.repeat_prompt = repeat_prompt
        self._pre_roll = int(RATE * pre_roll_ms / 1000)
        self._post_roll = int(RATE * post_roll_ms / 1000)
        self._interim_every = int(RATE * interim_every_s) if interim_every_s and interims != "off" else 0
        self.model: WhisperModel | None = None
        self._resampler: Resampler | None = None
        self._audio = _AudioTail()
        self._first_pts: float | None = None
        self._utterance_start: int | None = None  # sample index while the user speaks
        self._paused = False  # the VAD announced a pause in the current segment
        self._bot_speaking = False
        self._turn_id = 0
        self._interim_at = 0  # sample index up to which the last partial ran
        self._interim_task: asyncio.Task[None] | None = None
        self._speculation: _Speculation | None = None
        self._finals = asyncio.Lock()
        self._pending_finals: set[asyncio.Task[None]] = set()
        self._last_error: Exception | None = None
        self.speculations = {"started": 0, "used": 0, "dropped": 0}
        self.failures = {"final": 0, "partial": 0, "gave_up": 0}  # transcriptions that raised

    async def on_start(self) -> None:
        self.model = await run_blocking(
            load_model, self.model_path, compute_type=self.compute_type, pool=STT_POOL
        )

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, EndFrame) and self._pending_finals:
            # A graceful end must not lose the caller's last words.
            await asyncio.wait(self._pending_finals)
        await self.emit(frame, direction)
        if isinstance(frame, InputAudioFrame):
            self._append(frame)
            if self._utterance_start is not None:
                self._maybe_interim()
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._turn_id = frame.turn_id
            start = self._index(frame.pts) - self._pre_roll
            self._utterance_start = max(start, self._audio.start)
            self._interim_at = self._audio.end
            self._paused = False
            self._drop_speculation()
        elif isinstance(frame, UserPausedFrame) and self._utterance_start is not None:
            self._paused = frame.paused
            self._drop_speculation()
            if frame.paused and self.speculative:
                end = self._end_index(frame.pts)
                audio = self._audio.slice(self._utterance_start, end)
                self.speculations["started"] += 1
                spec = _Speculation(frame.turn_id or self._turn_id, self._index(frame.pts), audio)
                spec.task = self.spawn(self._speculate(spec, audio), interruptible=False)
                self._speculation = spec
        elif isinstance(frame, UserStoppedSpeakingFrame) and self._utterance_start is not None:
            end = self._end_index(frame.pts)
            spec, self._speculation = self._speculation, None
            if spec is not None and spec.speech_end != self._index(frame.pts):
                self._drop(spec)
                spec = None
            audio = self._audio.slice(self._utterance_start, end) if spec is None else None
            self._utterance_start = None
            self._paused = False
            task = self.spawn(self._final(audio, frame.turn_id or self._turn_id, spec), interruptible=False)
            self._pending_finals.add(task)
            task.add_done_callback(self._pending_finals.discard)
        elif isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False

    # ------------------------------------------------------------------ audio

    def _append(self, frame: InputAudioFrame) -> None:
        if self._first_pts is None:
            self._first_pts = frame.pts
        samples = to_mono(frame.samples, frame.channels)
        if frame.sample_rate != RATE:
            if self._resampler is None or self._resampler.in_rate != frame.sample_rate:
                self._resampler = Resampler(frame.sample_rate, RATE)
            samples = self._resampler.process(samples)
        self._audio.append(samples)
        keep_s = _MAX_UTTERANCE_S if self._utterance_start is not None else _IDLE_KEEP_S
        self._audio.trim(self._audio.end - int(keep_s * RATE))
        if self._utterance_start is not None:
            self._utterance_start = max(self._utterance_start, self._audio.start)

    def _index(self, pts: float) -> int:
        """Sample index of a media time, on the clock the VAD also counts by."""
        return round((pts - (self._first_pts or 0.0)) * RATE)

    def _end_index(self, pts: float) -> int:
        """Where an utterance ending at ``pts`` is cut: a little after, as far as heard."""
        return min(self._index(pts) + self._post_roll, self._audio.end)

    # -------------------------------------------------------- transcription

    async def _run(self, audio: np.ndarray) -> Transcript:
        global _jobs_running
        assert self.model is not None, "WhisperSTTNode used before StartFrame"
        if not len(audio):
            return Transcript("", self.language)
        _jobs_running += 1
        try:
            if self.short_window:
                return await run_blocking(
                    transcribe_clip, self.model, audio, language=self.language, prompt=self.prompt, pool=STT_POOL
                )
            text, language = await run_blocking(
                transcribe, self.model, audio,
                language=self.language, beam_size=self.beam_size, prompt=self.prompt,
                pool=STT_POOL,
            )
            return Transcript(text, language)
        finally:
            _jobs_running -= 1

    async def _speculate(self, spec: _Speculation, audio: np.ndarray) -> Transcript | None:
        started = time.monotonic()
        try:
            result = await self._run(audio)
        except Exception as exc:  # the final tries again; the call goes on
            self._partial_failed("speculative transcript", spec.turn_id, exc)
            spec.failed = True
            return None
        spec.compute_ms = (time.monotonic() - started) * 1000.0
        spec.done_t = time.monotonic()
        if self._speculation is spec:  # the caller has not gone on meanwhile
            await self.emit(_transcription(result, spec.turn_id, final=False, speculative=True))
        return result

    def _drop_speculation(self) -> None:
        if self._speculation is not None:
            self._drop(self._speculation)
            self._speculation = None

    def _drop(self, spec: _Speculation) -> None:
        self.speculations["dropped"] += 1
        if spec.task is not None and not spec.task.done():
            spec.task.cancel()  # only stops a job still queued; a running one finishes unseen

    async def _final(self, audio: np.ndarray | None, turn_id: int, spec: _Speculation | None) -> None:
        async with self._finals:  # finals leave in the order the turns ended
            started = time.monotonic()
            result: Transcript | None = None
            ready_t: float | None = None  # when the text was known
            attempts = _FINAL_ATTEMPTS
            if spec is not None and spec.task is not None:
                await asyncio.wait({spec.task})
                if not spec.task.cancelled() and spec.task.result() is not None:
                    result = spec.task.result()
                    self.speculations["used"] += 1
                    started -= spec.compute_ms / 1000.0
                    ready_t = spec.done_t
                elif spec.failed:
                    attempts -= 1  # the speculation was the first try
            if result is None:
                if audio is None:
                    audio = spec.audio if spec is not None else np.zeros(0, dtype=np.int16)
                result = await self._transcribe_final(audio, turn_id, attempts)
                if result is None:
                    await self._ask_to_repeat(turn_id)
                    return
            elapsed_ms = (time.monotonic() - started) * 1000.0
            logger.debug("final for turn %d: %d chars, %.0f ms", turn_id, len(result.text), elapsed_ms)
            await self.emit(MetricsFrame(name=STT_FINAL, turn_id=turn_id, t=ready_t or time.monotonic()))
            await self.emit(MetricsFrame(name="stt_compute_ms", turn_id=turn_id, value=elapsed_ms))
            await self.emit(_transcription(result, turn_id, final=True))

    async def _transcribe_final(self, audio: np.ndarray, turn_id: int, attempts: int) -> Transcript | None:
        """The turn's transcript, tried up to ``attempts`` times; None if every try raised."""
        for attempt in range(1, attempts + 1):
            try:
                return await self._run(audio)
            except Exception as exc:
                self.failures["final"] += 1
                self._last_error = exc
                logger.warning("%s: transcription of turn %d failed (try %d of %d): %s: %s",
                               self.name, turn_id, attempt, attempts, type(exc).__name__, exc)
        return None

    async def _ask_to_repeat(self, turn_id: int) -> None:
        """Give up on a turn without ending the call: close it empty, report, ask again."""
        self.failures["gave_up"] += 1
        exc = self._last_error
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "no transcript"
        asking = "; asking the caller to repeat" if self.repeat_prompt else ""
        await self.emit(ErrorFrame(message=f"STT failed for turn {turn_id}: {reason}{asking}", node=self.name),
                        UPSTREAM)
        # An empty final closes the turn (the turn-taker drops it as noise) instead of leaving it pending.
        await self.emit(_transcription(Transcript("", self.language), turn_id, final=True))
        if self.repeat_prompt:
            await self.emit(SpeakFrame(text=self.repeat_prompt))

    def _partial_failed(self, what: str, turn_id: int, exc: Exception) -> None:
        self.failures["partial"] += 1
        log = logger.warning if self.failures["partial"] == 1 else logger.debug  # a broken model fails every 0.7 s
        log("%s: %s for turn %d failed: %s: %s", self.name, what, turn_id, type(exc).__name__, exc)

    def _maybe_interim(self) -> None:
        if (
            not self._interim_every
            or self._paused
            or (self.interims == "bot_speaking" and not self._bot_speaking)
            or self._audio.end - self._interim_at < self._interim_every
            or (self._interim_task is not None and not self._interim_task.done())
            or stt_busy()
            or self._finals.locked()
        ):
            return
        self._interim_at = self._audio.end
        assert self._utterance_start is not None
        audio = self._audio.slice(self._utterance_start, self._audio.end)
        self._interim_task = self.spawn(self._interim(audio, self._turn_id), interruptible=False)

    async def _interim(self, audio: np.ndarray, turn_id: int) -> None:
        try:
            result = await self._run(audio)
        except Exception as exc:  # only a partial: the final decides
            self._partial_failed("partial transcript", turn_id, exc)
            return
        # A partial that finished after its turn ended would be stale news.
        if result.text and self._utterance_start is not None and turn_id == self._turn_id:
            await self.emit(_transcription(result, turn_id, final=False))


@dataclass(slots=True)
class _Speculation:
    """A transcript started at a pause, which becomes the final if nothing follows."""

    turn_id: int
    speech_end: int  # sample index of the end of speech it was cut after
    audio: np.ndarray  # what it transcribes, kept for a retry if the model fails
    task: asyncio.Task[Transcript | None] | None = None
    compute_ms: float = 0.0
    done_t: float | None = None
    failed: bool = False


def _transcription(result: Transcript, turn_id: int, *, final: bool, speculative: bool = False) -> TranscriptionFrame:
    scored = result.avg_logprob != 0.0 or result.no_speech_prob != 0.0
    return TranscriptionFrame(
        text=result.text, final=final, language=result.language, turn_id=turn_id, speculative=speculative,
        confidence=math.exp(result.avg_logprob) if scored else None,
        no_speech_prob=result.no_speech_prob if scored else None,
    )


class _AudioTail:
    """The most recent stretch of a stream, addressed by absolute sample index.

    Chunks are kept as they came and joined only when an utterance is cut out,
    so appending a 20 ms frame never copies the seconds already held.
    """

    __slots__ = ("_chunks", "start", "end")

    def __init__(self) -> None:
        self._chunks: deque[np.ndarray] = deque()
        self.start = 0  # absolute index of the first sample held
        self.end = 0  # absolute index just past the last sample held

    def append(self, samples: np.ndarray) -> None:
        if len(samples):
            self._chunks.append(samples)
            self.end += len(samples)

    def trim(self, keep_from: int) -> None:
        """Drop whole chunks that end before ``keep_from``."""
        while self._chunks and self.start + len(self._chunks[0]) <= keep_from:
            self.start += len(self._chunks.popleft())

    def slice(self, start: int, end: int) -> np.ndarray:
        start, end = max(start, self.start), min(end, self.end)
        if end <= start:
            return np.zeros(0, dtype=np.int16)
        joined = np.concatenate(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        return joined[start - self.start : end - self.start].copy()
