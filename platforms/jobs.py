"""The platforms' jobs (edge/jobs.py): publishing a burst once its records are committed, and the sync, put on
RQ's scheduler every PLATFORMS_SYNC_SECONDS by `crowdmarket jobs work` (without Redis: cron runs `crowdmarket
platforms sync`). Each opens its own units of work and is idempotent (platforms/service.py)."""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from typing import Any

from flask import Flask, current_app, g, has_request_context, url_for
from rq import Queue
from rq.job import Job
from sqlalchemy import select
from sqlalchemy.orm import Session

from base.errors import InvalidInput
from base.events import AssignmentsReviewed
from edge import jobs
from market.catalogue.models import Assignment, Batch
from platforms import arrivals, registry, service
from platforms.models import PlatformBatch

log = logging.getLogger(__name__)


def _app() -> Flask:
    return current_app._get_current_object()  # type: ignore[attr-defined]


def page_path(app: Flask, *, platform: str, batch_id: int) -> str:
    """The path of a burst's batch's task page on its platform (console/external.py); the platform appends its
    own parameters."""
    registry.platform(platform)
    ref = arrivals.page_ref(app.config["SECRET_KEY"], batch_id=batch_id)
    with app.test_request_context():  # also outside a request (the CLI, a job)
        return url_for("external_pages.task_page", platform_name=platform, ref=ref)


def page_url(app: Flask, burst: PlatformBatch) -> str:
    """The absolute HTTPS URL of the burst's task page, from PUBLIC_BASE_URL."""
    base = (app.config.get("PUBLIC_BASE_URL") or "").rstrip("/")
    if not base.startswith("https://"):
        raise InvalidInput("Set CROWDMARKET_PUBLIC_BASE_URL to this app's public https:// origin: platforms open "
                           "our work page there.", errors={"PUBLIC_BASE_URL": ["not an https:// URL"]})
    return base + page_path(app, platform=burst.platform, batch_id=burst.batch_id)


def publish_now(burst_id: int) -> dict[str, Any]:
    """The job: publish the burst on its platform (a published one is left alone)."""
    app = _app()
    db = app.extensions["crowdmarket.db"]
    with db.unit_of_work() as session:
        burst = session.get(PlatformBatch, burst_id)
        if burst is None:
            return {"missing": burst_id}
        url = page_url(app, burst)
        name = burst.platform
    keywords = tuple(k.strip() for k in str(app.config.get("MTURK_KEYWORDS", "")).split(",") if k.strip())
    try:
        out = service.publish(db, registry.crowd(name, app.config), burst_id, url=url, keywords=keywords,
                              now=app.extensions["crowdmarket.clock"](), sleep=_sleep(app))
    except Exception as exc:  # noqa: BLE001 - shown on the burst; publishing again is safe (tokens)
        log.exception("publishing burst %s failed", burst_id)
        service.note_error(db, burst_id, repr(exc))
        return {"burst": burst_id, "done": {}, "errors": [repr(exc)]}
    return {"burst": burst_id, "done": out.done, "errors": out.errors}


def sync_now() -> dict[str, Any]:
    """The job: one sync of every due burst (failures are recorded on the bursts and logged)."""
    app = _app()
    try:
        outcomes = service.sync_all(app.extensions["crowdmarket.db"], registry.crowds(app.config),
                                    now=app.extensions["crowdmarket.clock"](), sleep=_sleep(app))
    except Exception as exc:  # noqa: BLE001 - logged; the next run (idempotent) does the work
        log.exception("the platforms sync failed")
        return {"failed": repr(exc)}
    return {"bursts": [{"burst": o.burst_id, "done": o.done, "errors": o.errors} for o in outcomes]}


def _sleep(app: Flask) -> Any:
    # Tests pass a sleep that does not wait between retries.
    return app.extensions.get("crowdmarket.platform_sleep", time.sleep)


def job_id(queue: Queue) -> str:
    return "platforms-sync-" + re.sub(r"[^A-Za-z0-9_-]", "_", queue.name)


def ensure_scheduled(app: Flask, *, at: dt.datetime | None = None) -> Job | None:
    return jobs.ensure_repeating(app, job_id=job_id, func=sync_now, seconds=int(app.config["PLATFORMS_SYNC_SECONDS"]),
                                 description="platforms sync", at=at)


def on_assignments_reviewed(session: Session, event: AssignmentsReviewed) -> None:
    """A review of work done for a platform is mirrored there soon after the request commits, not at the next
    scheduled sync (reviews outside a request, auto-approval's, wait for the schedule)."""
    if not has_request_context() or g.get("crowdmarket_platform_sync"):
        return
    ids = list(event.assignment_ids)
    if not ids or session.scalar(select(Assignment.id).join(Batch, Batch.id == Assignment.batch_id).where(
            Assignment.id.in_(ids[:1000]), Batch.platform.is_not(None)).limit(1)) is None:
        return
    g.crowdmarket_platform_sync = True
    jobs.after_commit(sync_now)
