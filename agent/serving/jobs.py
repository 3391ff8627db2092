"""Outbound-call jobs: what to dial, and the function that dials it.

A job reaches a worker over HTTP (``POST /calls``) or from the MQTT job queue
(:mod:`transports.mqtt.dispatch`); either way a *dialer* turns it into a live
call through the worker's ``CallManager``, so admission applies the same. The
telephony transport provides the real dialer (a SIP INVITE or a carrier REST
call); :func:`loopback_dial` calls nobody and is what demos, tests and
capacity runs use.
"""

from __future__ import annotations

import importlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from agent.calls import CallInfo, CallManager
from agent.session import Session

JOB_SCHEMA_VERSION = 1
MAX_JOB_BYTES = 16 * 1024


@dataclass(slots=True)
class CallJob:
    """Place a call to ``to``; ``attempts`` counts workers that gave it back."""

    to: str
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    from_: str = ""
    attempts: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, payload: bytes) -> CallJob:
        """Parse and validate a job message; raises ValueError saying what is wrong."""
        if len(payload) > MAX_JOB_BYTES:
            raise ValueError(f"job is {len(payload)} bytes; the limit is {MAX_JOB_BYTES}")
        try:
            body = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"job is not valid UTF-8 JSON: {exc}") from None
        return cls.from_dict(body)

    @classmethod
    def from_dict(cls, body: object) -> CallJob:
        if not isinstance(body, dict):
            raise ValueError("job must be a JSON object")
        if body.get("v", JOB_SCHEMA_VERSION) != JOB_SCHEMA_VERSION:
            raise ValueError(f"unsupported job schema version {body.get('v')!r}; this worker speaks 1")
        unknown = set(body) - {"v", "job_id", "to", "from", "attempts", "metadata"}
        if unknown:
            raise ValueError(f"job has unknown field(s) {sorted(unknown)}")
        to, job_id, from_ = body.get("to"), body.get("job_id", uuid.uuid4().hex[:16]), body.get("from", "")
        attempts, metadata = body.get("attempts", 0), body.get("metadata", {})
        if not isinstance(to, str) or not to or len(to) > 256:
            raise ValueError("job needs 'to': a non-empty string (SIP URI or number)")
        if not isinstance(job_id, str) or not job_id or len(job_id) > 64:
            raise ValueError("job 'job_id' must be a non-empty string of at most 64 characters")
        if not isinstance(from_, str) or len(from_) > 256:
            raise ValueError("job 'from' must be a string")
        if type(attempts) is not int or attempts < 0:
            raise ValueError("job 'attempts' must be a non-negative integer")
        if not isinstance(metadata, dict):
            raise ValueError("job 'metadata' must be an object")
        return cls(to=to, job_id=job_id, from_=from_, attempts=attempts, metadata=metadata)

    def to_json(self) -> bytes:
        body = asdict(self)
        body["from"] = body.pop("from_")
        return json.dumps({"v": JOB_SCHEMA_VERSION, **body}, separators=(",", ":")).encode()


Dialer = Callable[[CallManager, CallJob], Awaitable[Session]]


def load_dialer(spec: str) -> Dialer:
    """Resolve ``module:function`` (the ``--dialer`` option)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--dialer must look like MODULE:FUNCTION, got {spec!r}")
    dialer = getattr(importlib.import_module(module_name), attr)
    if not callable(dialer):
        raise TypeError(f"{spec} is not callable")
    return dialer  # type: ignore[no-any-return]


async def loopback_dial(manager: CallManager, job: CallJob) -> Session:
    """A call to nobody: ``metadata.duration_s`` of caller silence, bot audio recorded.

    Raises ``CallRejected`` like any dialer when the worker is full or draining.
    """
    from transports.local import RecordingOutput, ScriptedInput, Segment

    duration_s = float(job.metadata.get("duration_s", 5.0))
    info = CallInfo(session_id=uuid.uuid4().hex[:12], transport="loopback", direction="outbound",
                    caller=job.from_, callee=job.to, metadata=dict(job.metadata, job_id=job.job_id))
    caller = ScriptedInput([Segment(gap_s=duration_s)], end_after_s=0.0)
    return await manager.start_call(info, caller, RecordingOutput())
