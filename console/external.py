"""The work page as another platform's task page: MTurk's ExternalQuestion (platforms/mturk.py) opens
`/work/external/<platform>?ref=...` in a frame on its worker site, adding its own parameters; Prolific opens it in
a tab.

`ref` is our signed reference to the burst's batch the platform's tasks were made for (`platforms.jobs.page_url`),
so only URLs we generated open anything: no one enumerates projects through the preview. A preview shows the task
read-only (the batch's terms, guidelines and an example item, never gold) and leases nothing. An accepted
assignment is the platform worker's arrival (platforms/arrivals.py: their account, made on first sight, and their
task of ours), then the same work page as everyone's, authenticated by a signed work token in the page (our
session cookie is not sent inside another site's frame) and limited to that one task. Once our submit has stored
the answers, the page sends the platform's completion form (MTurk's externalSubmit), or, in a session of several
tasks, loads itself again for the next; the form may go nowhere else."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request, url_for

from base.errors import DomainError
from base.identity import Caller, Role
from console.work import CSP_DIRECTIVES, painted, work_token
from edge.csp import content_security_policy
from edge.request import clock, db_session
from platforms import arrivals
from platforms.base import Completion
from platforms.registry import platform
from workers.api import count_sign_up
from workers.service import identity_account

blp = Blueprint("external_pages", __name__, url_prefix="/work/external")


@blp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@blp.errorhandler(DomainError)
def _refused(exc: DomainError) -> Response:
    # Shown inside the platform's frame: say what happened and what to do there.
    detail = exc.detail
    if isinstance(exc.errors, dict) and exc.errors:
        detail += " " + "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in exc.errors.items())
    html = render_template("error.html", status=exc.status, title=exc.title, detail=detail)
    return Response(html, status=exc.status, mimetype="text/html")


@blp.get("/<platform_name>")
def task_page(platform_name: str) -> Response:
    """A platform's task: the preview, or the arrived worker's task on the work page."""
    crowd = platform(platform_name)
    batch_id = arrivals.read_ref(current_app.config["SECRET_KEY"], request.args.get("ref"))
    arrival = crowd.arrival(request.args)
    session = db_session()
    burst = arrivals.burst_of(session, batch_id=batch_id, platform=crowd.name)
    policy = content_security_policy(**CSP_DIRECTIVES, form_action=" ".join(("'self'", *crowd.form_origins)))
    if arrival.preview:
        shown = arrivals.preview(session, batch_id=batch_id)
        html = render_template("work/external_preview.html", preview=shown, platform_title=crowd.title)
        return Response(html, mimetype="text/html", headers={"Content-Security-Policy": policy})
    if identity_account(session, platform=arrival.platform, external_id=arrival.worker_ref) is None:
        # An account made on first sight is a sign-up: without the limit, one client inventing worker ids could
        # open thousands of accounts, each holding a lease, and starve the batch until the leases lapse.
        count_sign_up()
    many = crowd.tasks_per_assignment == "many"
    try:
        arrived = arrivals.arrive(session, arrival=arrival, burst=burst, many=many, now=clock(),
                                  gold_key=current_app.extensions["crowdmarket.gold_key"])
    except arrivals.SessionDone as done_all:
        final = crowd.completion(arrival, assignment_id=0, code=burst.completion_code)
        html = render_template("work/external_done.html", detail=done_all.detail, action=final.action,
                               fields=final.fields, method=final.method, platform_title=crowd.title)
        return Response(html, mimetype="text/html", headers={"Content-Security-Policy": policy})
    worker = Caller(arrived.worker.id, Role.WORKER)
    if many:  # the next task of the session: this page again
        done = Completion(url_for("external_pages.task_page", platform_name=platform_name), dict(request.args),
                          method="get")
    else:
        done = crowd.completion(arrival, assignment_id=arrived.task.id, code=burst.completion_code)
    first: dict[str, Any] = painted(worker, arrived.task)
    html = render_template("work/task.html", project_id=None, external={
        "token": work_token(worker_id=worker.id, assignment_id=arrived.task.id),
        "first": json.dumps(first, default=str), "action": done.action, "fields": done.fields,
        "method": done.method, "submitted": arrived.task.answers is not None, "platform_title": crowd.title})
    return Response(html, mimetype="text/html", headers={"Content-Security-Policy": policy})
