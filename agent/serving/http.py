"""A worker's HTTP face: health, readiness, metrics, and outbound calls.

* ``GET /healthz``: 200 while the event loop answers (Kubernetes liveness);
* ``GET /readyz``: 200 when this worker would take a call now, else 503 with
  the reason (readiness: a busy or draining worker leaves the Service);
* ``GET /metrics``: Prometheus text, merged over all workers of the pod;
* ``POST /calls``: place an outbound call (a ``CallJob`` as JSON) with the
  configured dialer: 201 with the session id, or 503 + ``Retry-After`` and
  the refusal reason when the worker is busy, over budget or draining.

The app is served on a socket bound with ``SO_REUSEPORT``, so the kernel
spreads connections over the workers that share the port.
"""

from __future__ import annotations

import logging
import os

from aiohttp import web

from agent.calls import CallManager, CallRejected
from agent.serving import prometheus
from agent.serving.admission import BUSY_PROMPT, RETRY_AFTER_S
from agent.serving.jobs import CallJob, Dialer

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024


def refusal_response(reason: str) -> web.Response:
    """503 with the reason, for a call this worker will not take.

    Counting is the manager's job: ``CallManager.admit`` tells its refusal
    hooks (the worker's Prometheus counter) about every refused call.
    """
    return web.json_response({"error": "unavailable", "reason": reason, "worker_pid": os.getpid(),
                              "prompt": BUSY_PROMPT}, status=503, headers={"Retry-After": str(RETRY_AFTER_S)})


def make_app(manager: CallManager, *, worker: str, dialer: Dialer | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    identity = {"worker": worker, "pid": os.getpid()}

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **identity})

    async def readyz(request: web.Request) -> web.Response:
        reason = manager.refusal()
        if reason:
            return web.json_response({"ready": False, "reason": reason, **identity}, status=503)
        return web.json_response({"ready": True, "sessions": len(manager.sessions), **identity})

    async def metrics(request: web.Request) -> web.Response:
        body, content_type = prometheus.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def calls(request: web.Request) -> web.Response:
        if dialer is None:
            return web.json_response({"error": "this worker has no --dialer for outbound calls"}, status=404)
        try:
            job = CallJob.from_dict(await request.json())
        except ValueError as exc:  # JSONDecodeError is a ValueError
            return web.json_response({"error": "bad_request", "reason": str(exc)}, status=400)
        try:
            manager.admit("outbound")
            session = await dialer(manager, job)
        except CallRejected as exc:
            return refusal_response(exc.reason)
        except Exception as exc:  # noqa: BLE001 - a failed dial is the caller's 502, not a crash
            logger.warning("outbound job %s: dial failed: %s: %s", job.job_id, type(exc).__name__, exc)
            return web.json_response({"error": "dial_failed", "reason": f"{type(exc).__name__}: {exc}"}, status=502)
        return web.json_response({"session_id": session.session_id, "job_id": job.job_id, **identity}, status=201)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/calls", calls)
    return app
