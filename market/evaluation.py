"""Judging workers apart from the responses that give cause to: after a submit, a return or a lapsed lease, the
worker's figures in the project are recomputed and the project's rules applied (market/scoring.py) once the
response has been sent. A worker therefore never waits for it, and a submit of a gold task is answered exactly
as fast as any other: scoring gold answers costs nothing the response could show.

It runs in the process that served the request, after the response is closed (not on the job queue: its result
is wanted at once, and it is a few small reads). Each run has a session of its own; two runs for one worker take
their turns on the worker's row lock.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, g

from market import scoring

log = logging.getLogger(__name__)


def after_response(worker_id: int, project_id: int) -> None:
    """Judge the worker in the project once this request's response has been sent."""
    g.setdefault("crowdmarket_evaluations", set()).add((worker_id, project_id))


def run(app: Flask, pairs: set[tuple[int, int]]) -> None:
    """Evaluate each (worker, project) in a session of its own; a failure is logged, never raised."""
    with app.app_context():
        clock = app.extensions["crowdmarket.clock"]
        for worker_id, project_id in sorted(pairs):
            with app.extensions["crowdmarket.db"].session_scope() as session:
                try:
                    scoring.evaluate(session, worker_id=worker_id, project_id=project_id, now=clock())
                    session.commit()
                except Exception:  # the next evaluation recomputes everything from the answers
                    session.rollback()
                    log.exception("evaluating worker %s in project %s failed", worker_id, project_id)


def install(app: Flask) -> None:
    @app.after_request
    def _schedule(response: Response) -> Response:
        pairs = g.pop("crowdmarket_evaluations", None)
        if pairs:
            target = current_app._get_current_object()  # type: ignore[attr-defined]
            response.call_on_close(lambda: run(target, pairs))
        return response
