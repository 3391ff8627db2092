"""A session runs one call's graph and keeps its failures to itself.

The session owns the graph for the life of a call: it starts it, lets outside
code inject frames (a greeting, an operator's "say this", an interrupt), shows
observers every frame that leaves either end of the graph, and tears the
graph down when the call ends. A node that raises ends *its* session with an
error frame and a log line naming the node; other sessions in the process
never notice. A node that *hangs* is caught by the optional stall watchdog
(``stall_timeout_s``): when no frame has left the graph for that long the
session ends with reason ``stalled``, naming the node it is stuck in, and its
tasks are cancelled like at any other end.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    EventFrame,
    Frame,
    InterruptFrame,
    StartFrame,
)
from agent.metrics import TurnTracker
from agent.node import DOWNSTREAM, UPSTREAM, Node
from agent.pipeline import NodeSpec, Pipeline

logger = logging.getLogger(__name__)

#: Longest wait for the nodes to stop; a node stuck in ``on_stop`` is left behind, logged.
TEARDOWN_TIMEOUT_S = 10.0
#: Teardowns that overran, still running (kept referenced until they finish).
ABANDONED: set[asyncio.Future[None]] = set()

Observer = Callable[[Frame, int], None]


@dataclass(slots=True)
class SessionResult:
    session_id: str
    reason: str
    error: str | None = None
    duration_s: float = 0.0
    turns: list[dict[str, float | int | str | None]] = field(default_factory=list)


class SessionContext:
    """What a node may know about the session running it."""

    __slots__ = ("session_id", "_session")

    def __init__(self, session: Session) -> None:
        self.session_id = session.session_id
        self._session = session

    def node_failed(self, node: Node, exc: BaseException) -> None:
        self._session._node_failed(node, exc)

    @property
    def input_sample_rate(self) -> int:
        return self._session.input_sample_rate

    @property
    def output_sample_rate(self) -> int:
        return self._session.output_sample_rate


class _Edge(Node):
    """The session's end of the graph: frames that leave it are observed here."""

    def __init__(self, session: Session, side: int) -> None:
        super().__init__(name="session-head" if side == UPSTREAM else "session-tail")
        self._session = session
        self._side = side

    async def receive(self, frame: Frame, direction: int = DOWNSTREAM) -> None:
        if direction == self._side:
            self._session._observe(frame, direction)
        else:
            await self.emit(frame, direction)


class Session:
    """One call: a graph, its lifecycle and its observers."""

    def __init__(
        self,
        graph: NodeSpec,
        *,
        session_id: str | None = None,
        input_sample_rate: int = 16000,
        output_sample_rate: int = 16000,
        max_duration_s: float | None = None,
        stall_timeout_s: float | None = None,
    ) -> None:
        self.session_id = session_id or uuid.uuid4().hex[:12]
        self.stall_timeout_s = stall_timeout_s
        self._last_frame_at = 0.0
        self.input_sample_rate = input_sample_rate
        self.output_sample_rate = output_sample_rate
        self.max_duration_s = max_duration_s
        self.graph: Node = graph if isinstance(graph, Node) else Pipeline(graph)
        self._head = _Edge(self, UPSTREAM)
        self._tail = _Edge(self, DOWNSTREAM)
        self._root = Pipeline([self._head, self.graph, self._tail], name="session")
        self._observers: list[Observer] = []
        self._done: asyncio.Future[tuple[str, str | None]] | None = None
        self.turns = TurnTracker()
        self._observers.append(self.turns.observe)
        self.started_at = 0.0
        self.started = asyncio.Event()
        self.result: SessionResult | None = None

    # ------------------------------------------------------------- observing

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer(frame, direction)`` for every frame leaving the graph."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer)

    def _observe(self, frame: Frame, direction: int) -> None:
        self._last_frame_at = time.monotonic()
        for observer in tuple(self._observers):
            try:
                observer(frame, direction)
            except Exception:
                logger.exception("session %s: observer %r failed", self.session_id, observer)
        if isinstance(frame, (EndFrame, CancelFrame)):
            self._finish(frame.reason)
        elif isinstance(frame, ErrorFrame) and frame.fatal:
            self._finish("error", f"{frame.node}: {frame.message}")

    # -------------------------------------------------------------- control

    async def push(self, frame: Frame) -> None:
        """Inject a frame at the head of the graph, flowing downstream."""
        await self._head.emit(frame, DOWNSTREAM)

    async def interrupt(self) -> None:
        """Barge in from outside (e.g. an operator): stop the bot at once."""
        await self.push(InterruptFrame())

    async def end(self, reason: str = "completed") -> None:
        """End gracefully: queued audio drains before the call closes."""
        await self.push(EndFrame(reason=reason))

    async def cancel(self, reason: str = "cancelled") -> None:
        """End now, dropping whatever is queued."""
        self._finish(reason)

    def _finish(self, reason: str, error: str | None = None) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result((reason, error))

    def _node_failed(self, node: Node, exc: BaseException) -> None:
        logger.error(
            "session %s: node %s failed: %s: %s",
            self.session_id, node.name, type(exc).__name__, exc,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        message = f"{type(exc).__name__}: {exc}"
        self._observe(ErrorFrame(message=message, node=node.name, fatal=True), UPSTREAM)

    # ------------------------------------------------------------------ run

    async def run(self) -> SessionResult:
        """Run the call until it ends; never raises for a node's failure."""
        if self._done is not None:
            raise RuntimeError("a Session runs once")
        self._done = asyncio.get_running_loop().create_future()
        self._root.attach(SessionContext(self))
        self.started_at = time.monotonic()
        self._observe(EventFrame(kind="call_started", data={"session_id": self.session_id}), DOWNSTREAM)
        watchdog = None
        if self.max_duration_s:
            watchdog = asyncio.get_running_loop().call_later(
                self.max_duration_s, self._finish, "max_duration"
            )
        stall_watch = None
        try:
            await self._root.receive(
                StartFrame(
                    input_sample_rate=self.input_sample_rate,
                    output_sample_rate=self.output_sample_rate,
                    session_id=self.session_id,
                )
            )
            self.started.set()
            if self.stall_timeout_s:  # from here: model loading in on_start is not a stall
                stall_watch = asyncio.get_running_loop().create_task(self._watch_stall())
            reason, error = await self._done
        except asyncio.CancelledError:
            reason, error = "cancelled", None
            await self._teardown()
            raise
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if stall_watch is not None:
                stall_watch.cancel()
        await self._teardown()
        self.result = SessionResult(
            session_id=self.session_id,
            reason=reason,
            error=error,
            duration_s=time.monotonic() - self.started_at,
            turns=self.turns.summary(),
        )
        self._observe(
            EventFrame(kind="call_ended", data={"session_id": self.session_id, "reason": reason, "error": error}),
            DOWNSTREAM,
        )
        return self.result

    async def _teardown(self) -> None:
        stopping = asyncio.ensure_future(self._root.stop())
        try:
            await asyncio.wait_for(asyncio.shield(stopping), TEARDOWN_TIMEOUT_S)
        except asyncio.TimeoutError:
            logger.error("session %s: nodes did not stop within %.0f s; left behind", self.session_id,
                         TEARDOWN_TIMEOUT_S)
            ABANDONED.add(stopping)  # a pending task nobody references would be garbage-collected mid-await
            stopping.add_done_callback(ABANDONED.discard)
        except Exception:
            logger.exception("session %s: teardown failed", self.session_id)

    # ------------------------------------------------------------- watchdog

    async def _watch_stall(self) -> None:
        """End the call when no frame has left the graph for ``stall_timeout_s``.

        A live call always has traffic at its edges (caller audio reaches the
        output end every 20 ms), so silence means something upstream is stuck:
        usually a node awaiting forever inside ``process``, which holds up its
        producer. Checking the edges costs one clock read per frame, not one
        per node hop.
        """
        timeout = self.stall_timeout_s
        assert timeout
        self._last_frame_at = time.monotonic()
        while True:
            await asyncio.sleep(min(timeout / 4, 1.0))
            idle = time.monotonic() - self._last_frame_at
            if idle >= timeout:
                where = self._stuck_in()
                logger.error("session %s: no frame left the graph for %.1f s%s; ending the call",
                             self.session_id, idle, f" (stuck in {where})" if where else "")
                self._finish("stalled", f"no frames for {idle:.1f} s" + (f"; stuck in {where}" if where else ""))
                return

    def _stuck_in(self) -> str | None:
        """The node of this session whose ``process`` some task is parked in, for the log line."""
        ours = {id(node) for node in self._root.nodes()}
        stuck = None
        for task in asyncio.all_tasks():
            awaiting = task.get_coro()
            while awaiting is not None:  # Task.get_stack() shows one frame only: walk the await chain
                frame = getattr(awaiting, "cr_frame", None)
                owner = frame.f_locals.get("self") if frame is not None else None
                if frame is not None and frame.f_code.co_name == "process" and id(owner) in ours:
                    stuck = f"{owner.name}.process"  # the innermost one wins
                awaiting = getattr(awaiting, "cr_await", None)
            if stuck:
                return stuck
        return None
