"""Voxtral TTS: streaming client, voices and cloning, the graph node, and a protocol emulator.

Point it at a self-hosted vLLM-Omni server (``dialect="vllm-omni"``) or the Mistral
API (``dialect="mistral"``); ``python -m tts.voxtral.emulator`` runs a local stand-in.
"""

from tts.voxtral.client import VoxtralClient
from tts.voxtral.errors import (
    ReferenceClipError,
    VoiceError,
    VoxtralCloningUnavailable,
    VoxtralConnectError,
    VoxtralError,
    VoxtralHTTPError,
    VoxtralProtocolError,
    VoxtralStreamError,
    VoxtralTimeout,
)
from tts.voxtral.node import VoxtralTTSNode
from tts.voxtral.protocol import SAMPLE_RATE, Dialect
from tts.voxtral.stream import RequestStats, SpeechStream
from tts.voxtral.voices import ReferenceClip, check_voice, load_reference

__all__ = [
    "SAMPLE_RATE",
    "Dialect",
    "ReferenceClip",
    "ReferenceClipError",
    "RequestStats",
    "SpeechStream",
    "VoiceError",
    "VoxtralClient",
    "VoxtralCloningUnavailable",
    "VoxtralConnectError",
    "VoxtralError",
    "VoxtralHTTPError",
    "VoxtralProtocolError",
    "VoxtralTTSNode",
    "VoxtralStreamError",
    "VoxtralTimeout",
    "check_voice",
    "load_reference",
]
