"""Ops JSON API: review flagged workers; block, unblock, dismiss, each with a reason kept in the audit trail."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from base.errors import InvalidInput, NotFound
from base.identity import Role
from edge.auth import current_account, requires
from edge.blueprint import Blueprint, page
from edge.fields import PageQuerySchema
from edge.openapi import problems
from edge.request import clock, db_session, item_ids
from market.catalogue.gold import exhausted_gold_pools
from market.catalogue.models import Project
from market.catalogue.projects import get_project
from market.catalogue.schemas import GoldCorrectionSchema, GoldPoolListSchema, RequesterItemSchema
from market.quality import disputes, scoring
from market.quality.effects import block_flagged, unblock_flagged
from market.quality.models import DisputeState, GoldDispute
from market.quality.schemas import (
    DisputeCorrectSchema,
    DisputeCreateSchema,
    DisputeListSchema,
    DisputeNoteSchema,
    DisputeQuerySchema,
    DisputeSchema,
    WorkerDisputeListSchema,
    WorkerDisputeSchema,
    WorkerQualityListSchema,
)
from workers import flags
from workers.models import Account, FlagReason, FlagState, WorkerFlag
from workers.schemas import BlockSchema, FlagCreateSchema, FlagListSchema, FlagNoteSchema, FlagQuerySchema, FlagSchema

blp = Blueprint("ops", __name__, url_prefix="/api/v1/ops", description="Ops review: flagged workers and blocks.")
OPS = (Role.OPS,)


def _flag_bodies(rows: list[WorkerFlag]) -> list[dict[str, Any]]:
    """Flags with their blocks, loaded for them all in one query (no audit trail: `_flag_body` adds it)."""
    blocks, now = flags.blocks_of(db_session(), rows), clock()
    bodies = []
    for flag in rows:
        held = blocks.get(flag.id)
        block = None if held is None else {
            "scope": "all" if held.project_id is None else "project", "project_id": held.project_id,
            "reason": held.reason, "expires_at": held.expires_at, "lifted_at": held.lifted_at,
            "in_force": held.lifted_at is None and (held.expires_at is None or held.expires_at > now)}
        bodies.append({"id": flag.id, "worker_id": flag.account_id, "project_id": flag.project_id,
                       "reason": flag.reason.value, "evidence": flag.evidence, "state": flag.state.value,
                       "created_by_id": flag.created_by_id, "created_at": flag.created_at,
                       "updated_at": flag.updated_at, "block": block})
    return bodies


def _flag_body(flag: WorkerFlag) -> dict[str, Any]:
    body = _flag_bodies([flag])[0]
    body["events"] = [{"action": e.action, "actor_id": e.actor_id, "note": e.note, "at": e.at}
                      for e in flags.events(db_session(), flag.id)]
    return body


@blp.route("/flags")
class Flags(MethodView):
    @requires(*OPS)
    @blp.arguments(FlagQuerySchema, location="query")
    @blp.response(200, FlagListSchema)
    def get(self, args: dict[str, Any]):
        """Flags, oldest first, filtered by state, reason, worker or project."""
        rows = flags.list_flags(
            db_session(), after=args.get("after"), limit=args["limit"],
            state=FlagState(args["state"]) if "state" in args else None,
            reason=FlagReason(args["reason"]) if "reason" in args else None,
            worker_id=args.get("worker_id"), project_id=args.get("project_id"))
        return page(_flag_bodies(rows), args["limit"])

    @requires(*OPS)
    @blp.arguments(FlagCreateSchema)
    @blp.response(201, FlagSchema)
    @problems(404)
    def post(self, data: dict[str, Any]):
        """Flag a worker by hand (reason MANUAL), with a note and any evidence."""
        flag = flags.raise_flag(db_session(), worker_id=data["worker_id"], project_id=data["project_id"],
                                reason=FlagReason.MANUAL, note=data["note"], evidence=data["evidence"],
                                actor=current_account(), now=clock())
        return _flag_body(flag)


@blp.route("/flags/<int:flag_id>")
class FlagDetail(MethodView):
    @requires(*OPS)
    @blp.response(200, FlagSchema)
    def get(self, flag_id: int):
        """One flag with its block and audit trail."""
        return _flag_body(flags.get_flag(db_session(), flag_id=flag_id))


@blp.route("/flags/<int:flag_id>/block")
class Block(MethodView):
    @requires(*OPS)
    @blp.arguments(BlockSchema)
    @blp.response(200, FlagSchema)
    @problems(409)
    def post(self, data: dict[str, Any], flag_id: int):
        """Block the worker at once, from the flag's project or from all work, optionally until a time: their
        live leases there end, their answers there are excluded and their items reopened for other workers."""
        flag = block_flagged(db_session(), flag_id=flag_id, actor=current_account(), scope=data["scope"],
                             reason=data["reason"], expires_at=data["expires_at"], now=clock())
        return _flag_body(flag)


@blp.route("/flags/<int:flag_id>/unblock")
class Unblock(MethodView):
    @requires(*OPS)
    @blp.arguments(FlagNoteSchema)
    @blp.response(200, FlagSchema)
    @problems(409)
    def post(self, data: dict[str, Any], flag_id: int):
        """Lift the block: the worker's excluded answers count again; the flag returns to open."""
        return _flag_body(unblock_flagged(db_session(), flag_id=flag_id, actor=current_account(),
                                          reason=data["reason"], now=clock()))


@blp.route("/flags/<int:flag_id>/dismiss")
class Dismiss(MethodView):
    @requires(*OPS)
    @blp.arguments(FlagNoteSchema)
    @blp.response(200, FlagSchema)
    @problems(409)
    def post(self, data: dict[str, Any], flag_id: int):
        """Close an open flag without action."""
        return _flag_body(flags.dismiss(db_session(), flag_id=flag_id, actor=current_account(),
                                        reason=data["reason"], now=clock()))


@blp.route("/gold-pools")
class GoldPools(MethodView):
    @requires(*OPS)
    @blp.response(200, GoldPoolListSchema)
    def get(self):
        """Warnings: projects where workers have had every gold HIT, so gold no longer checks them; with the
        number of workers affected. Importing more gold items into the project clears them."""
        return {"data": [vars(p) for p in exhausted_gold_pools(db_session())]}


@blp.route("/workers/<int:worker_id>/quality")
class WorkerQuality(MethodView):
    @requires(*OPS)
    @blp.response(200, WorkerQualityListSchema)
    def get(self, worker_id: int):
        """A worker's quality in every project they worked in, then overall (project_id null)."""
        session = db_session()
        worker = session.get(Account, worker_id)
        if worker is None or worker.role != Role.WORKER:
            raise NotFound(f"Worker {worker_id} not found.")
        return {"data": [vars(r) for r in scoring.worker_records(session, worker_id)], "next_after": None}


def _dispute_bodies(rows: list[GoldDispute], rescored: int = 0) -> list[dict[str, Any]]:
    """The bodies of these disputes, their items and answers loaded for them all at once (a fixed number of
    queries whatever the page's length, tests/test_list_queries.py)."""
    details = disputes.dispute_details(db_session(), rows)
    bodies = []
    for dispute in rows:
        detail = details[dispute.id]
        item = detail.item
        body = {k: getattr(dispute, k) for k in ("id", "project_id", "worker_id", "assignment_id", "note",
                                                 "created_at", "resolved_by_id", "resolved_at", "resolution")}
        body.update(state=dispute.state.value, answer=detail.answer, rescored=rescored, item={
            "id": item.id, "external_id": item.external_id, "data": item.data, "gold": item.gold_answer,
            "explanation": item.gold_explanation, "retired_at": item.gold_retired_at,
            "answers": detail.answers, "correct": detail.correct})
        bodies.append(body)
    return bodies


def _dispute_body(dispute: GoldDispute, rescored: int = 0) -> dict[str, Any]:
    return _dispute_bodies([dispute], rescored)[0]


@blp.route("/disputes")
class GoldDisputes(MethodView):
    @requires(*OPS)
    @blp.arguments(DisputeQuerySchema, location="query")
    @blp.response(200, DisputeListSchema)
    def get(self, args: dict[str, Any]):
        """Contested gold items, oldest first, with the item, its known answer and how often workers matched it."""
        rows = disputes.list_disputes(db_session(), after=args.get("after"), limit=args["limit"],
                                      state=DisputeState(args["state"]) if "state" in args else None,
                                      worker_id=args.get("worker_id"), project_id=args.get("project_id"))
        return page(_dispute_bodies(rows), args["limit"])


@blp.route("/disputes/<int:dispute_id>")
class GoldDisputeDetail(MethodView):
    @requires(*OPS)
    @blp.response(200, DisputeSchema)
    def get(self, dispute_id: int):
        """One dispute."""
        return _dispute_body(disputes.get_dispute(db_session(), dispute_id))


@blp.route("/disputes/<int:dispute_id>/correct", methods=["POST"])
@requires(*OPS)
@blp.arguments(DisputeCorrectSchema)
@blp.response(200, DisputeSchema)
@problems(409)
def correct_dispute(data: dict[str, Any], dispute_id: int):
    """The worker is right: fix the known answer (and explanation); every answer to the item is re-scored and the
    workers' accuracy recomputed. Settles every open dispute of the item."""
    dispute, rescored = disputes.correct(db_session(), dispute_id=dispute_id, actor=current_account(),
                                         gold=data["gold"], explanation=data.get("explanation"), note=data["note"],
                                         now=clock())
    return _dispute_body(dispute, rescored)


@blp.route("/disputes/<int:dispute_id>/retire", methods=["POST"])
@requires(*OPS)
@blp.arguments(DisputeNoteSchema)
@blp.response(200, DisputeSchema)
@problems(409)
def retire_dispute(data: dict[str, Any], dispute_id: int):
    """The item is ambiguous: retire it from gold; it is never served again and counts toward nobody's
    accuracy. Settles every open dispute of the item."""
    dispute, rescored = disputes.retire(db_session(), dispute_id=dispute_id, actor=current_account(),
                                        note=data["note"], now=clock())
    return _dispute_body(dispute, rescored)


@blp.route("/disputes/<int:dispute_id>/reject", methods=["POST"])
@requires(*OPS)
@blp.arguments(DisputeNoteSchema)
@blp.response(200, DisputeSchema)
@problems(409)
def reject_dispute(data: dict[str, Any], dispute_id: int):
    """The known answer stands."""
    return _dispute_body(disputes.reject(db_session(), dispute_id=dispute_id, actor=current_account(),
                                         note=data["note"], now=clock()))


READ, WRITE = (Role.REQUESTER, Role.OPS), (Role.REQUESTER,)


def _project(project_id: int, *, write: bool = False) -> Project:
    return get_project(db_session(), project_id=project_id, account=current_account(), write=write)


# Requesters: their projects' workers and gold items (the catalogue's /projects paths, this room's rules).
projects_blp = Blueprint("project-quality", __name__, url_prefix="/api/v1/projects", doc_tag="projects")


@projects_blp.route("/<int:project_id>/workers")
class ProjectWorkers(MethodView):
    @requires(*READ)
    @projects_blp.arguments(PageQuerySchema, location="query")
    @projects_blp.response(200, WorkerQualityListSchema)
    def get(self, args: dict[str, Any], project_id: int):
        """Each worker's quality in this project: gold accuracy with its 95% interval, rolling accuracy, time
        per task, too-fast answers, agreement with the other workers. Paged by worker id."""
        project = _project(project_id)
        rows = scoring.project_records(db_session(), project.id, after=args.get("after"), limit=args["limit"])
        return page([vars(r) for r in rows], args["limit"], key="worker_id")


@projects_blp.route("/<int:project_id>/items/<int:item_id>")
class GoldCorrection(MethodView):
    @requires(*WRITE)
    @projects_blp.arguments(GoldCorrectionSchema)
    @projects_blp.response(200, RequesterItemSchema)
    @problems(409)
    def patch(self, data: dict[str, Any], project_id: int, item_id: int):
        """Correct a gold item's known answer: every answer to it is re-scored, its workers' accuracy recomputed
        and its open disputes settled."""
        item, _ = disputes.correct_item(db_session(), project=_project(project_id, write=True), item_id=item_id,
                                        actor=current_account(), gold=data["gold"],
                                        explanation=data.get("explanation"), now=clock())
        return item


# Crowd workers: contesting gold answers.
workers_blp = Blueprint("disputes", __name__, url_prefix="/api/v1", doc_tag="work")
WORKER = (Role.WORKER,)


def present_dispute(d: Any) -> dict[str, Any]:
    """A dispute as its worker sees it (WorkerDisputeSchema's input), for the API and the work page."""
    return {k: getattr(d, k) for k in ("id", "assignment_id", "note", "created_at", "resolved_at", "resolution")} | {
        "state": d.state.value, "item_id": item_ids().public(d.item_id)}


@workers_blp.route("/assignments/<int:assignment_id>/disputes")
class Disputes(MethodView):
    @requires(*WORKER)
    @workers_blp.arguments(DisputeCreateSchema)
    @workers_blp.response(201, WorkerDisputeSchema)
    @workers_blp.alt_response(200, schema=WorkerDisputeSchema, description="You contested this answer already.")
    @problems(409)
    def post(self, data: dict[str, Any], assignment_id: int):
        """Contest an answer the feedback showed as wrong, with a note for the reviewers."""
        item_id = item_ids().item_id(data["item_id"])
        if item_id is None:
            raise InvalidInput("No such item.", errors={"item_id": ["is not an item of this assignment"]})
        dispute, created = disputes.open_dispute(db_session(), worker=current_account(), assignment_id=assignment_id,
                                                 item_id=item_id, note=data["note"], now=clock())
        return present_dispute(dispute), 201 if created else 200


@workers_blp.route("/disputes")
class MyDisputes(MethodView):
    @requires(*WORKER)
    @workers_blp.arguments(PageQuerySchema, location="query")
    @workers_blp.response(200, WorkerDisputeListSchema)
    def get(self, args: dict[str, Any]):
        """Your disputes and how they were decided."""
        rows = disputes.list_disputes(db_session(), after=args.get("after"), limit=args["limit"],
                                      worker_id=current_account().id)
        return page([present_dispute(d) for d in rows], args["limit"])


BLUEPRINTS = (blp, projects_blp, workers_blp)
