"""Ops project health: every project's progress with its warnings first (gold exhausted, pay below the target or
the floor, high block or rejection rate), and a project's page: progress per batch, gold coverage, block and
rejection rates, the effective hourly rate against the target and the floor. The services behind the API's batch
progress (market/catalogue/batches.py), gold pools (market/catalogue/gold.py) and batch pay
(payments/wage/report.py); the rates from market/catalogue/health.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, render_template
from sqlalchemy.orm import Session

from base.identity import Caller, Role
from edge.request import clock, db_session
from edge.web import page_account, query_id, signed_in
from market.catalogue import health
from market.catalogue.batches import batch_progress_many, effective_status
from market.catalogue.gold import exhausted_gold_pools, gold_supply_many
from market.catalogue.models import BatchStatus, Project
from market.catalogue.projects import get_project, list_projects
from payments.wage.report import batch_pay

blp = Blueprint("ops_health", __name__, url_prefix="/ops/projects")
PAGE = 100


@blp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@dataclass
class BatchFigures:
    batch: Any
    status: str
    progress: Any
    pay: dict[str, Any]
    gold: Any = None


@dataclass
class ProjectFigures:
    project: Project
    rates: health.ProjectRates
    batches: list[BatchFigures] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def items(self) -> int:
        return sum(b.progress.items for b in self.batches)

    @property
    def items_complete(self) -> int:
        return sum(b.progress.items_complete for b in self.batches)


def project_figures(session: Session, projects: list[Project], *, detail: bool) -> list[ProjectFigures]:
    """Progress, pay, rates and warnings of each project (a fixed number of queries plus one pay statement per
    batch; `detail` adds the gold supply)."""
    now = clock()
    ids = [p.id for p in projects]
    by_project = health.batches_of(session, ids)
    progress = batch_progress_many(session, [b for bs in by_project.values() for b in bs], now=now)
    rates = health.project_rates(session, ids, now=now)
    exhausted = {pool.project_id: pool for pool in exhausted_gold_pools(session)}
    out = []
    for project in projects:
        figures = ProjectFigures(project, rates.get(project.id, health.ProjectRates()))
        batches = by_project[project.id]
        gold = gold_supply_many(session, batches, project) if detail else {}
        for b in batches:
            p = progress[b.id]
            status = effective_status(b, now=now, complete=p.complete)
            pay = batch_pay(session, batch=b)
            supply = gold.get(b.id)
            figures.batches.append(BatchFigures(b, status.value, p, pay, supply))
            # A finished batch's rate still says what its workers earned (and what top-ups cost): warned too.
            if status != BatchStatus.CANCELLED:
                figures.warnings += [f"Batch {b.id}: {w['message']}" for w in pay["warnings"]]
            if supply is not None and (note := supply.warning(b.items_per_hit)):
                figures.warnings.append(f"Batch {b.id}: {note}")
        if project.id in exhausted:
            warning = exhausted[project.id].warning
            figures.warnings.insert(0, warning[0].upper() + warning[1:] + ".")
        figures.warnings += figures.rates.warnings()
        out.append(figures)
    return out


def _ops() -> Caller:
    return page_account()


@blp.get("")
@signed_in(Role.OPS)
def projects():
    """Every project with its progress; those with warnings first."""
    session = db_session()
    after = query_id("after")
    rows = list_projects(session, account=_ops(), after=after, limit=PAGE)
    figures = project_figures(session, rows, detail=False)
    figures.sort(key=lambda f: (not f.warnings, f.project.id))
    return render_template("console/health.html", projects=figures,
                           next_after=rows[-1].id if len(rows) == PAGE else None)


@blp.get("/<int:project_id>")
@signed_in(Role.OPS)
def project(project_id: int):
    """A project's health: progress per batch, gold coverage, block and rejection rates, pay against target and
    floor."""
    session = db_session()
    [figures] = project_figures(session, [get_project(session, project_id=project_id, account=_ops())], detail=True)
    return render_template("console/health_project.html", f=figures, thresholds={
        "block": health.HIGH_BLOCK_RATE, "rejection": health.HIGH_REJECTION_RATE})
