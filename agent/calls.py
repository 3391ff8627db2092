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
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent.node import Node
from agent.pipeline import NodeSpec
from agent.session import Session, SessionResult

logger = logging.getLogger(__name__)

DEFAULT_BOT = "agent.clinic:clinic_bot"
#: What a transport that can speak says when it turns a call away.
BUSY_PROMPT = "All our agents are busy right now. Please call again in a few minutes."
#: Seconds a refused caller should wait before retrying (SIP/HTTP ``Retry-After``).
RETRY_AFTER_S = 5
#: Calls one process takes at once unless told otherwise. A live SIP call with VAD costs
#: 1/76 of a core (bench/telephony.py), so the CPU admission check refuses real calls
#: well before this; the cap bounds what that check cannot see coming — a flood of
#: INVITEs or streams that are cheap until their audio starts — far below the 400
#: sessions one event loop keeps in real time (bench/overhead.py).
DEFAULT_MAX_SESSIONS = 100
#: Seconds a speech-to-text job may wait for a thread before a worker refuses new calls:
#: a final transcript that waits this long adds as much to every answer.
DEFAULT_MAX_STT_WAIT_S = 0.5
#: Ended calls whose results a manager keeps for :meth:`CallManager.wait` (a bounded
#: window: a worker that takes millions of calls must not keep them all).
RECENT_RESULTS = 100


@dataclass(slots=True)
class CallInfo:
    """What a bot factory knows about the call it builds a graph for.

    One shape for every transport. ``session_id`` is voxwire's id for the call
    (unique in the process; MQTT topics and logs use it); ``call_id`` is the
    network's id when there is one (SIP Call-ID, Twilio CallSid, Telnyx call
    control id), which carrier REST calls need. ``caller``/``callee`` are the
    numbers or user parts; ``metadata`` holds what the network passed along
    (SIP ``X-`` headers, a carrier stream's custom parameters, a browser's
    user agent).
    """

    session_id: str
    transport: str  # "webrtc", "sip", "twilio", "telnyx", "vonage", "plivo", "exotel", "mqtt", ...
    input_sample_rate: int = 16000
    output_sample_rate: int = 16000
    caller: str = ""
    callee: str = ""
    direction: str = "inbound"  # or "outbound"
    call_id: str = ""
    remote_address: str = ""  # "host:port" of the peer, when known
    codec: str = ""  # the line's codec: "PCMU", "PCMA", "mulaw", "l16", "opus"
    metadata: dict[str, Any] = field(default_factory=dict)


def new_session_id() -> str:
    return uuid.uuid4().hex[:12]


BotFactory = Callable[[CallInfo], NodeSpec | Awaitable[NodeSpec]]
SessionHook = Callable[[Session, CallInfo], None]
#: ``hook(transport, reason)``: a call was turned away (metrics count these).
RefusalHook = Callable[[str, str], None]


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
    """Owns the live calls of one process.

    ``max_sessions`` caps live calls (:data:`DEFAULT_MAX_SESSIONS` unless given;
    None: no cap, only the admission checks).
    """

    def __init__(self, bot: BotFactory, *, max_sessions: int | None = DEFAULT_MAX_SESSIONS) -> None:
        self.bot = bot
        self.max_sessions = max_sessions
        self.sessions: dict[str, Session] = {}
        self.draining = False
        self._tasks: dict[str, asyncio.Task[SessionResult]] = {}
        self._hooks: list[SessionHook] = []
        self._refusal_hooks: list[RefusalHook] = []
        self._admission: list[Callable[[], str | None]] = []
        self.results: list[SessionResult] = []

    def on_session(self, hook: SessionHook) -> None:
        """Call ``hook(session, info)`` for every new call, before it starts."""
        self._hooks.append(hook)

    def on_refusal(self, hook: RefusalHook) -> None:
        """Call ``hook(transport, reason)`` for every call turned away by :meth:`admit`."""
        self._refusal_hooks.append(hook)

    def add_admission_check(self, check: Callable[[], str | None]) -> None:
        """Add a check returning a refusal reason (e.g. CPU budget) or None."""
        self._admission.append(check)

    def refusal(self) -> str | None:
        """Why a new call would be refused now, or None if it would be taken (a query only)."""
        if self.draining:
            return "draining"
        if self.max_sessions is not None and len(self.sessions) >= self.max_sessions:
            return "busy"
        for check in self._admission:
            reason = check()
            if reason:
                return reason
        return None

    def admit(self, transport: str) -> None:
        """Raise ``CallRejected`` if a new call must be refused now, and tell the refusal hooks.

        Transports call it before they spend anything on a call (an RTP port, a
        WebRTC answer); :meth:`start_call` calls it again, so a refusal is
        reported exactly once whichever check catches it.
        """
        reason = self.refusal()
        if reason:
            for hook in self._refusal_hooks:
                try:
                    hook(transport, reason)
                except Exception:
                    logger.exception("refusal hook %r failed", hook)
            raise CallRejected(reason)

    async def build_graph(self, info: CallInfo, transport_in: NodeSpec, transport_out: NodeSpec) -> list[NodeSpec]:
        bot = self.bot(info)
        if inspect.isawaitable(bot):
            bot = await bot
        return [*_as_list(transport_in), *_as_list(bot), *_as_list(transport_out)]

    async def start_call(
        self, info: CallInfo, transport_in: NodeSpec, transport_out: NodeSpec, **session_args: Any
    ) -> Session:
        """Admit a call, build its graph and start it; raises CallRejected.

        ``transport_in`` may be a list (e.g. ``[RtpInput, CallGuard]``): the
        nodes that belong in front of the bot. ``session_args`` go to
        :class:`Session` (e.g. ``max_duration_s``). Exceptions of the bot
        factory propagate: the transport answers its network's error.
        """
        self.admit(info.transport)
        if info.session_id in self.sessions:
            raise ValueError(f"session id {info.session_id!r} is already in use")
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
        task = asyncio.get_running_loop().create_task(self._run(session), name=f"call-{session.session_id}")
        self._tasks[session.session_id] = task
        started = asyncio.ensure_future(session.started.wait())
        # A graph that fails while starting ends the task before ``started`` is set.
        await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        return session

    async def _run(self, session: Session) -> SessionResult:
        try:
            result = await session.run()
        except Exception as exc:  # a graph that cannot even start: still a result, never a lost task
            logger.exception("call %s failed to run", session.session_id)
            result = SessionResult(session_id=session.session_id, reason="error", error=f"{type(exc).__name__}: {exc}")
        finally:
            self.sessions.pop(session.session_id, None)
            self._tasks.pop(session.session_id, None)
        self.results.append(result)
        del self.results[:-RECENT_RESULTS]
        logger.info("call %s ended: %s", session.session_id, result.reason)
        return result

    async def wait(self, session_id: str) -> SessionResult | None:
        """The result of a call once it ends (also for a call that already ended recently)."""
        task = self._tasks.get(session_id)
        if task is not None:
            return await task
        return next((r for r in reversed(self.results) if r.session_id == session_id), None)

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


def _as_list(spec: NodeSpec) -> list[NodeSpec]:
    return [spec] if isinstance(spec, Node) else list(spec)
