"""What can go wrong talking to a Voxtral server, as exceptions a caller can act on."""

from __future__ import annotations


class VoxtralError(Exception):
    """Base of every Voxtral stage failure; ``str()`` is written for the operator."""


class VoxtralConnectError(VoxtralError):
    """The server could not be reached (refused, DNS, connect timeout)."""


class VoxtralTimeout(VoxtralError):
    """The server accepted the request but went quiet for longer than allowed."""


class VoxtralHTTPError(VoxtralError):
    """The server answered 4xx/5xx; ``message`` is the server's own explanation."""

    def __init__(self, status: int, message: str, *, url: str = "") -> None:
        self.status = status
        self.message = message
        self.url = url
        where = f" from {url}" if url else ""
        super().__init__(f"HTTP {status}{where}: {message}")


class VoxtralCloningUnavailable(VoxtralHTTPError):
    """The server cannot encode reference audio (vLLM-Omni with the public checkpoint)."""

    def __init__(self, status: int, message: str, *, url: str = "") -> None:
        super().__init__(status, message, url=url)
        self.args = (
            "voice cloning is not available on this server: the open-weights "
            "Voxtral-4B-TTS-2603 checkpoint ships without codec-encoder weights, so "
            "ref_audio cannot be encoded. Use a preset voice here, or the Mistral API "
            f"for cloning. (server said: {message})",
        )


class VoxtralProtocolError(VoxtralError):
    """The response did not follow the protocol (content type, SSE payload)."""


class VoxtralStreamError(VoxtralError):
    """The audio stream ended before the server said it was done (mid-sentence)."""

    def __init__(self, message: str, *, samples_received: int = 0) -> None:
        super().__init__(message)
        self.samples_received = samples_received


class VoiceError(VoxtralError, ValueError):
    """A voice name the server does not offer (or from the other dialect)."""


class ReferenceClipError(VoxtralError, ValueError):
    """A reference clip that cannot be used for cloning (length, silence, format)."""
