"""Voice activity detection: Silero (onnxruntime) behind a webrtcvad gate."""

from agent.vad.detector import SpeechDetector, VADEvent, VADParams
from agent.vad.node import VADNode
from agent.vad.silero import SileroModelNotFound, SileroStream, find_silero_model

__all__ = [
    "SileroModelNotFound",
    "SileroStream",
    "SpeechDetector",
    "VADEvent",
    "VADNode",
    "VADParams",
    "find_silero_model",
]
