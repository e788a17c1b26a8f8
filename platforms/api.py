"""Requester JSON API: burst part of a batch to another crowd, follow it, sync it, cancel it, read its job log."""

from __future__ import annotations

import secrets
from typing import Any

from flask import current_app
from flask.views import MethodView
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from base.errors import NotFound
from base.identity import Role
from edge import jobs
from edge.auth import current_account, requires
from edge.blueprint import Blueprint, idempotency_doc, idempotency_key
from edge.fields import Text
from edge.openapi import problems
from edge.request import clock, db_session
from market.catalogue.batches import get_batch
from market.catalogue.projects import get_project
from platforms import burst as bursts
from platforms import jobs as platform_jobs
from platforms import registry, service
from platforms.models import PlatformBatch, PlatformTask

blp = Blueprint("bursts", __name__, url_prefix="/api/v1", doc_tag="bursts",
                description="Burst part of a batch to another crowd (platforms/).")

READ = (Role.REQUESTER, Role.OPS)


class BurstCreateSchema(Schema):
    platform = fields.String(required=True, validate=validate.OneOf(sorted(registry.PLATFORMS)))
    hits = fields.Integer(required=True, validate=validate.Range(1, bursts.MAX_HITS),
                          metadata={"description": "How many of the batch's HITs (most free places first)."})
    split = fields.Boolean(load_default=False, metadata={
        "description": "Keep each platform task under the platform's large-task fee threshold (MTurk: at most 9 "
                       "assignments per HIT)."})


class EstimateQuerySchema(Schema):
    platform = fields.String(required=True, validate=validate.OneOf(sorted(registry.PLATFORMS)))
    hits = fields.Integer(required=True, validate=validate.Range(1, bursts.MAX_HITS))
    split = fields.Boolean(load_default=False)


class EstimateSchema(Schema):
    platform = Text()
    hits = fields.Integer()
    places = fields.Integer(metadata={"description": "Real places moved from the batch."})
    gold_tasks = fields.Integer(metadata={"description": "Gold tasks served among them."})
    tasks = fields.Integer(metadata={"description": "What the platform is asked for: places + gold."})
    redundancy = fields.Integer()
    per_platform_task = fields.Integer(metadata={"description": "Assignments per platform task."})
    split = fields.Boolean()
    fee_rate = Text(metadata={"description": "The platform's fee on rewards, as it applies."})
    bonus_fee_rate = Text()
    per_task_cents = fields.Integer(metadata={"description": "Reward + fee per task."})
    total_cents = fields.Integer(metadata={"description": "Held in escrow: rewards, fees, top-up headroom."})
    currency = Text()
    warnings = fields.List(Text())


class PlatformTaskSchema(Schema):
    external_id = Text()
    group_id = Text(allow_none=True)
    max_assignments = fields.Integer()
    reward_cents = fields.Integer()
    expires_at = fields.DateTime(allow_none=True)
    ended_at = fields.DateTime(allow_none=True)


class BurstSchema(Schema):
    id = fields.Integer()
    platform = Text()
    batch_id = fields.Integer(metadata={"description": "The batch burst from."})
    burst_batch_id = fields.Integer(metadata={"description": "The burst's own batch (its places and pay)."})
    status = Text(metadata={"description": "publishing, open, cancelling or closed."})
    hits = fields.Integer()
    places = fields.Integer()
    tasks = fields.Integer()
    places_left = fields.Integer()
    platform_tasks = fields.List(fields.Nested(PlatformTaskSchema))
    submissions = fields.Integer()
    mirrored = fields.Integer()
    pending = fields.Integer()
    problems = fields.Integer()
    bonus_cents = fields.Integer()
    failed_calls = fields.Integer()
    last_error = Text(allow_none=True)
    estimate = fields.Nested(EstimateSchema)
    published_at = fields.DateTime(allow_none=True)
    synced_at = fields.DateTime(allow_none=True)
    closed_at = fields.DateTime(allow_none=True)


class BurstListSchema(Schema):
    data = fields.List(fields.Nested(BurstSchema))


class CallSchema(Schema):
    id = fields.Integer()
    job = Text()
    operation = Text()
    idempotency_key = Text(allow_none=True)
    target = Text(allow_none=True)
    attempts = fields.Integer()
    outcome = Text()
    error = Text(allow_none=True)
    retried_errors = fields.List(Text())
    ms = fields.Integer()
    calls = fields.Integer(metadata={"description": "Successful listing pages of one run are one row: how many."})
    last_target = Text(allow_none=True, metadata={"description": "The run's last page's target."})
    at = fields.DateTime()


class CallListSchema(Schema):
    data = fields.List(fields.Nested(CallSchema))


def _body(burst: PlatformBatch) -> dict[str, Any]:
    session = db_session()
    (row,) = service.status(session, burst_id=burst.id)
    tasks = list(session.scalars(select(PlatformTask).where(PlatformTask.platform_batch_id == burst.id)
                                 .order_by(PlatformTask.id)))
    return {**row, "platform_tasks": tasks, "estimate": burst.estimate}


def _burst(burst_id: int, *, write: bool = False) -> PlatformBatch:
    session = db_session()
    burst = session.get(PlatformBatch, burst_id)
    if burst is None:
        raise NotFound(f"Burst {burst_id} not found.")
    get_project(session, project_id=burst.project_id, account=current_account(), write=write)  # 404 if not theirs
    return burst


@blp.route("/projects/<int:project_id>/batches/<int:batch_id>/bursts")
class Bursts(MethodView):
    @requires(*READ)
    @blp.response(200, BurstListSchema)
    def get(self, project_id: int, batch_id: int):
        """The batch's bursts."""
        session = db_session()
        batch = get_batch(session, project=get_project(session, project_id=project_id, account=current_account()),
                          batch_id=batch_id)
        return {"data": [_body(b) for b in session.scalars(select(PlatformBatch).where(
            PlatformBatch.parent_batch_id == batch.id).order_by(PlatformBatch.id))]}

    @requires(Role.REQUESTER)
    @problems(402, 409)
    @blp.arguments(BurstCreateSchema)
    @blp.response(202, BurstSchema, description="Made here and being published on the platform: follow "
                                                "GET /api/v1/bursts/{id}.")
    @blp.alt_response(200, schema=BurstSchema, description="Replay of an earlier request with the same "
                                                           "Idempotency-Key: its burst.")
    @blp.doc(**idempotency_doc("burst"))
    def post(self, data: dict[str, Any], project_id: int, batch_id: int):
        """Burst `hits` HITs of the batch to a platform: their free places move to the platform (never offered
        here too), the cost under the platform's fees is held in escrow (402 when short), and the platform's
        tasks are published by a job."""
        session = db_session()
        project = get_project(session, project_id=project_id, account=current_account(), write=True)
        batch = get_batch(session, project=project, batch_id=batch_id)
        name = data["platform"]
        crowd = registry.platform(name)
        key = idempotency_key() or f"unkeyed-{secrets.token_hex(16)}"  # without a key, each request is a burst
        burst, created = bursts.create(session, actor=current_account(), batch_id=batch.id, platform=name,
                                       platform_title=crowd.title, fees=registry.fees(name), hits=data["hits"],
                                       split=data["split"], key=key, now=clock())
        platform_jobs.page_url(current_app, burst)  # refuse now (422), not in the job, without a public URL
        if created:
            jobs.after_commit(platform_jobs.publish_now, burst.id)
        return _body(burst), 202 if created else 200, {} if created else {"Idempotent-Replayed": "true"}


@blp.route("/projects/<int:project_id>/batches/<int:batch_id>/bursts/estimate")
class BurstEstimate(MethodView):
    @requires(*READ)
    @problems(409)
    @blp.arguments(EstimateQuerySchema, location="query")
    @blp.response(200, EstimateSchema)
    def get(self, query: dict[str, Any], project_id: int, batch_id: int):
        """What bursting `hits` HITs to `platform` would send and cost under its fees (nothing is made), with
        warnings (MTurk: 10+ assignments per HIT raise its fee; `split` keeps HITs under that)."""
        session = db_session()
        project = get_project(session, project_id=project_id, account=current_account())
        batch = get_batch(session, project=project, batch_id=batch_id)
        name = query["platform"]
        return bursts.estimate(session, batch=batch, project=project, platform=name,
                               platform_title=registry.platform(name).title, fees=registry.fees(name),
                               hits=query["hits"], split=query["split"]).as_json()


@blp.route("/bursts/<int:burst_id>")
class BurstView(MethodView):
    @requires(*READ)
    @blp.response(200, BurstSchema)
    def get(self, burst_id: int):
        """A burst: what is out there, what is in sync, what is not."""
        return _body(_burst(burst_id))


@blp.route("/bursts/<int:burst_id>/cancel")
class BurstCancel(MethodView):
    @requires(Role.REQUESTER)
    @blp.response(202, BurstSchema)
    def post(self, burst_id: int):
        """Cancel: no new workers from now on; the sync ends the platform's tasks and gives the unused places back
        to the batch (work already submitted is still reviewed and paid)."""
        burst = _burst(burst_id, write=True)
        bursts.cancel(db_session(), burst, now=clock())
        jobs.after_commit(platform_jobs.sync_now)
        return _body(burst)


@blp.route("/bursts/<int:burst_id>/calls")
class BurstCalls(MethodView):
    @requires(*READ)
    @blp.response(200, CallListSchema)
    def get(self, burst_id: int):
        """The burst's job log: every call to the platform, newest first, with its key, outcome and retries."""
        return {"data": service.calls(db_session(), _burst(burst_id).id)}
