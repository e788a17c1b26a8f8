"""Requester JSON API for aggregation runs: request one, follow it, read and export its labels."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint as FlaskBlueprint
from flask import Response, current_app, render_template, url_for
from flask.views import MethodView
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from aggregation import report, service
from aggregation.jobs import run_aggregation
from aggregation.models import AggregationRun
from aggregation.schemas import (
    LabelExportQuerySchema,
    LabelListSchema,
    LabelQuerySchema,
    ReportLinkSchema,
    ReportQuerySchema,
    ReportSchema,
    RunCreateSchema,
    RunListSchema,
    RunSchema,
    RunWorkerListSchema,
)
from base.errors import Gone, NotFound
from base.identity import Role
from base.uow import UnitOfWork
from edge import jobs
from edge.auth import current_account, requires
from edge.blueprint import Blueprint, idempotency_doc, idempotency_key, page, streamed
from edge.fields import PageQuerySchema
from edge.openapi import download_doc
from edge.request import clock, db_session
from market.catalogue.projects import get_project
from workers.models import Account

blp = Blueprint("aggregations", __name__, url_prefix="/api/v1/projects",
                description="Aggregation runs: labels with confidences from redundant answers (requesters).")
READ = (Role.REQUESTER, Role.OPS)
WRITE = (Role.REQUESTER,)


def _project(project_id: int, *, write: bool = False):
    return get_project(db_session(), project_id=project_id, account=current_account(), write=write)


def _run(project_id: int, run_id: int) -> AggregationRun:
    return service.get_run(db_session(), project=_project(project_id), run_id=run_id)


@blp.route("/<int:project_id>/aggregations")
class Runs(MethodView):
    @requires(*READ)
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, RunListSchema)
    def get(self, args: dict[str, Any], project_id: int):
        """The project's aggregation runs, oldest first."""
        runs = service.list_runs(db_session(), project=_project(project_id), after=args.get("after"),
                                 limit=args["limit"])
        return page(runs, args["limit"])

    @requires(*WRITE)
    @blp.arguments(RunCreateSchema)
    @blp.response(202, RunSchema)
    @blp.alt_response(200, schema=RunSchema, description="Replay of an earlier request with the same "
                                                          "Idempotency-Key: the run it created.")
    @blp.doc(**idempotency_doc("run"))
    def post(self, data: dict[str, Any], project_id: int):
        """Aggregate the project's answers (blocked workers' answers excluded) with a method: a background job
        when Redis is configured, at once otherwise. Follow the run at its Location."""
        key = idempotency_key()
        session = db_session()
        project = _project(project_id, write=True)
        params = {k: v for k, v in data.items() if k != "method"}
        # The run is committed before its job is handed out: the job reads it in a session of its own.
        with UnitOfWork(session):
            run, created = service.request_run(session, project=project, account=current_account(),
                                               method=data["method"], params=params, idempotency_key=key,
                                               now=clock())
        if created:
            jobs.enqueue(run_aggregation, run.id)
            session.refresh(run)  # an inline job has finished it
        headers = {"Location": url_for("aggregations.RunDetail", project_id=project.id, run_id=run.id)}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return run, 202 if created else 200, headers


@blp.route("/<int:project_id>/aggregations/<int:run_id>")
class RunDetail(MethodView):
    @requires(*READ)
    @blp.response(200, RunSchema)
    def get(self, project_id: int, run_id: int):
        """One run: its status, inputs' counts, iterations, time, and accuracy on gold."""
        return _run(project_id, run_id)


@blp.route("/<int:project_id>/aggregations/<int:run_id>/labels")
class RunLabels(MethodView):
    @requires(*READ)
    @blp.arguments(LabelQuerySchema, location="query")
    @blp.response(200, LabelListSchema)
    def get(self, args: dict[str, Any], project_id: int, run_id: int):
        """A page of the run's labels with confidences, by item id."""
        rows = service.list_labels(db_session(), run=_run(project_id, run_id), after=args.get("after"),
                                   limit=args["limit"], gold=args.get("gold"))
        return page(rows, args["limit"], key="item_id")


@blp.route("/<int:project_id>/aggregations/<int:run_id>/workers")
class RunWorkers(MethodView):
    @requires(*READ)
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, RunWorkerListSchema)
    def get(self, args: dict[str, Any], project_id: int, run_id: int):
        """A page of the run's per-worker estimates (accuracy; Dawid–Skene's confusion matrices), by worker id."""
        rows = service.list_workers(db_session(), run=_run(project_id, run_id), after=args.get("after"),
                                    limit=args["limit"])
        return page(rows, args["limit"], key="worker_id")


@blp.route("/<int:project_id>/aggregations/<int:run_id>/export")
class RunExport(MethodView):
    @requires(*READ)
    @blp.arguments(LabelExportQuerySchema, location="query")
    @blp.response(200, description="CSV with a header row, or JSON Lines; streamed.")
    @blp.doc(**download_doc("text/csv", "application/x-ndjson"))
    def get(self, args: dict[str, Any], project_id: int, run_id: int):
        """Stream the run's labels: external_id, label, confidence, answers, method."""
        session, run = db_session(), _run(project_id, run_id)
        fmt = args["format"]
        lines = service.export_lines(session, run=run, fmt=fmt, gold=args["gold"])  # fails unless succeeded
        return streamed(session, lines, mimetype="text/csv" if fmt == "csv" else "application/x-ndjson",
                        filename=f"project-{project_id}-aggregation-{run.id}{'-gold' if args['gold'] else ''}.{fmt}")


def _report_run(project, args: dict[str, Any]) -> AggregationRun | None:
    run_id = args.get("aggregation")
    return None if run_id is None else service.get_run(db_session(), project=project, run_id=run_id)


@blp.route("/<int:project_id>/quality-report")
class QualityReport(MethodView):
    @requires(*READ)
    @blp.arguments(ReportQuerySchema, location="query")
    @blp.response(200, ReportSchema)
    def get(self, args: dict[str, Any], project_id: int):
        """The project's quality report: agreement overall and per category, per-worker scores, the confusion
        matrix of gold misses, coverage by batch, guideline versions in use and the label distribution."""
        project = _project(project_id)
        return report.build(db_session(), project=project, run=_report_run(project, args), now=clock())


@blp.route("/<int:project_id>/quality-report/download")
class QualityReportDownload(MethodView):
    @requires(*READ)
    @blp.arguments(ReportQuerySchema, location="query")
    @blp.response(200, description="The report plus `labels`: every answered item's label with the provenance "
                                    "of each answer (worker, time, guideline version); streamed JSON.")
    @blp.doc(**download_doc("application/json"))
    def get(self, args: dict[str, Any], project_id: int):
        """The quality report with the provenance of every label, as a JSON download."""
        session, project = db_session(), _project(project_id)
        chunks = report.download(session, project=project, run=_report_run(project, args), now=clock())
        return streamed(session, chunks, mimetype="application/json",
                        filename=f"project-{project.id}-quality-report.json")


REPORT_LINK_SECONDS = 3600


def _links() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="quality-report-link")


@blp.route("/<int:project_id>/quality-report/link", methods=["GET"])
@requires(*READ)
@blp.arguments(ReportQuerySchema, location="query")
@blp.response(200, ReportLinkSchema)
def quality_report_link(args: dict[str, Any], project_id: int):
    """A link that opens the report as a web page for an hour, signed for this account and project."""
    project = _project(project_id)
    _report_run(project, args)
    token = _links().dumps({"p": project.id, "a": current_account().id, "r": args.get("aggregation")})
    return {"url": url_for("quality_pages.quality_report_page", token=token, _external=True),
            "expires_at": clock() + dt.timedelta(seconds=REPORT_LINK_SECONDS)}


pages = FlaskBlueprint("quality_pages", __name__)


@pages.get("/reports/quality/<token>")
def quality_report_page(token: str):
    """The report as a page. The signed link stands in for the API token a browser cannot send; it is checked
    again against the account's current access."""
    try:
        claim = _links().loads(token, max_age=REPORT_LINK_SECONDS)
    except SignatureExpired as exc:
        raise Gone("This report link has expired; ask the API for a new one.") from exc
    except BadSignature as exc:
        raise NotFound("No such report link.") from exc
    session = db_session()
    account = session.get(Account, claim["a"])
    if account is None or not account.is_active:
        raise NotFound("No such report link.")
    project = get_project(session, project_id=claim["p"], account=account)
    run = None if claim["r"] is None else service.get_run(session, project=project, run_id=claim["r"])
    body = report.build(session, project=project, run=run, now=clock())
    html = render_template("quality_report.html", report=body)
    return Response(html, headers={"Cache-Control": "no-store"})
