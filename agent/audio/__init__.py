"""Audio utilities: resampling, G.711, rechunking, format conversion."""

from agent.audio.convert import float_to_int16, int16_to_float, pcm_problem, rms_dbfs, to_mono
from agent.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from agent.audio.rechunk import Rechunker
from agent.audio.resample import Resampler, resample

__all__ = [
    "Rechunker",
    "Resampler",
    "alaw_decode",
    "alaw_encode",
    "float_to_int16",
    "int16_to_float",
    "pcm_problem",
    "resample",
    "rms_dbfs",
    "to_mono",
    "ulaw_decode",
    "ulaw_encode",
]
