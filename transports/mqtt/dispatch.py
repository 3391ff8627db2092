"""Outbound-call jobs spread across workers by the broker.

Producers publish a job (:class:`agent.serving.jobs.CallJob` as JSON, QoS 1)
to ``<prefix>/jobs/calls``. Every worker subscribes to
``$share/voxwire/<prefix>/jobs/calls``, an MQTT 5 shared subscription, so the
broker hands each job to exactly one worker, on any machine. A worker that
cannot take a job (busy, draining, over its CPU budget, or the dial was
refused) gives it back: it republishes the job with ``attempts + 1`` after a
short pause, and the broker's round robin offers it to another worker. After
``max_attempts`` the job fails with the last reason.

Progress is published, QoS 1, on ``<prefix>/jobs/<job_id>/status``:
``accepted`` → ``started`` (with the session id) → ``ended`` (with the reason),
or ``returned`` / ``failed`` / ``invalid``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

from agent.calls import CallManager, CallRejected
from agent.serving.jobs import CallJob, Dialer
from transports.mqtt.connection import MqttConnection
from transports.mqtt.settings import topic_level

logger = logging.getLogger(__name__)

SHARE_GROUP = "voxwire"


class JobDispatcher:
    """Takes outbound-call jobs from the shared queue while this worker has room."""

    def __init__(
        self,
        manager: CallManager,
        connection: MqttConnection,
        dialer: Dialer,
        worker_id: str,
        *,
        share_group: str = SHARE_GROUP,
        max_attempts: int = 10,
        retry_delay_s: float = 0.2,
    ) -> None:
        self.manager = manager
        self.connection = connection
        self.dialer = dialer
        self.worker = topic_level(worker_id)
        self.prefix = connection.settings.prefix
        self.share_group = share_group
        self.max_attempts = max_attempts
        self.retry_delay_s = retry_delay_s
        self.dialing = 0
        self.taken: list[str] = []  # job ids this worker took (most recent 1000)
        self._tasks: set[asyncio.Task[None]] = set()
        self._taking = False

    @property
    def job_topic(self) -> str:
        return f"{self.prefix}/jobs/calls"

    @property
    def shared_filter(self) -> str:
        return f"$share/{self.share_group}/{self.job_topic}"

    async def start(self) -> None:
        self._taking = True
        await self.connection.subscribe(self.shared_filter, self._on_job, qos=1)

    async def stop_taking(self) -> None:
        """Leave the queue (drain): the broker sends jobs to the other workers."""
        self._taking = False
        await self.connection.unsubscribe(self.shared_filter)

    async def close(self) -> None:
        await self.stop_taking()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def submit(self, job: CallJob) -> None:
        """Put a job on the shared queue (any worker, maybe this one, takes it)."""
        self.connection.publish(self.job_topic, job.to_json(), qos=1)

    # -------------------------------------------------------------- handling

    def _refusal(self) -> str | None:
        if not self._taking:
            return "draining"
        reason = self.manager.refusal()
        if reason:
            return reason
        limit = self.manager.max_sessions
        if limit is not None and len(self.manager.sessions) + self.dialing >= limit:
            return "busy"  # calls being dialled count against the limit too
        return None

    async def _on_job(self, topic: str, payload: bytes) -> None:
        try:
            job = CallJob.from_json(payload)
        except ValueError as exc:
            logger.warning("outbound job refused as invalid: %s", exc)
            self._status(None, "invalid", reason=str(exc))
            return
        reason = self._refusal()
        if reason:
            self._give_back(job, reason)
            return
        self.dialing += 1
        self.taken.append(job.job_id)
        del self.taken[:-1000]
        self._status(job, "accepted")
        self._spawn(self._dial(job))

    async def _dial(self, job: CallJob) -> None:
        try:
            session = await self.dialer(self.manager, job)
        except CallRejected as exc:
            self.dialing -= 1
            self._give_back(job, exc.reason)
            return
        except Exception as exc:  # noqa: BLE001 - a failed dial fails its job, not the worker
            self.dialing -= 1
            logger.warning("outbound job %s: dial failed: %s: %s", job.job_id, type(exc).__name__, exc)
            self._status(job, "failed", reason=f"{type(exc).__name__}: {exc}")
            return
        self.dialing -= 1
        self._status(job, "started", session=session.session_id)
        result = await self.manager.wait(session.session_id)
        self._status(job, "ended", session=session.session_id, reason=result.reason if result else None)

    def _give_back(self, job: CallJob, reason: str) -> None:
        job.attempts += 1
        if job.attempts >= self.max_attempts:
            logger.warning("outbound job %s failed after %d attempts: %s", job.job_id, job.attempts, reason)
            self._status(job, "failed", reason=f"no worker took the job after {job.attempts} attempts: {reason}")
            return
        self._status(job, "returned", reason=reason)
        self._spawn(self._republish(job))

    async def _republish(self, job: CallJob) -> None:
        await asyncio.sleep(self.retry_delay_s * job.attempts)
        self.submit(job)

    def _spawn(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _status(self, job: CallJob | None, state: str, *, session: str | None = None,
                reason: str | None = None) -> None:
        job_level = topic_level(job.job_id) if job else "_invalid"
        body = {"v": 1, "type": "job_status", "job_id": job.job_id if job else None, "state": state,
                "worker": self.worker, "pid": os.getpid(), "session": session, "reason": reason,
                "attempts": job.attempts if job else None, "ts": round(time.time(), 3)}
        self.connection.publish(f"{self.prefix}/jobs/{job_level}/status",
                                json.dumps(body, separators=(",", ":")), qos=1)
