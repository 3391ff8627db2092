"""One browser peer connection, carrying one call.

A ``PeerCall`` ties an aiortc ``RTCPeerConnection`` to a ``Session`` created
through the ``CallManager``: the caller's audio track feeds ``WebRTCInput``,
``WebRTCOutput``'s track is the bot's voice, and the page's data channel is an
``EventChannel``. Whatever ends first — the browser hanging up, ICE failing,
the connection never completing, the bot ending the call, a server drain —
closes everything else, once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from aiortc import RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from agent.calls import CallInfo, CallManager
from agent.session import Session
from transports.webrtc.events import EventChannel
from transports.webrtc.ice import rtc_configuration
from transports.webrtc.jitter import install_jitter_buffers
from transports.webrtc.tracks import OPUS_RATE, WebRTCInput, WebRTCOutput

logger = logging.getLogger(__name__)

#: After the bot ends a call, the last audio frames and the ``call_ended``
#: event still need a moment to reach the browser before the connection closes.
_END_GRACE_S = 0.25


class BadOffer(ValueError):
    """The SDP offer cannot be answered (malformed, or no audio)."""


class PeerCall:
    """A peer connection and its call, from offer to close."""

    def __init__(
        self,
        manager: CallManager,
        *,
        ice_servers: Iterable[RTCIceServer] = (),
        input_sample_rate: int = 16000,
        connect_timeout_s: float = 15.0,
        caller: str = "",
        metadata: dict[str, Any] | None = None,
        on_closed: Callable[[PeerCall], None] | None = None,
    ) -> None:
        self.manager = manager
        self.session_id = uuid.uuid4().hex[:12]
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers))
        self.input = WebRTCInput()
        self.output = WebRTCOutput()
        self.info = CallInfo(
            session_id=self.session_id,
            transport="webrtc",
            input_sample_rate=input_sample_rate,
            output_sample_rate=OPUS_RATE,
            caller=caller,
            metadata=dict(metadata or {}),
        )
        self.connect_timeout_s = connect_timeout_s
        self.on_closed = on_closed
        self.session: Session | None = None
        self.events: EventChannel | None = None
        self.close_reason: str | None = None
        self.timings: dict[str, float] = {}
        self.closed = asyncio.Event()
        self._connected = asyncio.Event()
        self._channel: Any = None
        self._closing = False
        self._watchers: list[asyncio.Task[None]] = []
        self.input.on_track_ended = lambda: self._close_soon("caller_hangup")
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_connection_state)

    # ------------------------------------------------------------ negotiation

    async def answer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Start the call and return the SDP answer; raises BadOffer or CallRejected.

        The session is running (its models loaded) by the time the answer goes
        back, so the caller's first words are heard from the first packet.
        """
        self.timings["offer"] = time.monotonic()
        try:
            await self.pc.setRemoteDescription(offer)
        except Exception as exc:  # aiortc's SDP parser fails with asserts as well as ValueErrors
            raise BadOffer(f"unusable SDP offer ({type(exc).__name__}: {exc})"[:300]) from None
        if not any(t.kind == "audio" for t in self.pc.getTransceivers()):
            raise BadOffer("the offer has no audio section")
        install_jitter_buffers(self.pc)  # aiortc's own loses ~5 frames per lost packet
        self.pc.addTrack(self.output.track)
        self.session = await self.manager.start_call(self.info, self.input, self.output)
        self.timings["session_started"] = time.monotonic()
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        self.timings["answered"] = time.monotonic()
        self._watch(self._connect_deadline())
        self._watch(self._session_end())
        return self.pc.localDescription

    def bind(self, session: Session) -> None:
        """Called by the manager's session hook, before the session starts."""
        self.events = EventChannel(session, on_hangup=lambda: self.close("caller_hangup"))
        if self._channel is not None:
            self.events.attach(self._channel)

    # ------------------------------------------------------------ pc events

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self.input.attach_track(track)

    def _on_datachannel(self, channel: Any) -> None:
        if self._channel is None:
            self._channel = channel
            if self.events is not None:
                self.events.attach(channel)

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        logger.debug("call %s: connection %s", self.session_id, state)
        if state == "connected" and not self._connected.is_set():
            self.timings["connected"] = time.monotonic()
            self._connected.set()
        elif state in ("failed", "closed"):
            self._close_soon(f"connection_{state}")

    # --------------------------------------------------------------- watchers

    def _watch(self, coro: Any) -> None:
        self._watchers.append(asyncio.get_running_loop().create_task(coro))

    async def _connect_deadline(self) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), self.connect_timeout_s)
        except asyncio.TimeoutError:
            logger.info("call %s: no connection within %.0f s", self.session_id, self.connect_timeout_s)
            await self.close("connect_timeout")

    async def _session_end(self) -> None:
        result = await self.manager.wait(self.session_id)
        if self._closing:
            return
        await asyncio.sleep(_END_GRACE_S)
        await self.close(f"session_{result.reason}" if result else "session_ended")

    def _close_soon(self, reason: str) -> None:
        if not self._closing:
            self._watch(self.close(reason))

    # ------------------------------------------------------------------ close

    async def close(self, reason: str) -> None:
        """End the call and the connection (idempotent; waits for the first close)."""
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        self.close_reason = reason
        try:
            try:
                if self.session is not None:
                    await self.session.cancel(reason)
                    try:
                        await asyncio.wait_for(self.manager.wait(self.session_id), 5.0)
                    except asyncio.TimeoutError:
                        logger.warning("call %s: session did not stop within 5 s", self.session_id)
                if self.events is not None:
                    self.events.close()
                self.output.track.stop()
            finally:
                # Whatever failed above, the connection (its ports, its DTLS task) is released.
                # Shielded: aiortc may be closing itself already (the browser hung up), and a
                # cancelled waiter would cancel the future its own close task resolves.
                await asyncio.shield(self.pc.close())
        finally:
            current = asyncio.current_task()
            for task in self._watchers:
                if task is not current:
                    task.cancel()
            self.closed.set()
            logger.info("call %s closed: %s", self.session_id, reason)
            if self.on_closed is not None:
                self.on_closed(self)
