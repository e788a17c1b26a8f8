"""Aggregation as a background job (see edge/jobs.py): RQ stores `run_aggregation` by its import path."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from flask import current_app
from sqlalchemy.orm import Session

from aggregation.service import claim_run, compute_run, fail_run
from base.uow import UnitOfWork


def execute_run(session: Session, run_id: int, *, clock: Callable[[], dt.datetime]) -> None:
    """Run a queued aggregation, in three units of work: the claim (committed first, so no other job takes the
    run), the computation (all its labels or none), and, if that failed, the failure recorded on the run.
    Idempotent: a run that is not queued is left alone."""
    with UnitOfWork(session):
        claimed = claim_run(session, run_id, now=clock())
    if not claimed:
        return
    try:
        with UnitOfWork(session):
            compute_run(session, run_id, clock=clock)
    except Exception as exc:  # noqa: BLE001 - any failure is recorded on the run for the requester to see
        with UnitOfWork(session):
            fail_run(session, run_id, exc, now=clock())


def run_aggregation(run_id: int) -> None:
    """Execute a queued run in a session of its own; running it twice does nothing more."""
    with current_app.extensions["crowdmarket.db"].session_scope() as session:
        execute_run(session, run_id, clock=current_app.extensions["crowdmarket.clock"])
