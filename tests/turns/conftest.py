"""Real models, loaded once for the whole turn-taking test run."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def models():  # type: ignore[no-untyped-def]
    """Silero, tiny.en and piper, loaded and run once (first inferences pay one-off costs)."""
    import numpy as np

    from agent.vad.silero import shared_session
    from bench.turns_corpus import piper_speech
    from stt.models import load_model
    from stt.whisper import transcribe_clip

    shared_session()
    model = load_model()
    transcribe_clip(model, piper_speech("Hello there."))
    transcribe_clip(model, np.zeros(8000, dtype=np.int16))
    return model
