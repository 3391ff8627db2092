"""Turn-taking: when the caller has finished, and when they cut the bot off.

``TurnTaker`` sits after the VAD and STT. It sees the caller's speech
segments (VAD start/pause/resume/stop), their transcripts, and — travelling
upstream from the output transport — when the bot starts and stops being heard.

*End of turn* is adaptive. A transcript arrives early: the STT starts it at
the VAD's first pause (~0.1 s of silence), not after the hangover. The node
then holds for a time that depends on how the words end — short after a
question, longer after a statement, long after a conjunction, a filler or a
half-spoken phone number — measured from the true end of speech. When the
hold is short the turn goes to the LLM at once (*preemptive*) with the output
paused, so the answer is synthesized during the hold and starts the moment
the hold ends. If the caller goes on before anything was heard, the answer is
cancelled and the turn reopened, so an early decision costs only compute.

*Barge-in* is pause-then-decide: caller speech while the bot is heard pauses
the output at once; enough real speech, or confident words from STT, confirm
the interruption (one ``InterruptFrame`` to every node); a backchannel
("mm-hmm"), a noise burst, or words Whisper made up from a hum resume
playback exactly where it paused.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

from agent import metrics
from agent.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EventFrame,
    Frame,
    InputAudioFrame,
    InterruptFrame,
    MetricsFrame,
    OutputPauseFrame,
    TranscriptionFrame,
    UserPausedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnFrame,
)
from agent.node import UPSTREAM, Node
from agent.turn_text import INTENT_WORDS, hold_for, hold_for_transcript, is_backchannel, is_backchannel_word, words_of

__all__ = ["TurnParams", "TurnTaker", "hold_for", "hold_for_transcript", "is_backchannel", "words_of"]

TURN_CONFIRMED = "turn_confirmed"  # metrics mark: a preemptive turn's hold ended


@dataclass(frozen=True, slots=True)
class TurnParams:
    """Holds are measured from the true end of speech (ms)."""

    hold_question_ms: float = 200.0
    hold_complete_ms: float = 380.0
    hold_default_ms: float = 700.0
    hold_incomplete_ms: float = 1100.0
    hold_min_confidence: float = 0.57
    """A transcript of two words or more that Whisper is less sure of than this
    (mean token probability) waits at least ``hold_default_ms``: the words of a
    clause cut short are often garbled or "completed" ("the address is |" →
    "the addresses."). One-word answers score low too, and stay fast."""
    hold_unsure_ms: float = 460.0
    hold_sure_confidence: float = 0.8
    """A complete-looking transcript of two words or more scored below this
    waits ``hold_unsure_ms`` instead of ``hold_complete_ms``. Mis-heard clause
    fragments ("my date of birth is |" → "my day to purchase.") score 0.55-0.75,
    and a caller who goes on after 300-350 ms is heard by the VAD 30-110 ms
    later (soft onsets like "five" are slowest): a 380 ms hold ends first."""
    adaptive: bool = True
    """False: no hold at all — the turn ends with the VAD stop's transcript (a
    plain hangover endpointer, the naive baseline)."""
    preemptive: bool = True
    """Hand the turn to the LLM as soon as its transcript is in, with the output
    paused until the hold ends (for holds up to ``preemptive_max_hold_ms``)."""
    preemptive_max_hold_ms: float = 700.0
    reopen_window_s: float = 4.0
    """How long after handing a turn over the caller's next words still reopen
    it (when nothing of the answer was heard yet)."""
    barge_in_min_speech_ms: float = 900.0
    """Speech this long confirms a barge-in on its own (backchannels are shorter);
    the output is already paused from the onset, so this costs no audible delay."""
    barge_in_min_words: int = 3
    """Confident non-backchannel words in a partial that confirm a barge-in early."""
    short_burst_ms: float = 650.0
    """A burst shorter than this, with few words and no "stop"-like word, is a
    backchannel or noise even when STT makes words of it."""
    min_confidence: float = 0.1
    """Mean token probability below which none of a barge-in's words are believed."""
    words_min_confidence: float = 0.5
    """Below this only "stop"-like words count: Whisper decodes hums and noise to
    words ("in a month", "and make a change") with scores of 0.4 or so, while a
    real but unsure "wait" or "sorry" still stops the bot."""
    max_no_speech_prob: float = 0.6
    resume_after_silence_ms: float = 300.0
    """A backchannel verdict resumes the bot only once the caller has been quiet
    this long: "Sorry, | can I ask ..." pauses after its first word."""
    false_interruption_timeout_ms: float = 1500.0


#: Turn ids normally are the id of the turn's first VAD segment. A turn that
#: reuses a segment already answered (the caller went on after a pause) gets a
#: fresh id instead, so nodes that dropped the cancelled answer's stragglers by
#: id (TTS) do not drop the new answer too.
_fresh_ids = itertools.count(900_000_001)


@dataclass(slots=True)
class _UserTurn:
    turn_id: int
    replaces: int = 0
    segments: dict[int, str | None] = field(default_factory=dict)  # VAD segment -> text (None: pending)
    confidence: float | None = None  # of the latest transcript
    speech_start_t: float = 0.0
    speech_end_t: float = 0.0
    vad_stop_t: float = 0.0
    stt_t: float = 0.0

    @property
    def text(self) -> str:
        return " ".join(t.strip() for t in self.segments.values() if t and t.strip())

    @property
    def ready(self) -> bool:
        return all(t is not None for t in self.segments.values())


@dataclass(slots=True)
class _Barge:
    onset: float
    segment: int
    timer: asyncio.Task[None] | None = None
    last_partial: str = ""
    heard: str = ""  # the transcript that decided it, for the record


class TurnTaker(Node):
    """Decides ends of turns and barge-ins; emits ``UserTurnFrame``/``InterruptFrame``."""

    def __init__(self, params: TurnParams | None = None, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.params = params or TurnParams()
        self.turn: _UserTurn | None = None
        self.user_speaking = False
        self.bot_speaking = False
        self.responding_turn: int | None = None  # handed to the LLM, nothing heard yet
        self._answered: _UserTurn | None = None
        self._answered_at = 0.0
        self._held = False  # a preemptive answer waits behind a paused output
        self._decision: asyncio.TimerHandle | None = None
        self._barge: _Barge | None = None
        self._clock = (0.0, time.monotonic())  # (media time, wall clock) of the latest audio
        self._issued: set[int] = set()  # turn ids handed to the LLM so far
        self.holds: list[dict] = []  # the latest hold decisions, for inspection
        self.barge_ins: list[dict] = []
        self.reopened = 0

    # ------------------------------------------------------------ the clock

    def _wall(self, pts: float) -> float:
        """Wall-clock time of a media time, from the latest audio frame."""
        media, wall = self._clock
        return wall - (media - pts)

    # --------------------------------------------------------------- frames

    async def process(self, frame: Frame, direction: int) -> None:
        if direction == UPSTREAM:
            if isinstance(frame, BotStartedSpeakingFrame):
                self.bot_speaking = True
                self.responding_turn = None
            elif isinstance(frame, BotStoppedSpeakingFrame):
                self.bot_speaking = False
            await self.emit(frame, direction)
            return
        await self.emit(frame, direction)
        if isinstance(frame, InputAudioFrame):
            self._clock = (frame.pts + frame.duration, time.monotonic())
        elif isinstance(frame, UserStartedSpeakingFrame):
            await self._speech_started(frame.turn_id, self._wall(frame.pts))
        elif isinstance(frame, UserPausedFrame):
            if frame.paused:
                self._speech_paused(frame.turn_id, frame.pts, stopped=False)
            else:
                await self._speech_started(frame.turn_id, self._wall(frame.pts))
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._speech_paused(frame.turn_id, frame.pts, stopped=True)
        elif isinstance(frame, TranscriptionFrame):
            await self._transcript(frame)

    async def _speech_started(self, segment: int, onset: float) -> None:
        self.user_speaking = True
        self._cancel_decision()
        if self.bot_speaking and self._barge is None:
            await self._start_barge_in(segment, onset)
        elif self._can_reopen():
            await self._reopen()
        if self.turn is None:
            turn_id = next(_fresh_ids) if segment in self._issued else segment
            self.turn = _UserTurn(turn_id=turn_id, speech_start_t=onset)
        self.turn.segments[segment] = None  # pending; a resume supersedes the pause's transcript

    def _speech_paused(self, segment: int, pts: float, *, stopped: bool) -> None:
        self.user_speaking = False
        turn = self.turn
        if turn is not None and segment in turn.segments:
            turn.speech_end_t = self._wall(pts)
            turn.vad_stop_t = time.monotonic()
            if not stopped:
                self._schedule_decision()
        elif self._answered is not None and segment in self._answered.segments and stopped:
            self._answered.vad_stop_t = time.monotonic()

    async def _transcript(self, frame: TranscriptionFrame) -> None:
        barge = self._barge
        if barge is not None:
            await self._judge_barge_in(barge, frame)
        if not (frame.final or frame.speculative):
            return
        turn = self.turn
        if turn is None or frame.turn_id not in turn.segments:
            return  # a backchannel's, or a turn already answered
        if frame.speculative and self.user_speaking:
            return
        turn.segments[frame.turn_id] = frame.text
        turn.confidence = frame.confidence
        turn.stt_t = time.monotonic()
        if self._barge is not None or not turn.ready or self.user_speaking:
            return
        if not turn.text:
            self.turn = None  # noise: not a turn
            return
        await self._emit_mark(metrics.STT_FINAL, turn.turn_id, turn.stt_t)
        self._schedule_decision()

    # ----------------------------------------------------------- end of turn

    def _hold_s(self, turn: _UserTurn) -> float:
        p = self.params
        if not p.adaptive:
            return 0.0
        return hold_for_transcript(turn.text, turn.confidence, p) / 1000.0

    def _schedule_decision(self) -> None:
        turn = self.turn
        if turn is None or not turn.ready or not turn.text or self.user_speaking or self._barge is not None:
            return
        self._cancel_decision()
        hold = self._hold_s(turn)
        delay = max(0.0, turn.speech_end_t + hold - time.monotonic())
        self.holds.append({"text": turn.text, "confidence": turn.confidence, "hold_ms": round(hold * 1000)})
        del self.holds[:-50]
        preempt = self.params.preemptive and delay > 0 and hold * 1000.0 <= self.params.preemptive_max_hold_ms
        if preempt and not self.bot_speaking:
            self.spawn(self._end_turn(held=True), interruptible=False)
        self._decision = asyncio.get_running_loop().call_later(delay, self._decide)

    def _cancel_decision(self) -> None:
        if self._decision is not None:
            self._decision.cancel()
            self._decision = None

    def _decide(self) -> None:
        self._decision = None
        if self._held:
            self.spawn(self._release(), interruptible=False)
        else:
            self.spawn(self._end_turn(held=False), interruptible=False)

    async def _end_turn(self, *, held: bool) -> None:
        turn = self.turn
        if turn is None or self.user_speaking or not turn.text or not turn.ready:
            return
        self.turn = None
        self._issued.add(turn.turn_id)
        self._answered, self._answered_at = turn, time.monotonic()
        self.responding_turn = turn.turn_id
        if held:
            self._held = True
            await self.emit(OutputPauseFrame(paused=True, turn_id=turn.turn_id))
        for name, t in (
            (metrics.USER_SPEECH_START, turn.speech_start_t),
            (metrics.USER_SPEECH_END, turn.speech_end_t),
            (metrics.VAD_STOP, turn.vad_stop_t),
            (metrics.USER_TURN_END, time.monotonic()),
        ):
            await self._emit_mark(name, turn.turn_id, t)
        await self.emit(UserTurnFrame(text=turn.text, turn_id=turn.turn_id, replaces=turn.replaces))
        if not held:
            await self._emit_mark(TURN_CONFIRMED, turn.turn_id, time.monotonic())

    async def _release(self) -> None:
        """A preemptive turn's hold ended with the caller still quiet: let it play."""
        if not self._held:
            return
        self._held = False
        turn_id = self._answered.turn_id if self._answered else 0
        await self._emit_mark(TURN_CONFIRMED, turn_id, time.monotonic())
        await self.emit(OutputPauseFrame(paused=False, turn_id=turn_id))

    def _can_reopen(self) -> bool:
        return (
            self._answered is not None
            and (self._held or self.responding_turn is not None)
            and time.monotonic() - self._answered_at < self.params.reopen_window_s
        )

    async def _reopen(self) -> None:
        """The caller went on before hearing the answer: cancel it, continue the turn."""
        answered = self._answered
        assert answered is not None
        self._cancel_decision()
        self._held = False
        self.responding_turn = None
        self._answered = None
        self.reopened += 1
        await self.broadcast(InterruptFrame(turn_id=answered.turn_id))  # also unpauses the output
        if self.turn is not None:  # segments heard meanwhile join the reopened turn
            answered.segments.update(self.turn.segments)
        answered.replaces, answered.turn_id = answered.turn_id, next(_fresh_ids)
        self.turn = answered

    async def _emit_mark(self, name: str, turn_id: int, t: float) -> None:
        await self.emit(MetricsFrame(name=name, turn_id=turn_id, t=t))

    # -------------------------------------------------------------- barge-in

    async def _start_barge_in(self, segment: int, onset: float) -> None:
        await self.emit(OutputPauseFrame(paused=True, turn_id=segment))
        barge = self._barge = _Barge(onset=onset, segment=segment)
        barge.timer = self.spawn(self._confirm_after_speech(barge), interruptible=False)
        await self.emit(MetricsFrame(name=metrics.BARGE_IN_START, turn_id=segment, t=onset))

    async def _confirm_after_speech(self, barge: _Barge) -> None:
        await asyncio.sleep(self.params.barge_in_min_speech_ms / 1000.0)
        if self._barge is barge and self.user_speaking and not is_backchannel(barge.last_partial):
            await self._confirm_barge_in()
            return
        # Short speech: let its transcript decide; resume if none comes in time.
        await asyncio.sleep(self.params.false_interruption_timeout_ms / 1000.0)
        if self._barge is barge:
            await self._resume(reason="timeout")

    def _believed_words(self, frame: TranscriptionFrame) -> list[str]:
        """Words that are not backchannels, if the STT trusts them at all.

        When Whisper doubts the words, or that there was speech at all, only
        "stop"-like words count: a noisy line makes it doubt a real "wait", and
        a hum comes out as "in a month".
        """
        p = self.params
        if frame.confidence is not None and frame.confidence < p.min_confidence:
            return []
        words = [w for w in words_of(frame.text) if not is_backchannel_word(w)]
        unsure = frame.confidence is not None and frame.confidence < p.words_min_confidence
        if unsure or (frame.no_speech_prob is not None and frame.no_speech_prob > p.max_no_speech_prob):
            return [w for w in words if w in INTENT_WORDS]
        return words

    async def _judge_barge_in(self, barge: _Barge, frame: TranscriptionFrame) -> None:
        """Interruption, or a backchannel/noise to resume from, from words and duration."""
        words = self._believed_words(frame)
        barge.heard = f"{frame.text} ({frame.confidence or 0:.2f}/{frame.no_speech_prob or 0:.2f})"
        if not (frame.final or frame.speculative):
            barge.last_partial = frame.text
            if len(words) >= self.params.barge_in_min_words:
                await self._confirm_barge_in()
            return
        if self.user_speaking:
            return  # more is coming; the speech-length timer or the next transcript decides
        end = self.turn.speech_end_t if self.turn else time.monotonic()
        burst_ms = (end - barge.onset) * 1000
        stop_words = any(w in INTENT_WORDS for w in words)
        short = burst_ms < self.params.short_burst_ms and len(words) <= 3
        if words and not (short and not stop_words and not frame.text.strip().endswith("?")):
            await self._confirm_barge_in()
            return
        reason = "backchannel" if words_of(frame.text) else "noise"
        self.spawn(self._resume_when_quiet(barge, reason, end), interruptible=False)

    async def _resume_when_quiet(self, barge: _Barge, reason: str, speech_end: float) -> None:
        wait = speech_end + self.params.resume_after_silence_ms / 1000.0 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if self._barge is barge and not self.user_speaking:
            await self._resume(reason=reason)

    async def _confirm_barge_in(self) -> None:
        barge = self._barge
        assert barge is not None
        self._barge = None
        self.bot_speaking = False
        self.barge_ins.append({"t": barge.onset, "resumed": False, "kind": "interruption", "heard": barge.heard})
        await self.emit(EventFrame(kind="barge_in", data={"resumed": False}), UPSTREAM)
        await self.broadcast(InterruptFrame(turn_id=barge.segment))
        if self.turn is not None and not self.user_speaking:
            self._schedule_decision()

    async def _resume(self, reason: str) -> None:
        barge = self._barge
        self._barge = None
        if barge is not None:
            self.barge_ins.append({"t": barge.onset, "resumed": True, "kind": reason, "heard": barge.heard})
            if self.turn is not None:
                self.turn.segments.pop(barge.segment, None)
                if not self.turn.segments:
                    self.turn = None
        await self.emit(OutputPauseFrame(paused=False))
        await self.emit(EventFrame(kind="barge_in", data={"resumed": True, "kind": reason}), UPSTREAM)
