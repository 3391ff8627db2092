"""The ``Node``: one async handler, two directions, owned tasks.

Frames move between nodes by direct ``await`` calls, so a hop costs a few
coroutine frames rather than a queue and a task switch. A node that must not
hold up its producer while it works (a real-time sink, a slow consumer) is
*buffered*: its ordered frames wait in a bounded :class:`~agent.inbox.Inbox`
drained by one task, while urgent frames are still handled at once in the
sender's task. Long work never runs inside ``process``; it runs in tasks the
node owns (``spawn``), which an interrupt or the end of the session cancels.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from agent.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptFrame,
    MetricsFrame,
    StartFrame,
)
from agent.inbox import Inbox

if TYPE_CHECKING:
    from agent.session import SessionContext

logger = logging.getLogger(__name__)


class Direction(enum.IntEnum):
    DOWNSTREAM = 0
    UPSTREAM = 1


DOWNSTREAM = Direction.DOWNSTREAM
UPSTREAM = Direction.UPSTREAM

Receiver = Callable[[Frame, int], Awaitable[None]]


def is_dropped_by_interrupt(frame: Frame) -> bool:
    """Bot output that an interrupt discards (unless marked uninterruptible)."""
    return type(frame).interruptible and not getattr(frame, "uninterruptible", False)


async def _nowhere(frame: Frame, direction: int) -> None:
    """Where frames go past the ends of an unlinked node."""


class Node:
    """Base class of every graph node.

    Override :meth:`process`; call :meth:`emit` to send frames on. Unknown
    frames must be passed on (the default does), so control frames reach every
    node.
    """

    def __init__(
        self,
        *,
        name: str | None = None,
        buffered: bool = False,
        max_queued_media: int = 50,
        interruptible: bool = True,
    ) -> None:
        self.name = name or type(self).__name__
        self.interruptible = interruptible
        self.ctx: SessionContext | None = None
        self._send_down: Receiver = _nowhere
        self._send_up: Receiver = _nowhere
        self._inbox: Inbox | None = Inbox(max_queued_media) if buffered else None
        self._worker: asyncio.Task[None] | None = None
        self._worker_busy_interruptible = False
        self._tasks: dict[asyncio.Task[Any], bool] = {}
        self._started = False
        self._stopped = False

    # ----------------------------------------------------------------- wiring

    def link(self, send_down: Receiver | None, send_up: Receiver | None) -> None:
        """Set where this node's downstream and upstream emits go."""
        if send_down is not None:
            self._send_down = send_down
        if send_up is not None:
            self._send_up = send_up

    def attach(self, ctx: SessionContext) -> None:
        """Bind the node to the session that runs it (recursive for containers)."""
        self.ctx = ctx

    def nodes(self) -> list[Node]:
        """This node and every node inside it."""
        return [self]

    # -------------------------------------------------------------- receiving

    async def receive(self, frame: Frame, direction: int = DOWNSTREAM) -> None:
        """Entry point for a neighbour's frame."""
        if self._stopped:
            return
        if frame.urgent or self._inbox is None:
            await self._handle(frame, direction)
        else:
            if self._worker is None:
                self._worker = asyncio.get_running_loop().create_task(self._drain())
            await self._inbox.put(frame, direction)

    async def _handle(self, frame: Frame, direction: int) -> None:
        if isinstance(frame, InterruptFrame):
            self._on_interrupt()
        elif isinstance(frame, StartFrame):
            if self._started:
                return
            self._started = True
            await self._run_hook(self.on_start)
        try:
            await self.process(frame, direction)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(exc)
            return
        if isinstance(frame, (EndFrame, CancelFrame)):
            await self.stop()

    async def _drain(self) -> None:
        inbox = self._inbox
        assert inbox is not None
        while True:
            frame, direction = await inbox.get()
            self._worker_busy_interruptible = is_dropped_by_interrupt(frame)
            await self._handle(frame, direction)
            self._worker_busy_interruptible = False

    def _on_interrupt(self) -> None:
        """Drop queued bot output and cancel interruptible work, at once."""
        if not self.interruptible:
            return
        if self._inbox is not None:
            self._inbox.flush(lambda f: not is_dropped_by_interrupt(f))
            if self._worker is not None and self._worker_busy_interruptible:
                self._worker.cancel()
                self._worker = asyncio.get_running_loop().create_task(self._drain())
        for task, interruptible in list(self._tasks.items()):
            if interruptible:
                task.cancel()

    # ----------------------------------------------------------- overridables

    async def process(self, frame: Frame, direction: int) -> None:
        """Handle one frame. The default passes it on unchanged."""
        await self.emit(frame, direction)

    async def on_start(self) -> None:
        """Called once, when the StartFrame reaches this node."""

    async def on_stop(self) -> None:
        """Called once, when the node stops (end, cancel, or session teardown)."""

    # ---------------------------------------------------------------- sending

    async def emit(self, frame: Frame, direction: int = DOWNSTREAM) -> None:
        """Send a frame to the next node in ``direction``."""
        if direction == DOWNSTREAM:
            await self._send_down(frame, direction)
        else:
            await self._send_up(frame, direction)

    async def broadcast(self, frame: Frame) -> None:
        """Send a frame both ways (an interrupt reaches every node this way)."""
        await self._send_up(frame, UPSTREAM)
        await self._send_down(frame, DOWNSTREAM)

    async def mark(self, name: str, turn_id: int = 0, **data: Any) -> None:
        """Record a timestamp in a turn's trace (see ``agent.metrics``)."""
        await self.emit(MetricsFrame(name=name, turn_id=turn_id, data=data or None))

    # ------------------------------------------------------------------ tasks

    def spawn(
        self, coro: Coroutine[Any, Any, Any], *, interruptible: bool = True
    ) -> asyncio.Task[Any]:
        """Run work owned by this node; a failure in it fails the node."""
        task = asyncio.get_running_loop().create_task(self._guard(coro))
        self._tasks[task] = interruptible
        task.add_done_callback(lambda t: (self._tasks.pop(t, None), coro.close()))
        return task

    async def _guard(self, coro: Coroutine[Any, Any, Any]) -> Any:
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(exc)
            return None

    async def cancel_tasks(self, *, only_interruptible: bool = False) -> None:
        """Cancel owned tasks and wait until they are really gone."""
        tasks = [
            t for t, intr in self._tasks.items() if intr or not only_interruptible
        ]
        if self._worker is not None and not only_interruptible:
            tasks.append(self._worker)
            self._worker = None
        current = asyncio.current_task()
        tasks = [t for t in tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self) -> None:
        """Stop the node: cancel its work, then run ``on_stop`` once."""
        if self._stopped:
            return
        self._stopped = True
        await self.cancel_tasks()
        await self._run_hook(self.on_stop)

    async def _run_hook(self, hook: Callable[[], Awaitable[None]]) -> None:
        try:
            await hook()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        if self.ctx is not None:
            self.ctx.node_failed(self, exc)
        else:
            logger.error("node %s failed outside a session: %r", self.name, exc)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
