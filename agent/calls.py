"""Calls in a process: build each call's graph, admit or refuse, drain.

Every transport (WebRTC, SIP, carrier media streams, MQTT audio) hands new
calls to one ``CallManager``. It builds the call's graph from the user's bot
factory — ``[transport input, *bot, transport output]`` — runs it as a
``Session``, and keeps the live calls, so admission control, graceful drain
and observers (the MQTT bus, metrics) work the same for every transport.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent.node import Node
from agent.pipeline import NodeSpec
from agent.session import Session, SessionResult

logger = logging.getLogger(__name__)

DEFAULT_BOT = "agent.clinic:clinic_bot"


@dataclass(slots=True)
class CallInfo:
    """What a bot factory knows about the call it builds a graph for."""

    session_id: str
    transport: str
    input_sample_rate: int = 16000
    output_sample_rate: int = 16000
    caller: str = ""
    callee: str = ""
    direction: str = "inbound"
    metadata: dict[str, Any] = field(default_factory=dict)


BotFactory = Callable[[CallInfo], NodeSpec | Awaitable[NodeSpec]]
SessionHook = Callable[[Session, CallInfo], None]


class CallRejected(Exception):
    """The process will not take this call (busy or draining); say why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def load_bot(spec: str | None) -> BotFactory:
    """Resolve ``module:object`` (the ``--agent`` option) to a bot factory."""
    spec = spec or DEFAULT_BOT
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--agent must look like MODULE:OBJECT, got {spec!r}")
    factory = getattr(importlib.import_module(module_name), attr)
    if not callable(factory):
        raise TypeError(f"{spec} is not callable")
    return factory


class CallManager:
    """Owns the live calls of one process."""

    def __init__(self, bot: BotFactory, *, max_sessions: int | None = None) -> None:
        self.bot = bot
        self.max_sessions = max_sessions
        self.sessions: dict[str, Session] = {}
        self.draining = False
        self._tasks: dict[str, asyncio.Task[SessionResult]] = {}
        self._hooks: list[SessionHook] = []
        self._admission: list[Callable[[], str | None]] = []
        self.results: list[SessionResult] = []

    def on_session(self, hook: SessionHook) -> None:
        """Call ``hook(session, info)`` for every new call, before it starts."""
        self._hooks.append(hook)

    def add_admission_check(self, check: Callable[[], str | None]) -> None:
        """Add a check returning a refusal reason (e.g. CPU budget) or None."""
        self._admission.append(check)

    def refusal(self) -> str | None:
        """Why a new call would be refused now, or None if it would be taken."""
        if self.draining:
            return "draining"
        if self.max_sessions is not None and len(self.sessions) >= self.max_sessions:
            return "busy"
        for check in self._admission:
            reason = check()
            if reason:
                return reason
        return None

    async def build_graph(self, info: CallInfo, transport_in: Node, transport_out: Node) -> list[NodeSpec]:
        bot = self.bot(info)
        if inspect.isawaitable(bot):
            bot = await bot
        middle = [bot] if isinstance(bot, Node) else list(bot)  # type: ignore[arg-type]
        return [transport_in, *middle, transport_out]

    async def start_call(
        self, info: CallInfo, transport_in: Node, transport_out: Node, **session_args: Any
    ) -> Session:
        """Admit a call, build its graph and start it; raises CallRejected."""
        reason = self.refusal()
        if reason:
            raise CallRejected(reason)
        graph = await self.build_graph(info, transport_in, transport_out)
        session = Session(
            graph,
            session_id=info.session_id,
            input_sample_rate=info.input_sample_rate,
            output_sample_rate=info.output_sample_rate,
            **session_args,
        )
        for hook in self._hooks:
            hook(session, info)
        self.sessions[session.session_id] = session
        task = asyncio.get_running_loop().create_task(self._run(session))
        self._tasks[session.session_id] = task
        await session.started.wait()
        return session

    async def _run(self, session: Session) -> SessionResult:
        try:
            result = await session.run()
        finally:
            self.sessions.pop(session.session_id, None)
            self._tasks.pop(session.session_id, None)
        self.results.append(result)
        del self.results[:-1000]
        logger.info("call %s ended: %s", session.session_id, result.reason)
        return result

    async def wait(self, session_id: str) -> SessionResult | None:
        task = self._tasks.get(session_id)
        return await task if task else None

    async def drain(self, deadline_s: float) -> None:
        """Refuse new calls, let live ones finish, cancel what is left at the deadline."""
        self.draining = True
        tasks = list(self._tasks.values())
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for session in list(self.sessions.values()):
            await session.cancel("drain_deadline")
        if pending:
            await asyncio.wait(pending, timeout=5)

    async def close(self) -> None:
        for session in list(self.sessions.values()):
            await session.cancel("shutdown")
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=5)
