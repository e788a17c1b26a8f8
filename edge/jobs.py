"""The one job interface: RQ on Redis when Redis is configured, inline otherwise.

A job is a module-level function taking plain arguments (RQ stores it by import path). Jobs run with the app's
context (`crowdmarket jobs work` runs RQ's worker inside it; inline jobs run in the request's), open their own
session and must be idempotent: RQ may run a job again after a worker dies.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import redis
from flask import Flask, Response, after_this_request, current_app
from rq import Queue, Repeat, SimpleWorker
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus

log = logging.getLogger(__name__)

QUEUE = "crowdmarket"
TIMEOUT_SECONDS = 3600


def _queue(app: Flask) -> Queue | None:
    """The app's queue, built once (its Redis client keeps a connection pool across requests)."""
    url = app.config.get("REDIS_URL")
    if not url:
        return None
    queue = app.extensions.get("crowdmarket.jobs")
    if queue is None:
        # Not the app's request client: that one times out after a second, and workers block on the queue longer.
        queue = app.extensions["crowdmarket.jobs"] = Queue(
            app.config.get("JOB_QUEUE", QUEUE), connection=redis.Redis.from_url(url, socket_connect_timeout=1),
            default_timeout=TIMEOUT_SECONDS)
    return queue


def queue(app: Flask) -> Queue | None:
    """The app's job queue (None without Redis): for jobs scheduled on it (payments/jobs.py)."""
    return _queue(app)


def enqueue(func: Callable[..., Any], *args: Any) -> bool:
    """Queue `func(*args)`; True when queued, False when it ran inline (no Redis configured, or Redis down: jobs
    are idempotent, so running one here now is as good as later, and a request never fails for want of a queue)."""
    queue = _queue(current_app)
    if queue is not None:
        try:
            queue.enqueue(func, *args)
            return True
        except redis.RedisError as exc:
            log.warning("job %s run inline: Redis unavailable (%s)", getattr(func, "__name__", func), exc)
    func(*args)
    return False


def after_commit(func: Callable[..., Any], *args: Any) -> None:
    """Queue `func(*args)` once the request's unit of work has committed (the job reads what the request wrote):
    when the response is closed, queued with Redis, else run inline."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    @after_this_request
    def _later(response: Response) -> Response:
        def run() -> None:
            with app.app_context():
                enqueue(func, *args)
        response.call_on_close(run)
        return response


def work(app: Flask, *, burst: bool = False) -> None:
    """Run queued jobs in this process, inside `app`'s context (burst: until the queue is empty), with RQ's
    scheduler, which moves scheduled jobs (the payments cycle) onto the queue when they are due (in burst mode:
    those due when it starts)."""
    queue = _queue(app)
    if queue is None:
        raise RuntimeError("no Redis configured (CROWDMARKET_REDIS_URL): jobs run inline, there is no queue")
    # SimpleWorker runs each job in this process, where the app and its database pool live; a forking worker
    # would share pooled connections with its children.
    with app.app_context():
        SimpleWorker([queue], connection=queue.connection).work(burst=burst, with_scheduler=True)


# RQ's Repeat counts down; at one run every 5 minutes this lasts longer than any deployment.
REPEATS = 10**9
_LIVE = {JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED}


def ensure_repeating(app: Flask, *, job_id: Callable[[Queue], str], func: Callable[[], Any], seconds: int,
                     description: str, at: dt.datetime | None = None) -> Job | None:
    """Put `func` on RQ's scheduler every `seconds` under one fixed job id per queue (first run at `at`, default
    now) unless it is scheduled, queued or running already, so at most one is ever scheduled however many workers
    start; returns its job (None without Redis)."""
    queue = _queue(app)
    if queue is None:
        return None
    ident = job_id(queue)
    try:
        existing = Job.fetch(ident, connection=queue.connection)
        if existing.get_status(refresh=True) in _LIVE:
            return existing
        existing.delete()
    except NoSuchJobError:
        pass
    try:
        return queue.enqueue_at(at or dt.datetime.now(dt.UTC), func, job_id=ident, unique=True,
                                repeat=Repeat(times=REPEATS, interval=seconds), description=description)
    except DuplicateJobError:  # another worker scheduled it meanwhile
        return Job.fetch(ident, connection=queue.connection)
