"""Requester JSON API: a batch's pay (times, hourly rate against target and floor, top-ups, hold)."""

from __future__ import annotations

from flask.views import MethodView
from marshmallow import Schema, fields

from base.identity import Role
from edge.auth import current_account, requires
from edge.blueprint import Blueprint
from edge.fields import MoneySchema, Text
from edge.request import db_session
from market.catalogue.batches import get_batch
from market.catalogue.projects import get_project
from payments.wage.report import batch_pay

blp = Blueprint("wage", __name__, url_prefix="/api/v1/projects", doc_tag="projects")


class BatchHourlyRateSchema(MoneySchema):
    basis = Text(metadata={"description": "measured (median of per-HIT medians, 10+ submissions) or estimated "
                                          "(the requester's estimate)."})


class BatchHoldSchema(Schema):
    state = Text()
    held = fields.Nested(MoneySchema)
    posted = fields.Nested(MoneySchema)
    released = fields.Nested(MoneySchema)
    remaining = fields.Nested(MoneySchema)
    detail = fields.Dict(allow_none=True, metadata={"description": "How the maximum cost was reckoned."})


class PayWarningSchema(Schema):
    code = Text(metadata={"description": "below_target or below_floor."})
    message = Text()


class BatchPaySchema(Schema):
    batch_id = fields.Integer()
    reward = fields.Nested(MoneySchema)
    estimated_seconds = fields.Integer(allow_none=True, metadata={"description": "Your estimate."})
    measured_seconds = fields.Float(allow_none=True, metadata={
        "description": "Median of per-HIT median working times, once 10 submissions exist."})
    effective_hourly_rate = fields.Nested(BatchHourlyRateSchema, allow_none=True)
    target_wage = fields.Nested(MoneySchema, metadata={
        "description": "Per hour: what work is topped up to (the floor when auto_top_up is off)."})
    requested_target_wage = fields.Nested(MoneySchema)
    wage_floor = fields.Nested(MoneySchema)
    auto_top_up = fields.Boolean()
    top_ups_paid = fields.Nested(MoneySchema)
    top_up_assignments = fields.Integer()
    hold = fields.Nested(BatchHoldSchema, allow_none=True)
    warnings = fields.List(fields.Nested(PayWarningSchema))


@blp.route("/<int:project_id>/batches/<int:batch_id>/pay")
class BatchPay(MethodView):
    @requires(Role.REQUESTER, Role.OPS)
    @blp.response(200, BatchPaySchema)
    def get(self, project_id: int, batch_id: int):
        """A batch's pay: estimated and measured time, effective hourly rate, target, floor, top-ups, hold."""
        session = db_session()
        project = get_project(session, project_id=project_id, account=current_account())
        return batch_pay(session, batch=get_batch(session, project=project, batch_id=batch_id))
