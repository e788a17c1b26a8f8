"""The requesters' read-only project pages (the API stays their main tool): their projects with progress and spend,
a project's batches with pay, its quality report, and approving a batch's submitted work in bulk, through the
review service `POST /api/v1/projects/{id}/reviews` calls (payments/review/approve.py)."""

from __future__ import annotations

from collections import defaultdict

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for

from aggregation import report
from base.errors import DomainError, NotFound
from base.identity import Role
from base.money import Money
from base.uow import savepoint
from console.health import project_figures
from edge.request import clock, db_session
from edge.web import page_account, query_id, signed_in
from market.catalogue import health
from market.catalogue.projects import get_project, list_projects
from payments.books.reports import requester_spend
from payments.review import listing
from payments.review.approve import approve

blp = Blueprint("requester_pages", __name__, url_prefix="/requester")
PAGE = 100
SHOWN_SUBMITTED = 10


@blp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def _spend_by_project(requester_id: int) -> dict[int, dict[str, int]]:
    """Total spend (rewards, bonuses, fees) per project and currency, from the same report as /reports/spend."""
    out: defaultdict[int, dict[str, int]] = defaultdict(dict)
    for row in requester_spend(db_session(), requester_id=requester_id)["data"]:
        if row["project_id"] is not None:
            spent = out[row["project_id"]]
            spent[row["currency"]] = spent.get(row["currency"], 0) + row["total"]
    return dict(out)


@blp.get("")
@signed_in(Role.REQUESTER)
def projects():
    """The signed-in requester's own projects, with progress and spend."""
    session, me = db_session(), page_account()
    rows = list_projects(session, account=me, after=query_id("after"), limit=PAGE)
    return render_template("console/requester_projects.html", projects=project_figures(session, rows, detail=False),
                           spend=_spend_by_project(me.id), next_after=rows[-1].id if len(rows) == PAGE else None)


def _own_project(project_id: int):
    # get_project lets ops read any project; these pages are the owner's alone: anyone else gets 404.
    me = page_account()
    project = get_project(db_session(), project_id=project_id, account=me)
    if project.owner_id != me.id:
        raise NotFound(f"Project {project_id} not found.")
    return project


def _project_page(project_id: int, status: int = 200, *, message: str | None = None) -> tuple[str, int]:
    session = db_session()
    project = _own_project(project_id)
    [figures] = project_figures(session, [project], detail=True)
    waiting = health.awaiting_review(session, project.id)
    rows = listing.project_assignments(session, project=project, status="submitted", after=None,
                                       limit=SHOWN_SUBMITTED)
    spend = _spend_by_project(project.owner_id).get(project.id, {})
    return render_template("console/requester_project.html", f=figures, waiting=waiting, rows=rows, spend=spend,
                           message=message), status


@blp.get("/projects/<int:project_id>")
@signed_in(Role.REQUESTER)
def project(project_id: int):
    """A project: progress and pay per batch, its quality report, and the submitted work awaiting review."""
    return _project_page(project_id)


@blp.post("/projects/<int:project_id>/batches/<int:batch_id>/approve")
@signed_in(Role.REQUESTER)
def approve_batch(project_id: int, batch_id: int):
    """Approve (and pay) every submitted assignment of the batch: the API's bulk review by batch."""
    _own_project(project_id)
    if request.form.get("confirm") != "yes":
        return _project_page(project_id, 422, message=f"Nothing was approved: tick the box to confirm approving "
                                                      f"all submitted work in batch {batch_id}.")
    session = db_session()
    try:
        with savepoint(session):
            result = approve(session, actor=page_account(), now=clock(), batch_id=batch_id, project_id=project_id)
    except DomainError as exc:
        if exc.status == 404:
            raise
        return _project_page(project_id, exc.status, message=f"Nothing was approved: {exc.detail}")
    paid = ", ".join(str(Money(c, k)) for k, c in sorted(result.rewards.items()))
    flash(f"Approved {len(result.reviewed)} assignment(s) in batch {batch_id}"
          + (f"; rewards paid: {paid}." if paid else "."))
    return redirect(url_for(".project", project_id=project_id), 303)


@blp.get("/projects/<int:project_id>/quality")
@signed_in(Role.REQUESTER)
def quality(project_id: int):
    """The project's quality report, the page the API's signed link opens, for the signed-in owner."""
    session = db_session()
    body = report.build(session, project=_own_project(project_id), run=None, now=clock())
    return render_template("quality_report.html", report=body)
