"""Shared fixtures of the WebRTC tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def whisper():  # type: ignore[no-untyped-def]
    """The bundled tiny.en model, to hear what the browser played."""
    from stt import load_model, resolve_model

    return load_model(resolve_model(None))
