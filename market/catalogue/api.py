"""Requester JSON API: projects, guidelines, items, batches, progress and answers."""

from __future__ import annotations

import io
from typing import Any

from flask import current_app, request
from flask.views import MethodView

from base.errors import InvalidInput
from base.identity import Role
from base.money import effective_target, expected_rate, rate_warnings
from edge.auth import current_account, requires
from edge.blueprint import Blueprint, idempotency_doc, idempotency_key, page, streamed
from edge.fields import PageQuerySchema
from edge.openapi import download_doc, problems
from edge.request import clock, db_session
from market.catalogue import imports, results
from market.catalogue.batches import (
    batch_progress,
    batch_progress_many,
    change_batch_status,
    effective_status,
    get_batch,
    list_batches,
    publish_batch,
    set_priorities,
)
from market.catalogue.gold import gold_supply_many
from market.catalogue.models import Batch, Project
from market.catalogue.projects import (
    create_project,
    current_instructions_many,
    get_guideline,
    get_item,
    get_project,
    list_guidelines,
    list_items,
    list_projects,
    update_project,
)
from market.catalogue.schemas import (
    AnswerListSchema,
    AnswerQuerySchema,
    BatchCreateSchema,
    BatchListSchema,
    BatchSchema,
    ExportQuerySchema,
    GuidelineVersionSchema,
    ImportQuerySchema,
    ImportResultSchema,
    ItemListSchema,
    ItemQuerySchema,
    PriorityResultSchema,
    PrioritySchema,
    ProgressSchema,
    ProjectCreateSchema,
    ProjectListSchema,
    ProjectSchema,
    ProjectUpdateSchema,
    RequesterItemSchema,
)

blp = Blueprint("projects", __name__, url_prefix="/api/v1/projects", description="Labeling jobs (requesters).")
READ = (Role.REQUESTER, Role.OPS)
WRITE = (Role.REQUESTER,)


def _project(project_id: int, *, write: bool = False):
    return get_project(db_session(), project_id=project_id, account=current_account(), write=write)


def _project_bodies(projects: list[Project]) -> list[dict[str, Any]]:
    """Projects with their current instructions, loaded for them all in one query."""
    instructions = current_instructions_many(db_session(), projects)
    fields = ProjectSchema().fields
    return [{c: getattr(p, c) for c in fields if hasattr(p, c)} | {"instructions": instructions[p.id]}
            for p in projects]


def _project_body(project: Project) -> dict[str, Any]:
    return _project_bodies([project])[0]


@blp.route("")
class Projects(MethodView):
    @requires(*READ)
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, ProjectListSchema)
    def get(self, args: dict[str, Any]):
        """List your projects (ops: all projects)."""
        rows = list_projects(db_session(), account=current_account(), after=args.get("after"),
                                     limit=args["limit"])
        return page(_project_bodies(rows), args["limit"])

    @requires(*WRITE)
    @blp.arguments(ProjectCreateSchema)
    @blp.response(201, ProjectSchema)
    def post(self, data: dict[str, Any]):
        """Create a project: a labeling job with its label schema, guidelines and pay."""
        project = create_project(db_session(), owner=current_account(), data=data, now=clock())
        return _project_body(project)


@blp.route("/<int:project_id>")
class ProjectDetail(MethodView):
    @requires(*READ)
    @blp.response(200, ProjectSchema)
    def get(self, project_id: int):
        """A project with its current guidelines."""
        return _project_body(_project(project_id))

    @requires(*WRITE)
    @blp.arguments(ProjectUpdateSchema)
    @blp.response(200, ProjectSchema)
    @problems(409)
    def patch(self, data: dict[str, Any], project_id: int):
        """Change settings or guidelines; changed instructions become a new guideline version."""
        project = update_project(db_session(), project=_project(project_id, write=True),
                                         account=current_account(), data=data, now=clock())
        return _project_body(project)


@blp.route("/<int:project_id>/guidelines")
class Guidelines(MethodView):
    @requires(*READ)
    @blp.response(200, GuidelineVersionSchema(many=True))
    def get(self, project_id: int):
        """Every version of the project's guidelines, oldest first."""
        return list_guidelines(db_session(), project=_project(project_id))


@blp.route("/<int:project_id>/guidelines/<int:version>")
class GuidelineDetail(MethodView):
    @requires(*READ)
    @blp.response(200, GuidelineVersionSchema)
    def get(self, project_id: int, version: int):
        """One version of the guidelines."""
        return get_guideline(db_session(), project=_project(project_id), version=version)


_JSONL_TYPES = {"application/x-ndjson", "application/jsonl", "application/x-jsonlines", "application/json-lines",
                "application/jsonlines"}


def _import_source(query_format: str | None) -> tuple[Any, str]:
    """The uploaded bytes and their format: multipart field `file`, or the raw request body."""
    request.max_content_length = current_app.config["MAX_IMPORT_BYTES"]
    fmt = query_format
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise InvalidInput("Upload the file in a multipart field named 'file'.", errors={"file": ["required"]})
        name = (upload.filename or "").lower()
        if fmt is None:
            fmt = "csv" if name.endswith(".csv") else "jsonl" if name.endswith((".jsonl", ".ndjson")) else None
        stream = upload.stream
    else:
        if fmt is None:
            fmt = "csv" if request.mimetype == "text/csv" else "jsonl" if request.mimetype in _JSONL_TYPES else None
        stream = io.BufferedReader(request.stream)  # type: ignore[arg-type]
    if fmt is None:
        raise InvalidInput("Cannot tell the file format; send Content-Type text/csv or application/x-ndjson, "
                           "a .csv/.jsonl file name, or ?format=csv|jsonl.",
                           errors={"format": ["required when the content type does not say"]})
    return stream, fmt


@blp.route("/<int:project_id>/items")
class Items(MethodView):
    @requires(*READ)
    @blp.arguments(ItemQuerySchema, location="query")
    @blp.response(200, ItemListSchema)
    def get(self, args: dict[str, Any], project_id: int):
        """List items (with gold answers: this is the requester's view)."""
        rows = list_items(db_session(), project=_project(project_id), after=args.get("after"),
                                  limit=args["limit"], gold=args.get("gold"), batch_id=args.get("batch_id"))
        return page(rows, args["limit"])

    @requires(*WRITE)
    @blp.arguments(ImportQuerySchema, location="query")
    @blp.response(201, ImportResultSchema)
    @blp.alt_response(200, schema=ImportResultSchema, description="Nothing new: every external_id existed.")
    @blp.doc(requestBody={"required": True, "content": {
        "application/x-ndjson": {"schema": {"type": "string"}},
        "text/csv": {"schema": {"type": "string"}},
        "multipart/form-data": {"schema": {"type": "object",
                                           "properties": {"file": {"type": "string", "format": "binary"}}}}}})
    def post(self, args: dict[str, Any], project_id: int):
        """Import items from JSONL or CSV, atomically: one bad line and nothing is imported."""
        project = _project(project_id, write=True)
        stream, fmt = _import_source(args.get("format"))
        result = imports.import_items(db_session(), project=project, stream=stream, fmt=fmt, now=clock())
        return result, 201 if result.created else 200


@blp.route("/<int:project_id>/items/priority")
class ItemPriority(MethodView):
    @requires(*WRITE)
    @blp.arguments(PrioritySchema)
    @blp.response(200, PriorityResultSchema)
    def post(self, data: dict[str, Any], project_id: int):
        """Set item priorities in bulk; work is served highest priority first (the active-learning hook)."""
        updated = set_priorities(db_session(), project=_project(project_id, write=True),
                                         entries=data["items"])
        return {"updated": updated}


@blp.route("/<int:project_id>/items/<int:item_id>")
class ItemDetail(MethodView):
    @requires(*READ)
    @blp.response(200, RequesterItemSchema)
    def get(self, project_id: int, item_id: int):
        """One item."""
        return get_item(db_session(), project=_project(project_id), item_id=item_id)


def _batch_bodies(project: Project, batches: list[Batch]) -> list[dict[str, Any]]:
    """The bodies of batches of the project (access checked by the caller): what they need is loaded for them all
    at once, so a list costs a fixed number of queries whatever its length (tests/test_list_queries.py)."""
    session, now = db_session(), clock()
    progress = batch_progress_many(session, batches, now=now)
    gold = gold_supply_many(session, batches, project)
    bodies = []
    for batch in batches:
        body = {c: getattr(batch, c) for c in BatchSchema().fields if c not in ("gold", "pay_warnings")}
        body["pay_warnings"] = _pay_warnings(batch)
        body["status"] = effective_status(batch, now=now, complete=progress[batch.id].complete).value
        supply = gold[batch.id]
        body["gold"] = {**vars(supply), "warning": supply.warning(batch.items_per_hit)}
        bodies.append(body)
    return bodies


def _pay_warnings(batch: Batch) -> list[str]:
    """From the batch's own columns (no query): its rate on the measured time, else the estimate (unpaid work,
    reward 0, has no wage to warn about)."""
    if not batch.reward_cents:
        return []
    rate = expected_rate(batch.reward_cents, measured_seconds=batch.measured_seconds,
                         estimated_seconds=batch.estimated_seconds)
    target = effective_target(target_cents_per_hour=batch.target_wage_cents_per_hour,
                              floor_cents_per_hour=batch.wage_floor_cents_per_hour, auto_top_up=batch.auto_top_up)
    return rate_warnings(None if rate is None else rate[0], target_cents_per_hour=target,
                         floor_cents_per_hour=batch.wage_floor_cents_per_hour)


def _batch_body(batch: Batch, project: Project | None = None) -> dict[str, Any]:
    # The caller has checked access. Without the project at hand, it is loaded (the session holds it only
    # while something refers to it).
    project = project or db_session().get(Project, batch.project_id)
    assert project is not None
    return _batch_bodies(project, [batch])[0]


@blp.route("/<int:project_id>/batches")
class Batches(MethodView):
    @requires(*READ)
    @blp.response(200, BatchListSchema)
    def get(self, project_id: int):
        """The project's batches."""
        project = _project(project_id)
        return {"data": _batch_bodies(project, list_batches(db_session(), project=project))}

    @requires(*WRITE)
    @blp.arguments(BatchCreateSchema)
    @blp.response(201, BatchSchema)
    @blp.alt_response(200, schema=BatchSchema, description="Replay of an earlier request with the same "
                                                            "Idempotency-Key: the batch it created.")
    @blp.doc(**idempotency_doc("batch"))
    def post(self, data: dict[str, Any], project_id: int):
        """Publish items as HITs: all unpublished items, or the chosen item_ids / external_ids."""
        key = idempotency_key()
        batch, created = publish_batch(
            db_session(), project_id=project_id, account=current_account(), now=clock(), name=data["name"],
            item_ids=data.get("item_ids"), external_ids=data.get("external_ids"), idempotency_key=key,
            qualification_requirements=data.get("qualification_requirements"),
            wage_floor_cents_per_hour=current_app.config["WAGE_FLOOR_CENTS_PER_HOUR"],
            platform_fee_rate=current_app.config["PLATFORM_FEE_RATE"])
        headers = {} if created else {"Idempotent-Replayed": "true"}
        return _batch_body(batch), 201 if created else 200, headers


@blp.route("/<int:project_id>/batches/<int:batch_id>")
class BatchDetail(MethodView):
    @requires(*READ)
    @blp.response(200, BatchSchema)
    def get(self, project_id: int, batch_id: int):
        """One batch; its status is derived from the clock and answers (expired, complete)."""
        project = _project(project_id)
        return _batch_body(get_batch(db_session(), project=project, batch_id=batch_id), project)


def _transition(action: str):
    @requires(*WRITE)
    @blp.response(200, BatchSchema)
    @problems(409)
    def view(project_id: int, batch_id: int):
        project = _project(project_id, write=True)
        batch = change_batch_status(db_session(), project=project, batch_id=batch_id, action=action, now=clock())
        return _batch_body(batch, project)

    view.__name__ = f"batch_{action}"
    view.__doc__ = {"pause": "Pause a batch: workers get no new work from it until it is resumed.",
                    "resume": "Resume a paused batch.",
                    "cancel": "Cancel a batch for good; leases already held may still be submitted."}[action]
    blp.route(f"/<int:project_id>/batches/<int:batch_id>/{action}", methods=["POST"])(view)


for _action in ("pause", "resume", "cancel"):
    _transition(_action)


@blp.route("/<int:project_id>/batches/<int:batch_id>/progress")
class BatchProgress(MethodView):
    @requires(*READ)
    @blp.response(200, ProgressSchema)
    def get(self, project_id: int, batch_id: int):
        """Items by number of answers, completed items, assignments by state."""
        batch = get_batch(db_session(), project=_project(project_id), batch_id=batch_id)
        p = batch_progress(db_session(), batch, now=clock())
        return {
            "batch_id": batch.id,
            "status": effective_status(batch, now=clock(), complete=p.complete).value,
            "items": p.items, "hits": p.hits, "assignments_per_item": p.assignments_per_item,
            "answers": p.answers, "items_complete": p.items_complete,
            "fraction_complete": p.items_complete / p.items if p.items else 0.0,
            "items_by_answer_count": [{"answers": n, "items": c} for n, c in sorted(p.items_by_answer_count.items())],
            "assignments_by_status": p.assignments_by_status,
        }


@blp.route("/<int:project_id>/answers")
class Answers(MethodView):
    @requires(*READ)
    @blp.arguments(AnswerQuerySchema, location="query")
    @blp.response(200, AnswerListSchema)
    def get(self, args: dict[str, Any], project_id: int):
        """A page of answers with provenance (worker, time, duration, guideline version)."""
        filters = {k: args.get(k) for k in ("batch_id", "worker_id", "item_id")}
        rows = results.list_answers(db_session(), project=_project(project_id), after=args.get("after"),
                                    limit=args["limit"], **filters)
        return page(rows, args["limit"], key="answer_id")


@blp.route("/<int:project_id>/answers/export")
class AnswersExport(MethodView):
    @requires(*READ)
    @blp.arguments(ExportQuerySchema, location="query")
    @blp.response(200, description="CSV with a header row, or JSON Lines; streamed.")
    @blp.doc(**download_doc("text/csv", "application/x-ndjson"))
    def get(self, args: dict[str, Any], project_id: int):
        """Stream every answer as CSV or JSONL, in constant memory."""
        project = _project(project_id)
        session, fmt = db_session(), args["format"]
        lines = results.export_lines(session, project=project, fmt=fmt, batch_id=args.get("batch_id"))
        return streamed(session, lines, mimetype="text/csv" if fmt == "csv" else "application/x-ndjson",
                        filename=f"project-{project.id}-answers.{fmt}")


BLUEPRINTS = (blp,)
