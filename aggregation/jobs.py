"""Aggregation as a background job (see edge/jobs.py): RQ stores `run_aggregation` by its import path."""

from __future__ import annotations

from flask import current_app

from aggregation.service import execute_run


def run_aggregation(run_id: int) -> None:
    """Execute a queued run in a session of its own; running it twice does nothing more."""
    session = current_app.extensions["crowdmarket.db"].session()
    try:
        execute_run(session, run_id, clock=current_app.extensions["crowdmarket.clock"])
    finally:
        session.close()
