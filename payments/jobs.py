"""The payments cycle as a scheduled RQ job (see edge/jobs.py for the job interface).

`ensure_scheduled` puts the cycle on RQ's scheduler under one fixed job id per queue, so at most one is ever
scheduled or queued however many workers start; `crowdmarket jobs work` calls it and runs its worker with RQ's
scheduler (`with_scheduler=True`), which moves the job onto the queue when it is due. The job repeats itself
through RQ's own `Repeat` every PAYMENTS_CYCLE_SECONDS, keeping its id. A cycle that fails is logged and does
not break the chain (the job itself succeeds, so RQ schedules the next run); a chain broken anyway (a worker
killed mid-job) is restarted by the next `crowdmarket jobs work`.

Without Redis there is no scheduler: cron runs `crowdmarket payments cycle` instead.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

from flask import Flask, current_app
from rq import Queue
from rq.job import Job

from edge import jobs
from payments import cycle

log = logging.getLogger(__name__)


def job_id(queue: Queue) -> str:
    """The cycle's one job id on `queue`."""
    return "payments-cycle-" + re.sub(r"[^A-Za-z0-9_-]", "_", queue.name)  # RQ's job id alphabet


def run_cycle() -> dict[str, Any]:
    """The job: one payments cycle in a unit of work of its own (committed when it returns)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    now = app.extensions["crowdmarket.clock"]()
    try:
        with app.extensions["crowdmarket.db"].unit_of_work() as session:
            done = cycle.run(session, now=now)
    except Exception as exc:  # noqa: BLE001 - logged; the next run (idempotent) does the work
        log.exception("the payments cycle failed")
        return {"failed": repr(exc)}
    log.info("payments cycle: %s", done)
    return done


def ensure_scheduled(app: Flask, *, at: dt.datetime | None = None) -> Job | None:
    """Schedule the cycle (first run at `at`, default now) unless it is scheduled, queued or running already;
    returns its job (None without Redis)."""
    return jobs.ensure_repeating(app, job_id=job_id, func=run_cycle, seconds=int(app.config["PAYMENTS_CYCLE_SECONDS"]),
                                 description="payments cycle", at=at)
