"""Judging workers apart from the responses that give cause to: after a submit, a return or a lapsed lease, the
worker's figures in the project are recomputed and the project's rules applied (market/quality/scoring.py) once the
response has been sent. A worker therefore never waits for it, and a submit of a gold task is answered exactly
as fast as any other: scoring gold answers costs nothing the response could show. Every submit and return
triggers it alike, gold or not (work done only after gold would slow the server's next response measurably).

An evaluation costs tens of milliseconds of CPU, so it is coalesced per worker and project: while one is waiting,
further triggers add nothing, and a waiting one is taken down before it reads, so a trigger during a run asks for
the next. Where it runs (CROWDMARKET_EVALUATION):
- `queue` (`auto` with Redis configured): a job on the queue (`crowdmarket jobs work` runs them);
- `thread` (`auto` without Redis): a thread of the serving process, one per process;
- `inline`: in the request's own thread once its response is closed (the tests' choice: done when the call
  returns).
Each run has a session and a unit of work of its own (base/uow.py); two runs for one worker take their turns on
the worker's row lock.
"""

from __future__ import annotations

import logging
import os
import threading

import redis
from flask import Flask, Response, current_app, g, has_app_context
from sqlalchemy.orm import Session

from base.events import AssignmentReturned, AssignmentSubmitted, LeasesLapsed
from base.uow import UnitOfWork
from edge import jobs
from market.quality import scoring

log = logging.getLogger(__name__)
PENDING_SECONDS = 3600  # a marker outliving a lost job stops triggers for at most this long


def _pending_key(app: Flask, worker_id: int, project_id: int) -> str:
    return f"{app.config.get('JOB_QUEUE', jobs.QUEUE)}:evaluate:{worker_id}:{project_id}"


def after_response(worker_id: int, project_id: int) -> None:
    """Judge the worker in the project once this request's response has been sent."""
    g.setdefault("crowdmarket_evaluations", set()).add((worker_id, project_id))


def mode(app: Flask) -> str:
    configured = app.config["EVALUATION"]
    if configured != "auto":
        return configured
    return "queue" if app.config.get("REDIS_URL") else "thread"


def queued(app: Flask) -> bool:
    return mode(app) == "queue"


class _Thread:
    """A process's evaluating thread, started on first use (and again in a forked child: threads do not survive
    a fork). What it has not reached when the process ends is lost; the worker's next trigger asks again."""

    def __init__(self, app: Flask) -> None:
        self.app, self.pending, self.ready, self.lock = app, set(), threading.Event(), threading.Lock()
        self.idle = threading.Event()
        self.idle.set()
        self.pid: int | None = None

    def add(self, pairs: set[tuple[int, int]]) -> None:
        with self.lock:
            self.pending |= pairs
            self.idle.clear()
            if self.pid != os.getpid():
                self.pid = os.getpid()
                threading.Thread(target=self._drain, name="crowdmarket-evaluation", daemon=True).start()
        self.ready.set()

    def _drain(self) -> None:
        while True:
            self.ready.wait()
            with self.lock:
                pairs, self.pending = self.pending, set()
                self.ready.clear()
            with self.app.app_context():
                for worker_id, project_id in sorted(pairs):
                    evaluate_now(worker_id, project_id)
            with self.lock:
                if not self.pending:
                    self.idle.set()

    def wait(self, timeout: float) -> bool:
        """Whether everything asked for so far has been evaluated within `timeout` seconds."""
        return self.idle.wait(timeout)


def evaluate_now(worker_id: int, project_id: int) -> None:
    """Evaluate the worker in a session of its own (a job: module-level, in the app's context); a failure is logged,
    never raised: the next evaluation recomputes everything from the answers."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if queued(app) and (client := app.extensions["crowdmarket.redis"]) is not None:
        try:
            client.delete(_pending_key(app, worker_id, project_id))
        except redis.RedisError:
            log.warning("could not clear the evaluation marker of worker %s in project %s", worker_id, project_id)
    # Its own unit of work, apart from the request's: the submit has stored (and scored) the answers already, and
    # judging them there would make a gold task's response slower than any other's.
    with app.extensions["crowdmarket.db"].session_scope() as session:
        try:
            with UnitOfWork(session):
                scoring.evaluate(session, worker_id=worker_id, project_id=project_id,
                                 now=app.extensions["crowdmarket.clock"]())
        except Exception:
            log.exception("evaluating worker %s in project %s failed", worker_id, project_id)


def run(app: Flask, pairs: set[tuple[int, int]]) -> None:
    """Queue (coalesced) or run the evaluations a request gave cause to; with Redis down, run them here."""
    if mode(app) == "thread":
        app.extensions["crowdmarket.evaluation_thread"].add(pairs)
        return
    with app.app_context():
        for worker_id, project_id in sorted(pairs):
            client = app.extensions["crowdmarket.redis"] if queued(app) else None
            if client is not None:
                key = _pending_key(app, worker_id, project_id)
                try:
                    if client.set(key, 1, nx=True, ex=PENDING_SECONDS):
                        jobs.enqueue(evaluate_now, worker_id, project_id)
                    continue
                except redis.RedisError:
                    log.warning("Redis unavailable: evaluating worker %s in process", worker_id)
                    try:
                        client.delete(key)  # a marker without its job would silence the worker's triggers
                    except redis.RedisError:
                        pass
            evaluate_now(worker_id, project_id)


def install(app: Flask) -> None:
    app.extensions["crowdmarket.evaluation_thread"] = _Thread(app)

    @app.after_request
    def _schedule(response: Response) -> Response:
        pairs = g.pop("crowdmarket_evaluations", None)
        if pairs:
            target = current_app._get_current_object()  # type: ignore[attr-defined]
            response.call_on_close(lambda: run(target, pairs))
        return response


def on_work_done(_session: Session, event: AssignmentSubmitted | AssignmentReturned | LeasesLapsed) -> None:
    """An event handler (shell/app.py): a submit, a return or lapsed leases give cause to judge the worker in the
    project, once the response is sent. Outside the app (a script calling the engine) nobody is judged."""
    if has_app_context():
        after_response(event.worker_id, event.project_id)
