"""Per-turn traces: when each stage of a turn happened, and what that adds up to.

Nodes drop marks with ``Node.mark(name, turn_id)``; the marks travel as urgent
``MetricsFrame``s to the edge of the graph, where the session's ``TurnTracker``
files them by turn. Keeping the first time of bot-side marks makes the trace
insensitive to nodes that mark repeatedly (every TTS chunk, say); user-side
marks keep the latest time, so the turn-taker, which knows which speech
segments made one turn, has the last word.
"""

from __future__ import annotations

from typing import Any

from agent.frames import Frame, MetricsFrame

USER_SPEECH_START = "user_speech_start"
USER_SPEECH_END = "user_speech_end"      # true end of speech (media time mapped to clock)
VAD_STOP = "vad_stop"                    # when the VAD declared the (last) pause
USER_TURN_END = "user_turn_end"          # when end of turn was declared
STT_FINAL = "stt_final"
LLM_FIRST_TOKEN = "llm_first_token"
TTS_FIRST_AUDIO = "tts_first_audio"
FIRST_AUDIO_OUT = "first_audio_out"      # first bot audio leaving the output transport
BARGE_IN_START = "barge_in_start"        # true onset of the caller's barge-in speech
BARGE_IN_STOP = "barge_in_stop"          # last bot audio left the output after a barge-in

# (name of the derived figure, from mark, to mark)
DERIVED: tuple[tuple[str, str, str], ...] = (
    ("eos_to_first_audio_ms", USER_SPEECH_END, FIRST_AUDIO_OUT),
    ("vad_tail_ms", USER_SPEECH_END, VAD_STOP),
    ("stt_ms", VAD_STOP, STT_FINAL),
    ("turn_hold_ms", STT_FINAL, USER_TURN_END),
    ("llm_first_token_ms", USER_TURN_END, LLM_FIRST_TOKEN),
    ("tts_first_audio_ms", LLM_FIRST_TOKEN, TTS_FIRST_AUDIO),
    ("barge_in_ms", BARGE_IN_START, BARGE_IN_STOP),
)

#: Marks a node repeats (every chunk, every clause) keep their first time; the
#: others keep the latest, so the turn-taker's final word on a turn wins.
FIRST_WINS = frozenset({LLM_FIRST_TOKEN, TTS_FIRST_AUDIO, FIRST_AUDIO_OUT, BARGE_IN_START, BARGE_IN_STOP})


class TurnTracker:
    """Collects marks per turn id and summarises them in milliseconds."""

    def __init__(self) -> None:
        self.turns: dict[int, dict[str, float]] = {}
        self.values: dict[int, dict[str, Any]] = {}

    def observe(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, MetricsFrame):
            self.record(frame)

    def record(self, frame: MetricsFrame) -> None:
        marks = self.turns.setdefault(frame.turn_id, {})
        if frame.value is not None:
            self.values.setdefault(frame.turn_id, {})[frame.name] = frame.value
        elif frame.name in FIRST_WINS:
            marks.setdefault(frame.name, frame.t)
        else:
            marks[frame.name] = frame.t

    def summary(self) -> list[dict[str, Any]]:
        """One dict per turn: derived latencies (ms) plus recorded values."""
        rows: list[dict[str, Any]] = []
        for turn_id in sorted(self.turns):
            marks = self.turns[turn_id]
            row: dict[str, Any] = {"turn_id": turn_id}
            for name, start, end in DERIVED:
                if start in marks and end in marks:
                    row[name] = round((marks[end] - marks[start]) * 1000.0, 1)
            row.update(self.values.get(turn_id, {}))
            rows.append(row)
        return rows
