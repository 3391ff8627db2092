"""Each real model loads once for the whole speech test run."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def piper_voice():  # type: ignore[no-untyped-def]
    from tts.piper import load_voice

    return load_voice()


@pytest.fixture(scope="session")
def whisper_model():  # type: ignore[no-untyped-def]
    from stt.models import load_model

    return load_model()


@pytest.fixture(scope="session")
def silero_session():  # type: ignore[no-untyped-def]
    from agent.vad.silero import shared_session

    return shared_session()
