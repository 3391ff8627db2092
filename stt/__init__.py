"""Speech-to-text nodes (faster-whisper, offline models)."""

from stt.models import WhisperModelNotFound, load_model, resolve_model
from stt.whisper import WhisperSTTNode, transcribe

__all__ = ["WhisperModelNotFound", "WhisperSTTNode", "load_model", "resolve_model", "transcribe"]
