"""The bus's wire format, version 1: event payloads out, commands in.

Every event is one JSON object with an envelope (``v``, ``type``, ``worker``,
``session``, ``seq``, ``ts``) and the fields listed for its type in
:data:`EVENTS`, always all of them (``null`` when unknown), so consumers never
guess. ``seq`` counts up per session from 1: a consumer restores order, or
spots a repeat after a reconnect (QoS 1 is at-least-once), with it alone.

Commands are validated strictly: an unknown field is an error, not ignored,
so a typo never silently does nothing. A change that breaks either shape
bumps :data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1
MAX_COMMAND_BYTES = 64 * 1024
MAX_TEXT_CHARS = 4000
MAX_PROMPT_CHARS = 32 * 1024
MAX_TOOLS = 128
ENVELOPE = ("v", "type", "worker", "session", "seq", "ts")

#: QoS by topic class: lifecycle, final text and control are at-least-once;
#: progress that the next message supersedes, and live audio, are at-most-once.
QOS_RELIABLE = 1
QOS_LIVE = 0


@dataclass(frozen=True, slots=True)
class EventSpec:
    topic: str           # the topic class: ``<prefix>/<worker>/<session>/<topic>``
    qos: int
    fields: tuple[str, ...]


EVENTS: dict[str, EventSpec] = {
    "call_started": EventSpec("call", QOS_RELIABLE, ("transport", "direction", "caller", "callee")),
    "call_ended": EventSpec("call", QOS_RELIABLE, ("reason", "error", "duration_s", "turns")),
    "call_refused": EventSpec("call", QOS_RELIABLE, ("reason",)),
    # partial transcripts go out at QoS 0 (see ``qos_of``)
    "transcript": EventSpec("transcript", QOS_RELIABLE, ("text", "final", "language", "turn_id")),
    "user_turn": EventSpec("transcript", QOS_RELIABLE, ("text", "turn_id")),
    "bot_said": EventSpec("bot", QOS_RELIABLE, ("text", "turn_id", "source")),
    "bot_started_speaking": EventSpec("bot", QOS_RELIABLE, ("turn_id",)),
    "bot_heard": EventSpec("bot", QOS_LIVE, ("text", "turn_id", "played_s")),
    "bot_stopped_speaking": EventSpec("bot", QOS_RELIABLE, ("turn_id", "interrupted", "text_heard", "played_s")),
    "barge_in": EventSpec("barge_in", QOS_RELIABLE, ("turn_id", "text_heard", "played_s", "barge_in_ms")),
    "turn_latency": EventSpec("latency", QOS_RELIABLE, ("turn_id", "figures")),
    "event": EventSpec("event", QOS_RELIABLE, ("kind", "data")),
    "error": EventSpec("errors", QOS_RELIABLE, ("message", "node", "fatal", "command", "command_id")),
    "command_ack": EventSpec("ack", QOS_RELIABLE, ("command", "command_id")),
}

#: The retained ``<prefix>/<worker>/status`` message (``session`` is null).
WORKER_STATUS_FIELDS = ("state", "pid", "sessions")
WORKER_STATES = ("online", "draining", "offline")


def qos_of(event_type: str, fields: dict[str, Any]) -> int:
    if event_type == "transcript" and not fields.get("final", True):
        return QOS_LIVE
    return EVENTS[event_type].qos


def encode_event(event_type: str, *, worker: str, session: str | None, seq: int, **fields: Any) -> bytes:
    """One event as compact JSON; raises ValueError if fields do not match the schema."""
    spec = EVENTS.get(event_type)
    expected = spec.fields if spec is not None else WORKER_STATUS_FIELDS if event_type == "worker_status" else None
    if expected is None:
        raise ValueError(f"unknown event type {event_type!r}")
    if set(fields) != set(expected):
        raise ValueError(f"{event_type} takes fields {expected}, got {tuple(fields)}")
    body = {"v": SCHEMA_VERSION, "type": event_type, "worker": worker, "session": session, "seq": seq,
            "ts": round(time.time(), 3), **fields}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str).encode()


# ------------------------------------------------------------------ commands


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    args: dict[str, Any]
    id: str | None = None


class CommandError(ValueError):
    """A command was refused; ``reason`` is what the error event says."""

    def __init__(self, reason: str, command: str | None = None, command_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.command = command
        self.command_id = command_id


# command → {argument: (type, required)}
COMMANDS: dict[str, dict[str, tuple[type, bool]]] = {
    "say": {"text": (str, True), "uninterruptible": (bool, False)},
    "interrupt": {},
    "hangup": {"reason": (str, False)},
    "transfer": {"target": (str, True), "reason": (str, False)},
    "mute": {},
    "unmute": {},
    "llm_config": {"system_prompt": (str, False), "tools": (list, False)},
}


def parse_command(payload: bytes) -> Command:
    """Validate one command message; raises CommandError with a readable reason."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandError(f"command is {len(payload)} bytes; the limit is {MAX_COMMAND_BYTES}")
    try:
        body = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError, int too long, nesting
        raise CommandError(f"command is not valid UTF-8 JSON: {str(exc)[:120]}") from None
    if not isinstance(body, dict):
        raise CommandError(f"command must be a JSON object, got {type(body).__name__}")
    name = body.get("command")
    command_id = body.get("id")
    if command_id is not None and (not isinstance(command_id, str) or len(command_id) > 128):
        raise CommandError("'id' must be a string of at most 128 characters")
    if not isinstance(name, str):
        raise CommandError("missing 'command' (a string)", command_id=command_id)
    version = body.get("v")
    if type(version) is not int:
        raise CommandError(f"missing schema version 'v' (this worker speaks {SCHEMA_VERSION})", name, command_id)
    if version != SCHEMA_VERSION:
        raise CommandError(f"unsupported schema version {version}; this worker speaks {SCHEMA_VERSION}",
                           name, command_id)
    spec = COMMANDS.get(name)
    if spec is None:
        raise CommandError(f"unknown command {name!r}; known: {', '.join(COMMANDS)}", name, command_id)
    args = {k: v for k, v in body.items() if k not in ("v", "command", "id")}
    unknown = set(args) - set(spec)
    if unknown:
        raise CommandError(f"{name}: unknown field(s) {sorted(unknown)}", name, command_id)
    for field_name, (kind, required) in spec.items():
        if field_name not in args:
            if required:
                raise CommandError(f"{name}: missing field {field_name!r}", name, command_id)
            continue
        value = args[field_name]
        if type(value) is not kind:  # bool is not an int here, and 1 is not True
            raise CommandError(f"{name}: {field_name!r} must be {kind.__name__}, got {type(value).__name__}",
                               name, command_id)
    _check_limits(name, args, command_id)
    return Command(name, args, command_id)


def _check_limits(name: str, args: dict[str, Any], command_id: str | None) -> None:
    if name == "say" and not args["text"].strip():
        raise CommandError("say: 'text' is empty", name, command_id)
    for key in ("text", "target", "reason"):
        if key in args and len(args[key]) > MAX_TEXT_CHARS:
            raise CommandError(f"{name}: {key!r} is longer than {MAX_TEXT_CHARS} characters", name, command_id)
    if name == "llm_config":
        if not args:
            raise CommandError("llm_config: give 'system_prompt', 'tools' or both", name, command_id)
        if len(args.get("system_prompt", "")) > MAX_PROMPT_CHARS:
            raise CommandError(f"llm_config: 'system_prompt' is longer than {MAX_PROMPT_CHARS} characters",
                               name, command_id)
        tools = args.get("tools", [])
        if len(tools) > MAX_TOOLS or not all(isinstance(tool, dict) for tool in tools):
            raise CommandError(f"llm_config: 'tools' must be a list of at most {MAX_TOOLS} objects",
                               name, command_id)
