"""The worker's dashboard, `GET /work`: the open projects they can see with pay per HIT and per hour, the
qualifications each requires and the worker's standing on them; answers today and earnings at the top.

Composes the market (market.engine.open_work), qualification (requirement_statuses, unmet_requirements: the
engine's own gate) and payments (listing.worker_summary). Only what a worker may see: no items, gold or other
workers' work."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, render_template

from base.identity import Role
from edge.request import clock, db_session
from edge.web import page_account, signed_in
from market.engine.open_work import OpenProject, open_projects
from payments.review.listing import worker_summary
from qualification.service import RequirementStatus, requirement_statuses, unmet_requirements

blp = Blueprint("dashboard", __name__)


@blp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"  # a worker's own data: never cached, nor shown after log-out
    return response


@dataclass(frozen=True)
class Card:
    """One open project on the dashboard."""

    project: OpenProject
    requirements: list[dict[str, Any]]
    open_to_you: bool  # some open batch admits the worker (not blocked, requirements met)


COMPARATOR_TEXT = {"GreaterThanOrEqualTo": "at least", "GreaterThan": "more than", "LessThan": "less than",
                   "LessThanOrEqualTo": "at most", "EqualTo": "exactly", "NotEqualTo": "not"}


def _requirement_text(r: dict[str, Any]) -> str:
    comparator, values = r["comparator"], r.get("values") or []
    if comparator == "Exists":
        return "held"
    if comparator == "DoesNotExist":
        return "not held"
    if comparator in ("In", "NotIn"):
        return f"{'one of' if comparator == 'In' else 'none of'} {', '.join(map(str, values))}"
    return f"{COMPARATOR_TEXT[comparator]} {values[0]}"


def requirement_view(s: RequirementStatus, now: dt.datetime) -> dict[str, Any]:
    """What the page says of one requirement: its status in words, and the link to act on it (if any)."""
    name = s.name or f"Qualification {s.requirement['qualification_id']}"
    view: dict[str, Any] = {"name": name, "needs": _requirement_text(s.requirement), "value": s.held_value,
                            "state": "passed", "text": "Passed", "link": None, "link_text": None}
    if s.met:
        return view
    test = s.test
    type_id = s.requirement["qualification_id"]
    if s.requirement["comparator"] == "DoesNotExist":
        return {**view, "state": "excluded", "text": "Not open to holders of this qualification"}
    if test is None:
        return {**view, "state": "unavailable", "text": "No test: the requester grants it by hand"}
    if test.open_attempt_id is not None:
        return {**view, "state": "started", "text": "Test in progress",
                "link": f"/work/qualifications/attempts/{test.open_attempt_id}", "link_text": "Continue the test"}
    if test.attempts_used == 0:
        return {**view, "state": "todo", "text": "Not taken yet", "link": f"/work/qualifications/{type_id}",
                "link_text": "Take the test"}
    if test.available_at is None:
        return {**view, "state": "failed", "text": "Failed — no attempts left"}
    if test.available_at > now:
        return {**view, "state": "failed", "text": "Failed — retake after", "retake_at": test.available_at}
    return {**view, "state": "failed", "text": "Failed — you may retake it now",
            "link": f"/work/qualifications/{type_id}", "link_text": "Retake the test"}


def cards(session: Any, *, worker: Any, now: dt.datetime) -> list[Card]:
    """The open projects with the worker's standing on each."""
    projects = open_projects(session, worker_id=worker.id, now=now)
    gates = {b: reqs for p in projects for b, reqs in p.gated_batches.items()}
    shut, _ = unmet_requirements(session, worker_id=worker.id, gates=gates) if gates else (set(), [])
    all_reqs = [r for p in projects for r in p.requirements]
    statuses = {_key(s.requirement): s for s in requirement_statuses(session, worker=worker, requirements=all_reqs,
                                                                      now=now)}
    return [Card(p, [requirement_view(statuses[_key(r)], now) for r in p.requirements],
                 open_to_you=not p.blocked and any(b not in shut for b in p.batch_ids)) for p in projects]


def _key(r: dict[str, Any]) -> tuple[int, str, tuple[int, ...]]:
    return r["qualification_id"], r["comparator"], tuple(r.get("values") or [])


@blp.get("/work")
@signed_in(Role.WORKER)
def work():
    """The worker's dashboard: open projects, their pay and requirements, answers today and earnings."""
    session, worker, now = db_session(), page_account(), clock()
    return render_template("console/dashboard.html", cards=cards(session, worker=worker, now=now),
                           summary=worker_summary(session, worker_id=worker.id, now=now))
