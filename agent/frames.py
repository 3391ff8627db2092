"""The frame vocabulary every node speaks.

Frames are small slotted dataclasses. Two class attributes steer how the graph
moves them:

* ``urgent`` frames (interrupts, cancels, errors, metrics) are handed to a node
  at once and overtake any media queued in front of it;
* ``interruptible`` frames are bot output that an interrupt drops from queues
  (an instance with ``uninterruptible=True`` survives: a legal notice);
* ``media`` frames count against the bounded queue of a buffered node, so a
  slow consumer pushes back on its producer instead of growing without bound.

Everything else is ordered: it stays in sequence with the media around it
(``TTSStoppedFrame`` must not overtake the audio it closes).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

_frame_ids = itertools.count(1)


def _next_id() -> int:
    return next(_frame_ids)


@dataclass(slots=True, kw_only=True)
class Frame:
    """Base of all frames; ``id`` is unique per process (fan-out dedup uses it)."""

    id: int = field(default_factory=_next_id, repr=False, compare=False)
    urgent: ClassVar[bool] = False
    media: ClassVar[bool] = False
    interruptible: ClassVar[bool] = False


# --------------------------------------------------------------------------- media


@dataclass(slots=True, kw_only=True)
class AudioFrame(Frame):
    """Interleaved int16 little-endian PCM; ``pts`` is media time in seconds."""

    pcm: bytes
    sample_rate: int
    channels: int = 1
    pts: float = 0.0
    media: ClassVar[bool] = True

    @property
    def samples(self) -> np.ndarray:
        """A zero-copy int16 view of the PCM."""
        return np.frombuffer(self.pcm, dtype=np.int16)

    @property
    def num_samples(self) -> int:
        return len(self.pcm) // (2 * self.channels)

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate


@dataclass(slots=True, kw_only=True)
class InputAudioFrame(AudioFrame):
    """Audio from the caller, as the input transport received it."""


@dataclass(slots=True, kw_only=True)
class OutputAudioFrame(AudioFrame):
    """Bot speech on its way to the caller.

    ``text`` is the part of the answer this audio speaks (may be empty for the
    middle of a word run), so the output transport can report what was heard.
    """

    text: str = ""
    turn_id: int = 0
    uninterruptible: bool = False
    interruptible: ClassVar[bool] = True


# ------------------------------------------------------------------ user speech


@dataclass(slots=True, kw_only=True)
class UserStartedSpeakingFrame(Frame):
    """VAD onset; ``pts`` is the media time of the estimated true onset."""

    pts: float = 0.0
    turn_id: int = 0


@dataclass(slots=True, kw_only=True)
class UserStoppedSpeakingFrame(Frame):
    """VAD offset (after the hangover); ``pts`` estimates where speech ended."""

    pts: float = 0.0
    turn_id: int = 0


@dataclass(slots=True, kw_only=True)
class UserPausedFrame(Frame):
    """VAD, inside a speech segment: the caller went quiet for a moment
    (``paused``), or went on (not ``paused``) before the hangover ran out.

    Lets STT transcribe speculatively and the turn-taker decide before the
    VAD's stop; ``pts`` of a pause dates the end of speech, as a stop would.
    """

    pts: float = 0.0
    turn_id: int = 0
    paused: bool = True


@dataclass(slots=True, kw_only=True)
class TranscriptionFrame(Frame):
    """Speech-to-text output; partials may be revised, finals may not.

    A ``speculative`` transcript (``final`` False) covers a segment up to a
    pause: it is the final unless the caller goes on. ``confidence`` is the
    mean token probability and ``no_speech_prob`` the model's belief that
    there was no speech at all, when the STT knows them.
    """

    text: str
    final: bool = True
    language: str | None = None
    turn_id: int = 0
    speculative: bool = False
    confidence: float | None = None
    no_speech_prob: float | None = None


@dataclass(slots=True, kw_only=True)
class UserTurnFrame(Frame):
    """The user's finished turn, as the turn-taking logic decided it.

    ``replaces`` names an earlier turn whose answer nobody heard because the
    caller went on: this turn continues it and takes its place in the history
    (under a fresh id, so stragglers of the cancelled answer stay dropped).
    """

    text: str
    turn_id: int = 0
    replaces: int = 0


@dataclass(slots=True, kw_only=True)
class DTMFFrame(Frame):
    """A keypad digit (0-9, *, #, A-D), in from the caller or out to the line."""

    digit: str
    duration_ms: int = 160


@dataclass(slots=True, kw_only=True)
class TransferFrame(Frame):
    """Hand the caller to ``target`` (a SIP URI or E.164 number).

    Ordered, not urgent: it travels behind the bot's queued speech, and the
    output transport performs the transfer (SIP REFER, a carrier's REST call)
    once that speech has been heard.
    """

    target: str
    reason: str = "transfer"


# ------------------------------------------------------------------ bot speech


@dataclass(slots=True, kw_only=True)
class LLMTextFrame(Frame):
    """A text delta of the bot's answer."""

    text: str
    turn_id: int = 0
    interruptible: ClassVar[bool] = True


@dataclass(slots=True, kw_only=True)
class LLMTurnEndFrame(Frame):
    """The LLM finished its answer; ``text`` is the whole answer."""

    text: str = ""
    turn_id: int = 0
    interruptible: ClassVar[bool] = True


@dataclass(slots=True, kw_only=True)
class SpeakFrame(Frame):
    """Say this text now (greetings, prompts, operator commands)."""

    text: str
    uninterruptible: bool = False
    turn_id: int = 0
    interruptible: ClassVar[bool] = True


@dataclass(slots=True, kw_only=True)
class TTSStartedFrame(Frame):
    turn_id: int = 0
    interruptible: ClassVar[bool] = True


@dataclass(slots=True, kw_only=True)
class TTSStoppedFrame(Frame):
    turn_id: int = 0
    interruptible: ClassVar[bool] = True


# ------------------------------------------------------------- output feedback


@dataclass(slots=True, kw_only=True)
class BotStartedSpeakingFrame(Frame):
    """Upstream: the first bot audio of a turn left the output."""

    turn_id: int = 0
    urgent: ClassVar[bool] = True


@dataclass(slots=True, kw_only=True)
class BotStoppedSpeakingFrame(Frame):
    """Upstream: the caller has heard the last queued bot audio (or it was dropped)."""

    turn_id: int = 0
    interrupted: bool = False
    urgent: ClassVar[bool] = True


@dataclass(slots=True, kw_only=True)
class PlayoutProgressFrame(Frame):
    """Upstream: how much of a turn's audio the caller has heard, and its words."""

    turn_id: int = 0
    played_s: float = 0.0
    text_heard: str = ""
    urgent: ClassVar[bool] = True


@dataclass(slots=True, kw_only=True)
class PlayedAudioFrame(Frame):
    """Upstream, opt-in: a chunk of bot audio the output just played.

    The echo reference for an echo canceller before the VAD. ``played_at`` is
    the monotonic time the chunk left the output. Sent only after a
    :class:`PlayoutReferenceRequestFrame` asked for it.
    """

    pcm: bytes
    sample_rate: int
    played_at: float = 0.0
    urgent: ClassVar[bool] = True


@dataclass(slots=True, kw_only=True)
class PlayoutReferenceRequestFrame(Frame):
    """Downstream: ask the output transport to send ``PlayedAudioFrame`` upstream."""

    enabled: bool = True
    urgent: ClassVar[bool] = True


@dataclass(slots=True, kw_only=True)
class OutputPauseFrame(Frame):
    """Pause (or resume) bot playout without dropping it: barge-in's first move."""

    paused: bool = True
    turn_id: int = 0
    urgent: ClassVar[bool] = True


# --------------------------------------------------------------------- control


@dataclass(slots=True, kw_only=True)
class StartFrame(Frame):
    """First frame through every graph; carries the audio formats of the call."""

    input_sample_rate: int = 16000
    output_sample_rate: int = 16000
    session_id: str = ""
    urgent: ClassVar[bool] = True


@dataclass(slots=True, kw_only=True)
class EndFrame(Frame):
    """Graceful end: travels behind queued media, so everything drains first."""

    reason: str = "completed"


@dataclass(slots=True, kw_only=True)
class CancelFrame(Frame):
    """Immediate end: drops whatever is queued."""

    reason: str = "cancelled"
    urgent: ClassVar[bool] = True


@dataclass(slots=True, kw_only=True)
class InterruptFrame(Frame):
    """Barge-in: cancel generation, drop queued media, flush the output now."""

    turn_id: int = 0
    urgent: ClassVar[bool] = True


@dataclass(slots=True, kw_only=True)
class ErrorFrame(Frame):
    """Something failed; ``fatal`` errors end the session."""

    message: str
    node: str = ""
    fatal: bool = False
    urgent: ClassVar[bool] = True


@dataclass(slots=True, kw_only=True)
class MetricsFrame(Frame):
    """A timestamped mark in a turn's trace (e.g. ``stt_final``) or a value."""

    name: str
    turn_id: int = 0
    t: float = field(default_factory=time.monotonic)
    value: float | None = None
    data: dict[str, Any] | None = None
    urgent: ClassVar[bool] = True


@dataclass(slots=True, kw_only=True)
class EventFrame(Frame):
    """An application event for observers (bus, data channel); nodes pass it on."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    urgent: ClassVar[bool] = True


__all__ = [name for name, obj in list(globals().items()) if isinstance(obj, type) and issubclass(obj, Frame)]
