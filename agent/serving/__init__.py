"""Serving calls at scale: worker processes, admission, drain, health and metrics.

``voxwire serve --workers N`` runs :func:`agent.serving.supervisor.serve_workers`;
each worker is :func:`agent.serving.worker.run_worker`. Modules are imported
where used, so ``agent.serving.jobs`` stays light for transports.
"""
