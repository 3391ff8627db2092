"""Turn-taking: when the caller has finished, and when they cut the bot off.

``TurnTaker`` sits after the VAD and STT. It sees the caller's speech
segments (VAD start/stop), their transcripts, and — travelling upstream from
the output transport — when the bot starts and stops being heard.

*End of turn* is adaptive: after a segment's final transcript the node waits
a hold that depends on how the words end — short after a complete sentence or
a question, long after a conjunction, a filler or a half-spoken number — and a
resumed segment cancels the wait and joins the same turn. If the caller
resumes after the turn was handed to the LLM but before any bot audio played,
the answer is cancelled and the turn reopened, so an early cut costs nothing.

*Barge-in* is pause-then-decide: caller speech while the bot is heard pauses
the output at once; enough real speech, or real words from STT, confirm the
interruption (one ``InterruptFrame`` to every node); a backchannel ("mm-hmm")
or a noise burst resumes playback exactly where it paused.
"""

from __future__ import annotations

import asyncio
import re
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
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnFrame,
)
from agent.node import DOWNSTREAM, UPSTREAM, Node

BACKCHANNELS = frozenset(
    "mm hmm mhm mmhmm mm-hmm uh-huh uhhuh uh huh yeah yep yes yea ok okay right sure "
    "alright got it i see oh ah aha cool great fine".split()
)
CONTINUATIONS = frozenset(
    "and or but so because um uh er erm the a an to of for with my your our his her their is are was "
    "were at in on from then if that which like well plus minus about by as into than".split()
)
NUMBER_WORDS = frozenset(
    "zero oh one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred "
    "thousand double triple".split()
)
#: Words that mean "stop and listen" even in a short burst.
INTENT_WORDS = frozenset(
    "stop wait no nope hold sorry excuse actually what hey hello cancel repeat pardon but halt".split()
)
_WORD = re.compile(r"[a-z0-9']+(?:-[a-z0-9']+)*")
#: Hums however STT spells them: "mm", "mmm", "hmm", "mhm", "mm-hmm", "mm-mm", "uh-huh", "uhh".
_HUM = re.compile(r"^(?=.*[mh])[mhuao]+(-[mhuao]+)*$")


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def is_backchannel(text: str) -> bool:
    """Short acknowledgements that must not stop the bot."""
    words = words_of(text)
    return 0 < len(words) <= 3 and all(_is_backchannel_word(w) for w in words)


def _is_backchannel_word(word: str) -> bool:
    return word in BACKCHANNELS or bool(_HUM.match(word))


@dataclass(frozen=True, slots=True)
class TurnParams:
    """Holds are measured from the true end of speech (ms)."""

    hold_question_ms: float = 150.0
    hold_complete_ms: float = 250.0
    hold_default_ms: float = 600.0
    hold_incomplete_ms: float = 1100.0
    barge_in_min_speech_ms: float = 900.0
    """Speech this long confirms a barge-in on its own (backchannels are shorter);
    the output is already paused from the onset, so this costs no audible delay."""
    barge_in_min_words: int = 3
    """Non-backchannel words in a partial transcript that confirm a barge-in early."""
    short_burst_ms: float = 650.0
    """A burst shorter than this, with few words and no "stop"-like word, is a
    backchannel or noise even when STT makes words of it (it hallucinates on hums)."""
    false_interruption_timeout_ms: float = 1500.0


def hold_for(text: str, params: TurnParams) -> float:
    """How long to wait for more speech, from how the words so far end."""
    stripped = text.strip()
    words = words_of(stripped)
    if not words:
        return params.hold_default_ms
    last = words[-1]
    if stripped.endswith((",", "...", "…", "-", ":")) or last in CONTINUATIONS:
        return params.hold_incomplete_ms
    if last.isdigit() or last in NUMBER_WORDS or re.search(r"\d[\d -]*$", stripped.rstrip(".")):
        return params.hold_incomplete_ms  # digits come in groups; wait for the rest
    if stripped.endswith("?"):
        return params.hold_question_ms
    if stripped.endswith((".", "!")):
        return params.hold_complete_ms
    return params.hold_default_ms


@dataclass(slots=True)
class _UserTurn:
    turn_id: int
    texts: list[str] = field(default_factory=list)
    speech_start_t: float = 0.0
    speech_end_t: float = 0.0
    vad_stop_t: float = 0.0
    pending_segments: int = 0

    @property
    def text(self) -> str:
        return " ".join(t.strip() for t in self.texts if t.strip())


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
        self._decision: asyncio.TimerHandle | None = None
        self._barge: dict | None = None  # pending barge-in: onset time, segment id, timer
        self._clock = (0.0, time.monotonic())  # (media time, wall clock) of the latest audio
        self.barge_ins: list[dict] = []

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
        if isinstance(frame, InputAudioFrame):
            self._clock = (frame.pts + frame.duration, time.monotonic())
        elif isinstance(frame, UserStartedSpeakingFrame):
            await self.emit(frame, direction)
            await self._speech_started(frame)
            return
        elif isinstance(frame, UserStoppedSpeakingFrame):
            await self.emit(frame, direction)
            self._speech_stopped(frame)
            return
        elif isinstance(frame, TranscriptionFrame):
            await self.emit(frame, direction)
            await self._transcript(frame)
            return
        await self.emit(frame, direction)

    async def _speech_started(self, frame: UserStartedSpeakingFrame) -> None:
        self.user_speaking = True
        onset = self._wall(frame.pts)
        if self._decision is not None:  # resumed during the hold: same turn
            self._decision.cancel()
            self._decision = None
        if self.bot_speaking and self._barge is None:
            await self.emit(OutputPauseFrame(paused=True, turn_id=frame.turn_id))
            self._barge = {"onset": onset, "segment": frame.turn_id, "confirmed": False}
            self._barge["timer"] = self.spawn(self._confirm_after_speech(frame.turn_id), interruptible=False)
            await self.emit(MetricsFrame(name=metrics.BARGE_IN_START, turn_id=frame.turn_id, t=onset))
        elif self.responding_turn is not None and self._answered is not None:
            # The caller went on before hearing anything: cancel the answer, reopen the turn.
            self.responding_turn = None
            await self.broadcast(InterruptFrame(turn_id=self._answered.turn_id))
            self.turn, self._answered = self._answered, None
        if self.turn is None:
            self.turn = _UserTurn(turn_id=frame.turn_id, speech_start_t=onset)
        self.turn.pending_segments += 1

    def _speech_stopped(self, frame: UserStoppedSpeakingFrame) -> None:
        self.user_speaking = False
        if self.turn is not None:
            self.turn.speech_end_t = self._wall(frame.pts)
            self.turn.vad_stop_t = time.monotonic()

    async def _transcript(self, frame: TranscriptionFrame) -> None:
        barge = self._barge
        if barge is not None and not barge["confirmed"]:
            await self._judge_barge_in(barge, frame)
        if not frame.final or self.turn is None:
            return
        turn = self.turn
        turn.pending_segments = max(0, turn.pending_segments - 1)
        if frame.text.strip():
            turn.texts.append(frame.text)
        if turn.pending_segments or self.user_speaking:
            return
        if not turn.text or (barge is not None and not barge["confirmed"]):
            self.turn = None  # noise or a backchannel: not a turn
            return
        hold_s = hold_for(turn.text, self.params) / 1000.0
        delay = max(0.0, turn.speech_end_t + hold_s - time.monotonic())
        await self._emit_mark(metrics.STT_FINAL, turn.turn_id, time.monotonic())
        self._decision = asyncio.get_running_loop().call_later(delay, self._decide)

    def _decide(self) -> None:
        self._decision = None
        self.spawn(self._end_turn(), interruptible=False)

    async def _end_turn(self) -> None:
        turn = self.turn
        if turn is None or self.user_speaking or not turn.text:
            return
        self.turn = None
        self._answered = turn
        self.responding_turn = turn.turn_id
        for name, t in (
            (metrics.USER_SPEECH_START, turn.speech_start_t),
            (metrics.USER_SPEECH_END, turn.speech_end_t),
            (metrics.VAD_STOP, turn.vad_stop_t),
            (metrics.USER_TURN_END, time.monotonic()),
        ):
            await self._emit_mark(name, turn.turn_id, t)
        await self.emit(UserTurnFrame(text=turn.text, turn_id=turn.turn_id))

    async def _emit_mark(self, name: str, turn_id: int, t: float) -> None:
        await self.emit(MetricsFrame(name=name, turn_id=turn_id, t=t))

    # -------------------------------------------------------------- barge-in

    async def _confirm_after_speech(self, segment: int) -> None:
        await asyncio.sleep(self.params.barge_in_min_speech_ms / 1000.0)
        barge = self._barge
        if barge is not None and barge["segment"] == segment and self.user_speaking:
            await self._confirm_barge_in()
            return
        # Short speech: let its transcript decide; resume if none comes in time.
        await asyncio.sleep(self.params.false_interruption_timeout_ms / 1000.0)
        if self._barge is barge and barge is not None and not barge["confirmed"]:
            await self._resume(reason="timeout")

    async def _judge_barge_in(self, barge: dict, frame: TranscriptionFrame) -> None:
        """Interruption, or a backchannel/noise to resume from, from words and duration."""
        words = [w for w in words_of(frame.text) if not _is_backchannel_word(w)]
        if not frame.final:
            if len(words) >= self.params.barge_in_min_words:
                await self._confirm_barge_in()
            return
        if self.user_speaking:
            return  # more is coming; the speech-length timer or the next final decides
        burst_ms = ((self.turn.speech_end_t if self.turn else time.monotonic()) - barge["onset"]) * 1000
        stop_words = any(w in INTENT_WORDS for w in words)
        short = burst_ms < self.params.short_burst_ms and len(words) <= 3
        if not words or (short and not stop_words and not frame.text.strip().endswith("?")):
            await self._resume(reason="backchannel" if is_backchannel(frame.text) or words else "noise")
        else:
            await self._confirm_barge_in()

    async def _confirm_barge_in(self) -> None:
        barge = self._barge
        assert barge is not None
        barge["confirmed"] = True
        self._barge = None
        self.bot_speaking = False
        self.barge_ins.append({"t": barge["onset"], "resumed": False, "kind": "interruption"})
        await self.emit(EventFrame(kind="barge_in", data={"resumed": False}), UPSTREAM)
        interrupt = InterruptFrame(turn_id=barge["segment"])
        await self.broadcast(interrupt)

    async def _resume(self, reason: str) -> None:
        barge = self._barge
        self._barge = None
        if barge is not None:
            self.barge_ins.append({"t": barge["onset"], "resumed": True, "kind": reason})
        await self.emit(OutputPauseFrame(paused=False))
        await self.emit(EventFrame(kind="barge_in", data={"resumed": True, "kind": reason}), UPSTREAM)
