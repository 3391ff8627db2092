"""Whisper on one short utterance, without paying for a 30-second window.

faster-whisper always encodes a 30 s window, which is most of the cost of a
short utterance: on this project's 2-core CPU the encoder alone takes ~200 ms
idle and over a second under load, whatever the utterance's length.
CTranslate2 accepts shorter windows, so :func:`transcribe_clip` encodes the
utterance in a window a few seconds longer than itself and decodes greedily,
with Whisper's own scores (mean token probability, no-speech probability)
returned for the turn-taker. On the turn-taking bench corpus the 12 s window
has the same WER as 30 s at a fraction of the time (``bench/turns.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

RATE = 16000


@dataclass(frozen=True, slots=True)
class Transcript:
    """Text plus how much to trust it (Whisper's own scores)."""

    text: str
    language: str | None = None
    avg_logprob: float = 0.0
    """Mean log-probability per token: hums and noise decode to words with low scores."""
    no_speech_prob: float = 0.0


#: Seconds of padding after the audio in the shortened encoder window, and the
#: smallest window. Whisper is trained on 30 s windows of mostly padding; a
#: window a few seconds longer than the speech transcribes the bench corpus as
#: well as 30 s (see bench/turns.py) at a fraction of the encoder cost, while
#: much shorter windows make the decoder loop on repeats.
CLIP_PAD_S = 4.0
CLIP_MIN_S = 12.0
_FULL_WINDOW_FRAMES = 3000
_suppressed: dict[int, tuple[int, ...]] = {}


def transcribe_clip(
    model: WhisperModel,
    audio: np.ndarray,
    *,
    language: str | None = "en",
    prompt: str | None = None,
    pad_s: float = CLIP_PAD_S,
    min_window_s: float = CLIP_MIN_S,
) -> Transcript:
    """Blocking, greedy: one short utterance through a shortened encoder window.

    faster-whisper always encodes a 30 s window, which is most of the cost of
    a short utterance (the encoder is quadratic in its input). CTranslate2
    accepts shorter windows, so the utterance is encoded in a window just
    longer than itself. Falls back to :func:`transcribe` for long audio, for
    language detection, and when the short window's decode looks degenerate
    (no end token or a looping text).
    """
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_compression_ratio, get_ctranslate2_storage, get_suppressed_tokens

    if audio.dtype == np.int16:
        audio = audio.astype(np.float32) * (1.0 / 32768.0)
    duration = len(audio) / RATE
    multilingual = model.model.is_multilingual
    if duration + pad_s >= 30.0 or (multilingual and language is None):
        text, detected = _full_window(model, audio, language, prompt)
        return Transcript(text, detected)
    features = model.feature_extractor(audio)
    frames = min(_FULL_WINDOW_FRAMES, max(int(min_window_s * 100), int((duration + pad_s) * 100)))
    frames += frames % 2  # the encoder halves the frame count
    features = features[:, :frames]
    if features.shape[1] < frames:
        features = np.pad(features, ((0, 0), (0, frames - features.shape[1])))
    tokenizer = Tokenizer(model.hf_tokenizer, multilingual, task="transcribe", language=language or "en")
    tokens: list[int] = []
    if prompt:
        tokens = [tokenizer.sot_prev, *tokenizer.encode(" " + prompt.strip())[-100:]]
    tokens += [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    suppress = _suppressed.get(id(model))
    if suppress is None:
        suppress = _suppressed[id(model)] = tuple(get_suppressed_tokens(tokenizer, [-1]) or ())
    limit = len(tokens) + int(8 * duration) + 12
    result = model.model.generate(
        get_ctranslate2_storage(features[None].astype(np.float32)),
        [tokens],
        beam_size=1,
        max_length=min(448, limit),
        return_scores=True,
        return_no_speech_prob=True,
        suppress_blank=True,
        suppress_tokens=list(suppress),
    )[0]
    ids = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
    text = tokenizer.decode(ids).strip()
    ended = len(result.sequences_ids[0]) + len(tokens) < limit
    if not ended or _loops(text) or (len(text) > 20 and get_compression_ratio(text) > 2.4):
        text, detected = _full_window(model, audio, language, prompt)
        return Transcript(text, detected)
    return Transcript(text, language, float(result.scores[0]), float(result.no_speech_prob))


def _loops(text: str) -> bool:
    """A decode that repeats itself ("Yes? Yes? Yes?", a sentence twice)."""
    words = [w.strip(".,?!").lower() for w in text.split()]
    for size in range(1, len(words) // 2 + 1):
        for start in range(len(words) - 2 * size + 1):
            if words[start : start + size] == words[start + size : start + 2 * size] and (
                size >= 2 or words[start : start + 3] == words[start : start + 1] * 3
            ):
                return True
    return False


def _full_window(model: WhisperModel, audio: np.ndarray, language: str | None, prompt: str | None) -> tuple[str, str | None]:
    from stt.whisper import transcribe

    return transcribe(model, audio, language=language, prompt=prompt)
