"""The clinic phone line as a bot factory: one graph per call, whatever carries it.

    VAD → voicemail recorder → Whisper → turn-taking → IVR desk → TTS

``ivr_bot`` is configured from the environment (see :meth:`ClinicConfig.from_env`);
``make_ivr_bot(config)`` builds a factory for your own settings. The SIP and
Twilio servers in ``examples.ivr.__main__`` hand every call to it through a
``CallManager``; so can any other transport (``--agent examples.ivr.bot:ivr_bot``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.calls import CallInfo
from agent.node import Node
from agent.turns import TurnTaker
from agent.vad import VADNode, VADParams
from examples.ivr.clinic_db import ClinicBook
from examples.ivr.desk import ClinicDesk
from examples.ivr.line import IVRNode
from examples.ivr.voicemail import VoicemailRecorder
from stt import WhisperSTTNode


@dataclass
class ClinicConfig:
    db_path: Path = Path("out/ivr/clinic.sqlite3")
    recordings: Path = Path("out/ivr/voicemail")
    front_desk: str = "sip:frontdesk@clinic.example"
    timezone: str = "America/New_York"
    now: Callable[[], datetime] | None = None
    """The clinic's local time (None: the wall clock in ``timezone``); tests pin it."""
    whisper_model: str | None = None
    """A faster-whisper model directory (None: the bundled tiny.en)."""
    book: ClinicBook = field(init=False)

    def __post_init__(self) -> None:
        self.book = ClinicBook(self.db_path)

    def clinic_time(self) -> datetime:
        return self.now() if self.now else datetime.now(ZoneInfo(self.timezone)).replace(tzinfo=None)

    @classmethod
    def from_env(cls) -> ClinicConfig:
        """``CLINIC_DB``, ``CLINIC_RECORDINGS``, ``CLINIC_FRONT_DESK`` (SIP URI or E.164 number),
        ``CLINIC_TZ``, and ``CLINIC_NOW`` (an ISO time, to try the after-hours voicemail)."""
        pinned = os.environ.get("CLINIC_NOW")
        return cls(
            db_path=Path(os.environ.get("CLINIC_DB", cls.db_path)),
            recordings=Path(os.environ.get("CLINIC_RECORDINGS", cls.recordings)),
            front_desk=os.environ.get("CLINIC_FRONT_DESK", cls.front_desk),
            timezone=os.environ.get("CLINIC_TZ", cls.timezone),
            now=(lambda: datetime.fromisoformat(pinned)) if pinned else None,
        )


def speaking_node() -> Node:
    """Voxtral when ``VOXWIRE_VOXTRAL_URL`` is set (piper takes over if it fails), else piper."""
    from tts.piper import PiperTTSNode

    url = os.environ.get("VOXWIRE_VOXTRAL_URL")
    if not url:
        return PiperTTSNode()
    from tts.voxtral import VoxtralTTSNode

    return VoxtralTTSNode(url, os.environ.get("VOXWIRE_VOXTRAL_DIALECT", "vllm-omni"),
                          voice=os.environ.get("VOXWIRE_VOXTRAL_VOICE") or None, fallback=PiperTTSNode())


def warm_up(whisper_model: str | None = None) -> None:
    """Load every model and run each once (blocking, ~2 s), so the first caller is not kept waiting."""
    import numpy as np

    from agent.vad.silero import shared_session
    from stt.models import load_model
    from stt.whisper import transcribe
    from tts.piper import load_voice, synthesize_blocking

    shared_session()
    transcribe(load_model(whisper_model), np.zeros(16000, dtype=np.int16))
    synthesize_blocking(load_voice(), "Hello.")


def make_ivr_bot(config: ClinicConfig) -> Callable[[CallInfo], list[Node]]:
    def ivr_bot(info: CallInfo) -> list[Node]:
        caller = info.caller or "unknown"
        desk = ClinicDesk(config.book, caller, info.session_id, config.clinic_time(), config.front_desk)
        voicemail = VoicemailRecorder(config.book, config.recordings, caller=caller, call_id=info.session_id,
                                      whisper_model=config.whisper_model)
        return [
            VADNode(VADParams(hangover_ms=600.0, pause_ms=96.0)),  # long hangover: a sentence stays whole
            voicemail,
            WhisperSTTNode(model=config.whisper_model, interims="bot_speaking"),
            TurnTaker(),
            IVRNode(desk, voicemail),
            speaking_node(),
        ]

    return ivr_bot


_default: Callable[[CallInfo], list[Node]] | None = None


def ivr_bot(info: CallInfo) -> list[Node]:
    """The factory for ``--agent examples.ivr.bot:ivr_bot`` (configured from the environment)."""
    global _default
    if _default is None:
        _default = make_ivr_bot(ClinicConfig.from_env())
    return _default(info)
