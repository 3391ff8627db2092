"""The Voxtral TTS graph node: pipelined, paced, interruptible, with a fallback voice.

Built on :class:`tts.base.TTSNode` (clauses in, 20 ms frames with their words
out). What this node adds for a remote GPU server:

* **pipelining** — while one clause plays, the next clause's request is already
  streaming, so sentence gaps are not a server round trip;
* **pacing** — a new request starts only while less than ``max_ahead_s`` of
  audio is waiting to be heard (emitted-but-unplayed plus received-but-unemitted),
  so a barge-in throws away little GPU work. The clock is the audio we emitted,
  corrected by the output transport's ``PlayoutProgressFrame``;
* **barge-in** — an interrupt cancels every request task, which closes its HTTP
  stream (the only cancel both servers understand), and reports how fast;
* **faults** — refused, timed-out, broken or stalled streams become a non-fatal
  ``ErrorFrame`` upstream, and the ``fallback`` node (e.g. piper) speaks the
  rest of the clause and of the turn, so the caller is not left in silence;
* **hedging** — a server that is merely silent is not known to have failed, so
  after ``hedge_after_s`` without a clause's first audio the fallback starts on
  the same clause, and whichever voice has audio first speaks it; the other is
  cancelled unheard. A silent or slow server thus costs the caller well under a
  second of dead air instead of ``first_audio_timeout``;
* **metrics** — a ``MetricsFrame`` per request: server TTFA, framework delay
  (first byte → first frame), RTF, and bytes thrown away by cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from agent.audio import Resampler
from agent.frames import (
    ErrorFrame,
    Frame,
    InterruptFrame,
    LLMTextFrame,
    LLMTurnEndFrame,
    MetricsFrame,
    OutputAudioFrame,
    PlayoutProgressFrame,
    SpeakFrame,
)
from agent.node import DOWNSTREAM, UPSTREAM
from agent.workers import run_blocking
from tts.base import TTSNode
from tts.text_aggregator import ClauseAggregator
from tts.voxtral.client import VoxtralClient
from tts.voxtral.errors import VoxtralCloningUnavailable, VoxtralError, VoxtralTimeout
from tts.voxtral.fetch import Fetch, remaining_text
from tts.voxtral.hedge import Hedge
from tts.voxtral.protocol import SAMPLE_RATE, Dialect
from tts.voxtral.voices import DEFAULT_VOICE, AudioSource, ReferenceClip, check_voice, load_reference

log = logging.getLogger(__name__)

REQUEST_METRIC = "voxtral_request"
INTERRUPT_METRIC = "voxtral_interrupt"


class VoxtralTTSNode(TTSNode):
    """Speaks LLM text and ``SpeakFrame``s through a Voxtral server.

    Give ``voice`` (a preset of the dialect) or ``ref_audio`` (a clip to clone:
    path, file bytes, ``(samples, rate)`` or a ``ReferenceClip``). ``fallback`` is
    a TTS node owned by this one (not placed in the pipeline) that takes over
    when the server fails. Timeouts: with a fallback, a clause whose first
    audio has not come ``hedge_after_s`` after the caller ran out of audio is
    raced against the fallback (None: never); without one, ``first_audio_timeout``
    bounds the wait for a turn's first audio. Later, a stream may stall only as
    long as the audio already queued plus ``dead_air_s`` before the fallback speaks.

    ``hedge_after_s`` defaults to 0.4 s: Voxtral's time to first audio is
    ~0.1-0.3 s on a warm GPU (a little more over the hosted API), so a healthy
    server rarely loses the race, and piper needs ~0.1-0.5 s for a clause on a
    busy CPU, so the fallback is heard within a second of a silent server.
    """

    def __init__(
        self,
        base_url: str | None = None,
        dialect: Dialect | str = Dialect.VLLM_OMNI,
        *,
        voice: str | None = None,
        ref_audio: ReferenceClip | AudioSource | None = None,
        model: str | None = None,
        api_key: str | None = None,
        sse: bool = False,
        client: VoxtralClient | None = None,
        fallback: TTSNode | None = None,
        max_ahead_s: float | None = 3.0,
        max_in_flight: int = 2,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        first_audio_timeout: float = 2.5,
        hedge_after_s: float | None = 0.4,
        dead_air_s: float = 0.7,
        retry_after_s: float = 5.0,
        validate_voice: bool = True,
        sample_rate: int | None = None,
        frame_ms: int = 20,
        aggregator: ClauseAggregator | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(
            native_rate=SAMPLE_RATE, sample_rate=sample_rate, frame_ms=frame_ms, aggregator=aggregator, name=name
        )
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.dialect = Dialect.parse(dialect) if client is None else client.dialect
        if voice is not None and ref_audio is not None:
            raise ValueError("give voice or ref_audio, not both")
        self.voice = voice if voice is not None or ref_audio is not None else DEFAULT_VOICE[self.dialect]
        self._ref_source = ref_audio
        self.ref_audio: ReferenceClip | None = ref_audio if isinstance(ref_audio, ReferenceClip) else None
        self._own_client = client is None
        self.client = client or VoxtralClient(
            base_url, self.dialect, api_key=api_key, model=model, sse=sse,
            connect_timeout=connect_timeout, read_timeout=read_timeout,
        )  # fmt: skip
        self.fallback = fallback
        self.max_ahead_s = max_ahead_s
        self.max_in_flight = max_in_flight
        self.first_audio_timeout = first_audio_timeout
        self.hedge_after_s = hedge_after_s
        self.hedges = {"started": 0, "fallback_won": 0, "server_won": 0}
        self.dead_air_s = dead_air_s
        self.retry_after_s = retry_after_s
        self.validate_voice = validate_voice
        self.requests: list[dict[str, Any]] = []  # one metrics row per finished request
        self.interrupts: list[dict[str, Any]] = []
        self._fetches: set[Fetch] = set()
        self._prefetched: deque[Fetch] = deque()
        self._clause: Any = None
        self._wake = asyncio.Event()
        self._playout_end = 0.0  # monotonic time when all emitted audio will have been heard
        self._emitted_by_turn: dict[int, float] = {}
        self._current: Fetch | None = None  # the request being played now
        self._spoken: Fetch | None = None
        self._failed_turn: int | None = None
        self._down_until = 0.0
        self._cloning_unavailable = False
        self._encoded_ref: str | None = None

    # ------------------------------------------------------------- lifecycle

    async def on_start(self) -> None:
        if self._ref_source is not None and self.ref_audio is None:
            self.ref_audio = await run_blocking(load_reference, self._ref_source, pool="tts")
        if self.ref_audio is not None:
            self._encoded_ref = self.ref_audio.encode(self.dialect)
        if self.voice is not None and self.validate_voice:
            await self._check_voice()
        if self.fallback is not None:
            await self.fallback.on_start()
        self.spawn(self._pacer(), interruptible=False)

    async def _check_voice(self) -> None:
        assert self.voice is not None
        try:
            offered: list[str] | None = await self.client.list_voices()
        except VoxtralError as exc:
            log.warning("%s: cannot list voices (%s); checking %r by name only", self.name, exc, self.voice)
            offered = None
        self.voice = check_voice(self.dialect, self.voice, offered)  # VoiceError ends the call: misconfigured

    async def on_stop(self) -> None:
        if self.fallback is not None:
            await self.fallback.on_stop()
        if self._own_client:
            await self.client.aclose()

    # ---------------------------------------------------------------- frames

    async def process(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, InterruptFrame):
            await self._interrupted()
        elif isinstance(frame, PlayoutProgressFrame):
            self._on_progress(frame)
        await super().process(frame, direction)
        if isinstance(frame, (LLMTextFrame, LLMTurnEndFrame, SpeakFrame)):
            self._wake.set()  # a clause may have been queued: maybe prefetch it

    async def emit(self, frame: Frame, direction: int = DOWNSTREAM) -> None:
        if isinstance(frame, OutputAudioFrame) and direction == DOWNSTREAM:
            now = time.monotonic()
            self._playout_end = max(self._playout_end, now) + frame.duration
            emitted = self._emitted_by_turn
            if frame.turn_id not in emitted and len(emitted) >= 4:
                del emitted[next(iter(emitted))]  # only recent turns can still get progress reports
            emitted[frame.turn_id] = emitted.get(frame.turn_id, 0.0) + frame.duration
            current = self._current
            if current is not None and current.t_first_frame is None and current.consumed:
                current.t_first_frame = now
        await super().emit(frame, direction)

    def _on_progress(self, frame: PlayoutProgressFrame) -> None:
        emitted = self._emitted_by_turn.get(frame.turn_id)
        if emitted is not None and self._speaking_turn == frame.turn_id:
            self._playout_end = time.monotonic() + max(0.0, emitted - frame.played_s)
            self._wake.set()

    def ahead_s(self) -> float:
        """Seconds of this node's audio the caller has not heard yet."""
        unplayed = max(0.0, self._playout_end - time.monotonic())
        waiting = sum(f.pending_s for f in self._prefetched)
        return unplayed + waiting + (self._current.pending_s if self._current is not None else 0.0)

    # ------------------------------------------------------------- synthesis

    async def _speak(self, clause: Any) -> None:
        self._clause = clause  # TTSNode hands synthesize() only the text; we need turn and flags
        self._spoken = None
        await super()._speak(clause)
        # Reported once all of the clause's frames left (the last one is held back).
        if self._spoken is not None:
            await self._report(self._spoken)

    async def synthesize(self, text: str) -> AsyncIterator[np.ndarray]:
        clause = self._clause
        turn_id = clause.turn_id if clause is not None else 0
        uninterruptible = bool(clause.uninterruptible) if clause is not None else False
        if self._server_down(turn_id):
            async for chunk in self._fallback_audio(text):
                yield chunk
            return
        fetch = self._take_prefetched(text, turn_id)
        if fetch is None:
            await self._wait_for_room()
            fetch = self._start_fetch(text, turn_id, uninterruptible)
        self._current = self._spoken = fetch
        fetch.t_consume_start = time.monotonic()
        self._wake.set()  # the pacer may now fetch the clause after this one
        hedge: Hedge | None = None
        try:
            hedge = await self._hedge(fetch, text, uninterruptible)
            if hedge is not None and hedge.won:
                waited = time.monotonic() - fetch.t_consume_start
                failure = fetch.error or VoxtralTimeout(
                    f"Voxtral server sent no audio for {waited:.1f} s; the fallback voice was ready first"
                )
                await self._request_failed(fetch, failure, turn_id)
                async for chunk in hedge.chunks():
                    yield chunk
                return
            while (item := await self._next_item(fetch)) is not None:
                fetch.consumed += len(item)
                yield item
        except VoxtralError as exc:
            await self._request_failed(fetch, exc, turn_id)
            rest = remaining_text(text, fetch.consumed_s, self._seconds_per_char)
            async for chunk in self._fallback_audio(rest):
                yield chunk
        finally:
            self._current = None
            if hedge is not None:
                hedge.task.cancel()  # the loser, or a winner cut short by an interrupt
        self._wake.set()

    async def _hedge(self, fetch: Fetch, text: str, uninterruptible: bool) -> Hedge | None:
        """Race the fallback against a server that is late with a clause's first audio.

        Waits until ``hedge_after_s`` after the caller runs out of queued audio;
        if the server's first audio is still not in, the fallback synthesizes
        the clause on the side, and whichever has audio first wins (``won`` on
        the returned hedge: the fallback's). Nothing is played during the race,
        so the caller hears one voice per clause, never both.
        """
        if self.fallback is None or self.hedge_after_s is None or fetch.arrived.is_set():
            return None
        queued = max(0.0, self._playout_end - time.monotonic())
        try:
            await asyncio.wait_for(fetch.arrived.wait(), queued + self.hedge_after_s)
            return None
        except TimeoutError:
            pass
        hedge = Hedge(self._fallback_audio(text))
        hedge.task = self.spawn(hedge.run(), interruptible=not uninterruptible)
        self.hedges["started"] += 1
        server = asyncio.ensure_future(fetch.arrived.wait())
        fallback = asyncio.ensure_future(hedge.ready.wait())
        try:
            done, _ = await asyncio.wait({server, fallback}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # an interrupt mid-race: neither voice is heard
            hedge.task.cancel()
            raise
        finally:
            server.cancel()
            fallback.cancel()
        if fetch.received and (server in done or not hedge.has_audio):
            # The server was first: its voice speaks, the fallback's audio is never heard.
            hedge.task.cancel()
            await asyncio.wait({hedge.task})
            self.hedges["server_won"] += 1
            log.info("%s: server audio came %.2f s after the clause, before the fallback's", self.name,
                     time.monotonic() - (fetch.t_consume_start or 0.0))
            return None
        if not fetch.received and fetch.error is None and fetch.task.done():
            hedge.task.cancel()  # the server ended the clause with no audio at all: nothing to say
            return None
        hedge.won = True  # first with audio, or the server failed while it worked
        self.hedges["fallback_won"] += 1
        return hedge

    async def _next_item(self, fetch: Fetch) -> np.ndarray | None:
        """The next chunk, or raise; a silent server gets only as long as queued audio lasts."""
        if not fetch.queue.empty():
            item = fetch.queue.get_nowait()
        else:
            queued = max(0.0, self._playout_end - time.monotonic())
            budget = self.first_audio_timeout if queued < 0.05 and not fetch.consumed else queued + self.dead_air_s
            try:
                item = await asyncio.wait_for(fetch.queue.get(), budget)
            except TimeoutError:
                fetch.task.cancel()
                raise VoxtralTimeout(
                    f"Voxtral server sent no audio for {budget:.1f} s (caller would hear silence)"
                ) from None
        if isinstance(item, BaseException):
            raise item
        return item

    def _take_prefetched(self, text: str, turn_id: int) -> Fetch | None:
        while self._prefetched:
            fetch = self._prefetched.popleft()
            if fetch.text == text and fetch.turn_id == turn_id and not fetch.task.cancelled():
                return fetch
            fetch.task.cancel()  # the queue changed under it (an interrupt, a new turn)
        return None

    def _start_fetch(self, text: str, turn_id: int, uninterruptible: bool) -> Fetch:
        stream = self.client.speech(
            text, voice=None if self._encoded_ref else self.voice, ref_audio=self._encoded_ref
        )
        fetch = Fetch(text=text, turn_id=turn_id, uninterruptible=uninterruptible, stream=stream, wake=self._wake,
                      expected_s=len(text) * self._seconds_per_char)  # fmt: skip
        fetch.task = self.spawn(fetch.run(), interruptible=not uninterruptible)
        self._fetches.add(fetch)
        fetch.task.add_done_callback(lambda _t: self._fetches.discard(fetch))
        return fetch

    async def _wait_for_room(self) -> None:
        """Pacing: start a request only while less than ``max_ahead_s`` waits to be heard."""
        if self.max_ahead_s is None:
            return
        while (excess := self.ahead_s() - self.max_ahead_s) > 0:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), excess)
            except TimeoutError:
                pass

    async def _pacer(self) -> None:
        """Starts the next clause's request while the current one plays (pipelining)."""
        while True:
            retry = self._maybe_prefetch()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), retry)
            except TimeoutError:
                pass

    def _maybe_prefetch(self) -> float | None:
        """Prefetch one queued clause if allowed; seconds until worth asking again, or None."""
        if self._current is None or self._server_down(self._current.turn_id):
            return None
        running = sum(1 for f in self._fetches if not f.task.done())
        if running >= self.max_in_flight:
            return None
        upcoming = self._upcoming_clause(len(self._prefetched))
        if upcoming is None:
            return None
        if self.max_ahead_s is not None:
            excess = self.ahead_s() - self.max_ahead_s
            if excess > 0:
                return excess
        self._prefetched.append(self._start_fetch(upcoming.text, upcoming.turn_id, upcoming.uninterruptible))
        return 0.0

    def _upcoming_clause(self, index: int) -> Any:
        """The ``index``-th clause queued behind the current one, within its turn."""
        current = self._current
        for position, item in enumerate(self._queue):  # TTSNode's queue of clauses and turn ends
            if not hasattr(item, "text") or item.turn_id != (current.turn_id if current else item.turn_id):
                return None
            if position == index:
                return item
        return None

    # ---------------------------------------------------------------- faults

    def _server_down(self, turn_id: int) -> bool:
        if self._cloning_unavailable and self._encoded_ref is not None:
            return True
        return turn_id == self._failed_turn or time.monotonic() < self._down_until

    async def _request_failed(self, fetch: Fetch, exc: VoxtralError, turn_id: int) -> None:
        if isinstance(exc, VoxtralCloningUnavailable):
            self._cloning_unavailable = True
        self._failed_turn = turn_id
        self._down_until = time.monotonic() + self.retry_after_s
        for other in list(self._prefetched):
            other.task.cancel()
        self._prefetched.clear()
        fetch.task.cancel()
        await self._report(fetch, error=str(exc))
        spoken = "" if self.fallback is None else f"; {self.fallback.name} speaks the rest"
        log.warning("%s: %s%s", self.name, exc, spoken)
        await self.emit(ErrorFrame(message=f"Voxtral TTS: {exc}{spoken}", node=self.name), UPSTREAM)

    async def _fallback_audio(self, text: str) -> AsyncIterator[np.ndarray]:
        """``text`` in the fallback voice, clause by clause so the first words come fast."""
        if self.fallback is None or not text.strip():
            return
        resampler = Resampler(self.fallback.native_rate, SAMPLE_RATE)
        for clause in ClauseAggregator(first_clause_min_words=3, clause_min_words=3).split(text):
            async for chunk in self.fallback.synthesize(clause):
                yield resampler.process(chunk)
        yield resampler.process(np.zeros(0, dtype=np.int16), last=True)

    # -------------------------------------------------------------- barge-in

    async def _interrupted(self) -> None:
        """``Node`` already cancelled the request tasks; see them closed and report."""
        started = time.monotonic()
        cancelled = [f for f in self._fetches if not f.uninterruptible]
        self._prefetched = deque(f for f in self._prefetched if f.uninterruptible)
        if self._current is not None and not self._current.uninterruptible:
            self._current = None  # its generator may be parked at a yield; don't wait for it to close
        self._playout_end = started  # the output flushes its queue on the same interrupt
        if cancelled:
            self.spawn(self._report_interrupt(started, cancelled), interruptible=False)

    async def _report_interrupt(self, started: float, cancelled: list[Fetch]) -> None:
        await asyncio.gather(*(f.task for f in cancelled), return_exceptions=True)
        closed_ms = (time.monotonic() - started) * 1000.0
        wasted = sum(f.wasted_bytes for f in cancelled)
        row = {"streams": len(cancelled), "closed_ms": round(closed_ms, 2), "wasted_bytes": wasted,
               "wasted_audio_s": round(sum(f.buffered_s for f in cancelled), 3)}  # fmt: skip
        self.interrupts.append(row)
        for fetch in cancelled:
            await self._report(fetch)
        turn = cancelled[0].turn_id
        await self.emit(MetricsFrame(name=INTERRUPT_METRIC, turn_id=turn, value=closed_ms, data=row))

    # --------------------------------------------------------------- metrics

    async def _report(self, fetch: Fetch, error: str | None = None) -> None:
        if fetch.reported:
            return
        fetch.reported = True
        row = fetch.metrics(error)
        self.requests.append(row)
        await self.emit(MetricsFrame(name=REQUEST_METRIC, turn_id=fetch.turn_id, value=row["ttfa_ms"], data=row))

