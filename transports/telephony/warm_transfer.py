"""Warm transfer: the caller hears hold music while the human is briefed, then is handed over.

A blind transfer (``TransferFrame``) drops the caller on a person who knows
nothing. A warm one, as a good receptionist does it:

1. the bot says its hand-off line ("Let me get a nurse for you, please hold");
2. the caller hears hold music (generated here, no audio assets) instead of
   dead air, which callers take for a dropped line;
3. meanwhile the human is called and told who is waiting and why (the
   ``summary``): over SIP a second outbound call whose graph speaks it with
   the TTS and hangs up; for carriers, a REST request that places a call
   speaking it with the carrier's own TTS (built by :func:`consult_request`);
4. then the caller is transferred to the human (SIP REFER; the carrier's
   transfer request) by the ordinary ``TransferFrame`` path.

Usage: emit ``WarmTransferFrame(target=..., summary=...)`` from the bot and
put ``WarmTransfer(consult)`` last in the bot's nodes, after the TTS (just
before the output transport)::

    consult = SipConsult(server, speaker=PiperTTSNode)
    bot = [*listening, LLMNode(...), PiperTTSNode(), WarmTransfer(consult)]

Without a ``WarmTransfer`` node a ``WarmTransferFrame`` is still a
``TransferFrame``: the output transport performs a blind transfer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from xml.sax.saxutils import escape

import httpx
import numpy as np

from agent.calls import CallInfo
from agent.frames import EndFrame, EventFrame, Frame, OutputAudioFrame, SpeakFrame, StartFrame, TransferFrame
from agent.node import DOWNSTREAM, UPSTREAM, Node
from agent.pipeline import NodeSpec
from transports.telephony.carrier_api import TWILIO_API, VONAGE_API, CallControl

if TYPE_CHECKING:
    from transports.sip.transport import SipServer

logger = logging.getLogger(__name__)

#: Placed and briefed the human? ``consult(target, text) -> bool``.
Consult = Callable[[str, str], Awaitable[bool]]

DEFAULT_INTRO = "Hello, this is the virtual assistant with a caller for you."
#: Session end reason of a briefing call whose summary was heard to the end.
BRIEFED = "briefed"


@dataclass(slots=True, kw_only=True)
class WarmTransferFrame(TransferFrame):
    """Transfer the caller to ``target`` once the human has heard ``summary``."""

    summary: str = ""


# ------------------------------------------------------------------ hold music

#: Arpeggios of a I-vi-IV-V progression in C, kept inside the 300-3400 Hz phone band.
_CHORDS_HZ = (
    (329.6, 392.0, 523.3, 659.3),  # C: E4 G4 C5 E5
    (440.0, 523.3, 659.3, 880.0),  # Am: A4 C5 E5 A5
    (349.2, 440.0, 523.3, 698.5),  # F: F4 A4 C5 F5
    (392.0, 493.9, 587.3, 784.0),  # G: G4 B4 D5 G5
)


def hold_music(sample_rate: int = 8000, *, note_s: float = 0.25, level_dbfs: float = -20.0) -> np.ndarray:
    """One seamless loop of soft music-box arpeggios (16 notes, 4 s by default), int16 mono.

    Plucked notes (fast attack, exponential decay, a quiet octave partial)
    sound like music rather than a test tone, survive G.711, and a peak of
    -20 dBFS keeps it well below speech.
    """
    n = int(note_s * sample_rate)
    t = np.arange(n) / sample_rate
    fade = 0.01  # 10 ms in and out: every note starts and ends at zero, so nothing clicks
    envelope = np.minimum(np.minimum(t, note_s - t) / fade, 1.0) * np.exp(-t / (note_s * 0.45))
    notes = [
        envelope * (np.sin(2 * np.pi * f * t) + 0.25 * np.sin(4 * np.pi * f * t))
        for chord in _CHORDS_HZ for f in chord
    ]
    loop = np.concatenate(notes)
    loop *= 10 ** (level_dbfs / 20) / np.max(np.abs(loop))
    return np.round(loop * 32767).astype(np.int16)


# ------------------------------------------------------------------------ node


class WarmTransfer(Node):
    """Turns a ``WarmTransferFrame`` into hold music, a briefing for the human, then a ``TransferFrame``.

    ``consult(target, text)`` briefs the human and returns True once they
    heard it (:class:`SipConsult`, :class:`CarrierConsult`). If it fails or
    takes longer than ``consult_timeout_s`` (the human is busy, does not
    answer, hangs up mid-summary), ``fallback="return"`` takes the caller off
    hold and sends a ``transfer_failed`` event upstream, so the bot can say
    so and carry on; ``"blind"`` transfers anyway.
    While the caller is on hold the bot's own audio is held back: hold music
    and a half-spoken answer must not mix.
    """

    def __init__(
        self,
        consult: Consult,
        *,
        intro: str = DEFAULT_INTRO,
        music: np.ndarray | None = None,
        consult_timeout_s: float = 90.0,
        fallback: Literal["return", "blind"] = "return",
        lead_s: float = 0.2,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name or "warm-transfer")
        self.consult = consult
        self.intro = intro
        self.music = music
        self.consult_timeout_s = consult_timeout_s
        self.fallback = fallback
        self.lead_s = lead_s
        self.sample_rate = 8000
        self.on_hold = False
        self._busy = False
        self._playout_end = 0.0  # when the bot audio passed on so far will have been played (estimate)

    async def process(self, frame: Frame, direction: int) -> None:
        if direction == DOWNSTREAM:
            if isinstance(frame, StartFrame):
                self.sample_rate = frame.output_sample_rate
            elif isinstance(frame, WarmTransferFrame):
                if self._busy:
                    logger.warning("%s: a transfer is already under way; %s ignored", self.name, frame.target)
                else:
                    self._busy = True
                    self.spawn(self._transfer(frame), interruptible=False)
                return
            elif isinstance(frame, OutputAudioFrame):
                if self.on_hold:
                    return
                self._playout_end = max(self._playout_end, time.monotonic()) + frame.duration
        await self.emit(frame, direction)

    async def _transfer(self, frame: WarmTransferFrame) -> None:
        started = time.monotonic()
        text = f"{self.intro} {frame.summary}".strip()
        await self._event("warm_transfer_started", target=frame.target)
        self.on_hold = True
        music = self.spawn(self._play_hold(), interruptible=False)
        try:
            briefed = await asyncio.wait_for(self.consult(frame.target, text), self.consult_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever failed, the caller stays connected
            logger.warning("%s: briefing %s failed: %s", self.name, frame.target, exc or type(exc).__name__)
            briefed = False
        finally:
            music.cancel()
            self.on_hold = False
        await self._event("warm_transfer_briefed" if briefed else "warm_transfer_unbriefed", target=frame.target,
                          seconds=round(time.monotonic() - started, 2))
        self._busy = False
        if briefed or self.fallback == "blind":
            await self.emit(TransferFrame(target=frame.target, reason=frame.reason))
        else:
            await self.emit(EventFrame(kind="transfer_failed", data={"target": frame.target, "stage": "briefing"}),
                            UPSTREAM)

    async def _play_hold(self) -> None:
        """Music in 100 ms frames, from the end of the bot's queued speech, ``lead_s`` ahead of the playout.

        Queuing no more than that keeps the hand-off prompt: once the human is
        briefed, the transfer waits for at most ``lead_s`` of music to play out.
        """
        rate = self.sample_rate
        loop = self.music if self.music is not None else hold_music(rate)
        step = rate // 10
        position, plays_at = 0, max(time.monotonic(), self._playout_end)
        while True:
            await asyncio.sleep(max(0.0, plays_at - self.lead_s - time.monotonic()))
            piece = np.take(loop, np.arange(position, position + step), mode="wrap")
            position = (position + step) % len(loop)
            await self.emit(OutputAudioFrame(pcm=piece.tobytes(), sample_rate=rate, uninterruptible=True))
            plays_at = max(plays_at, time.monotonic()) + step / rate  # an underrun gives no credit

    async def _event(self, kind: str, **data: object) -> None:
        await self.emit(EventFrame(kind=kind, data=dict(data)))


# ------------------------------------------------------------------ SIP consult


class _Briefing(Node):
    """The briefing call's bot: say the text (through the TTS after it), then hang up."""

    def __init__(self, text: str, pause_s: float) -> None:
        super().__init__(name="briefing")
        self.text, self.pause_s = text, pause_s

    async def process(self, frame: Frame, direction: int) -> None:
        await self.emit(frame, direction)
        if isinstance(frame, StartFrame):
            self.spawn(self._brief(), interruptible=False)

    async def _brief(self) -> None:
        await asyncio.sleep(self.pause_s)  # let the human say hello
        await self.emit(SpeakFrame(text=self.text, uninterruptible=True))
        await self.emit(EndFrame(reason=BRIEFED))  # ordered: it ends the call once the words are heard


class SipConsult:
    """Briefs the human with a second SIP call from ``server``, spoken by ``speaker()`` (a TTS node).

    ``target`` is a SIP URI, or a number dialled through ``trunk`` (host,
    port), which also serves as outbound proxy for URIs when given. The
    briefing call runs its own small graph, outside the manager's admission:
    a full worker must not refuse a leg of a call it already took.
    """

    def __init__(self, server: SipServer, speaker: Callable[[], NodeSpec], *, trunk: tuple[str, int] | None = None,
                 ring_timeout_s: float = 30.0, hello_pause_s: float = 0.5) -> None:
        self.server, self.speaker, self.trunk = server, speaker, trunk
        self.ring_timeout_s, self.hello_pause_s = ring_timeout_s, hello_pause_s

    def bot(self, text: str) -> Callable[[CallInfo], list[NodeSpec]]:
        def briefing(info: CallInfo) -> list[NodeSpec]:
            speaker = self.speaker()
            return [_Briefing(text, self.hello_pause_s), *(speaker if isinstance(speaker, list) else [speaker])]

        return briefing

    async def route(self, target: str) -> tuple[str, tuple[str, int]]:
        """(Request-URI, resolved address to send the INVITE to)."""
        from transports.sip.message import parse_uri

        if target.startswith(("sip:", "sips:")):
            uri = parse_uri(target)
            host, port = self.trunk or (uri.host.strip("[]"), uri.port or 5060)
        elif self.trunk is not None:
            host, port = self.trunk
            target = f"sip:{target.removeprefix('tel:')}@{host}"
        else:
            raise ValueError(f"{target!r} is a number: give SipConsult a trunk to dial it through")
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
        return target, (str(infos[0][4][0]), int(infos[0][4][1]))

    async def __call__(self, target: str, text: str) -> bool:
        uri, address = await self.route(target)
        call = await self.server.call(uri, address, bot=self.bot(text), timeout=self.ring_timeout_s,
                                      metadata={"warm_transfer": "briefing"})
        try:
            await call.ended.wait()
        except asyncio.CancelledError:  # the caller hung up while on hold: the human need not listen on
            await call.hangup()
            raise
        reason = call.result.reason if call.result else "error"
        if reason != BRIEFED:
            logger.info("briefing call to %s ended before the summary was heard: %s", target, reason)
        return reason == BRIEFED


# -------------------------------------------------------------- carrier consult


def consult_request(control: CallControl, target: str, caller_id: str, text: str) -> httpx.Request | None:
    """The carrier REST request that calls ``target`` and speaks ``text`` with the carrier's TTS.

    Twilio: create a call with inline TwiML ``<Say>``; Vonage: create a call
    with an inline NCCO ``talk`` action. Telnyx, Plivo and Exotel need a
    hosted answer URL or a webhook round trip to speak on a new call: None.
    """
    c = control.credentials
    if control.carrier == "twilio":
        twiml = f"<Response><Say>{escape(text)}</Say></Response>"
        request = httpx.Request("POST", f"{TWILIO_API}/Accounts/{c.account_sid}/Calls.json",
                                data={"To": target, "From": caller_id, "Twiml": twiml})
        return next(httpx.BasicAuth(c.account_sid, c.auth_token).auth_flow(request))
    if control.carrier == "vonage":
        def endpoint(number: str) -> dict[str, str]:
            return {"type": "sip", "uri": number} if number.startswith("sip:") else {"type": "phone", "number": number}

        body = {"to": [endpoint(target)], "from": {"type": "phone", "number": caller_id},
                "ncco": [{"action": "talk", "text": text}]}
        return httpx.Request("POST", f"{VONAGE_API}/calls", content=json.dumps(body).encode(),
                             headers={"Authorization": f"Bearer {c.jwt}", "Content-Type": "application/json"})
    return None


class CarrierConsult:
    """Briefs the human with a carrier-placed call (see :func:`consult_request`).

    The carrier reports the briefing call's progress only to a status webhook,
    so the caller stays on hold for ``ring_s`` plus the summary's estimated
    speaking time after the request is accepted, then is transferred.
    """

    def __init__(self, control: CallControl, caller_id: str, *, ring_s: float = 8.0,
                 seconds_per_char: float = 0.07) -> None:
        self.control, self.caller_id = control, caller_id
        self.ring_s, self.seconds_per_char = ring_s, seconds_per_char

    async def __call__(self, target: str, text: str) -> bool:
        request = consult_request(self.control, target, self.caller_id, text)
        if not await self.control.send(request):
            return False
        await asyncio.sleep(self.ring_s + self.seconds_per_char * len(text))
        return True
