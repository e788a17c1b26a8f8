"""Marshmallow schemas at the HTTP edge: they validate requests and, through flask-smorest, make the OpenAPI.

One schema per audience: the requester's item view carries gold; worker-facing schemas (later) never do.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from edge.fields import JSON, Fixed, FullMatch, Id, LabelSchemaSchema, PageQuerySchema, Text
from market.catalogue.models import QualityAction
from qualification.schemas import requirements_field


def _gold_rate(value: Decimal) -> None:
    if value != 0 and not Decimal("0.05") <= value <= Decimal("0.10"):
        raise ValidationError("must be 0 (off) or between 0.05 and 0.10")


def _unit(low: str = "0", high: str = "1") -> validate.Range:
    return validate.Range(Decimal(low), Decimal(high))


class ProjectSettingsSchema(Schema):
    reward_cents = fields.Integer(strict=True, validate=validate.Range(0, 1_000_000),
                                  metadata={"description": "Reward per HIT in integer cents; never a float."})
    currency = Text(validate=FullMatch("[A-Z]{3}", error="an ISO 4217 code like USD"))
    items_per_hit = fields.Integer(strict=True, validate=validate.Range(1, 100))
    assignments_per_item = fields.Integer(strict=True, validate=validate.Range(1, 50),
                                          metadata={"description": "Redundancy: workers per item."})
    assignment_duration_seconds = fields.Integer(strict=True, validate=validate.Range(30, 86_400),
                                                 metadata={"description": "How long a worker's lease lasts."})
    lifetime_seconds = fields.Integer(strict=True, validate=validate.Range(60, 365 * 86_400),
                                      metadata={"description": "A batch expires this long after publishing."})
    auto_approval_delay_seconds = fields.Integer(strict=True, validate=validate.Range(0, 30 * 86_400))
    gold_rate = Fixed(3, validate=_gold_rate, metadata={
        "description": "0 = off, else 0.05-0.10 (at most three decimal places).",
        "anyOf": [{"enum": [0]}, {"minimum": 0.05, "maximum": 0.1}]})
    qualification_requirements = requirements_field(metadata={
        "description": "Who may work on batches published from now on: all must be met."})
    min_gold_accuracy = Fixed(2, validate=_unit(), metadata={
        "description": "Accuracy a worker must keep (default 0.90): judged on their gold answers and their "
                       "agreement with the crowd."})
    min_judged_answers = fields.Integer(strict=True, validate=validate.Range(1, 1000), metadata={
        "description": "Answers with a known (gold) or crowd-estimated truth a worker needs before they are "
                       "judged (default 10)."})
    flag_confidence = Fixed(3, validate=_unit("0.5", "0.999"), metadata={
        "description": "A worker is flagged for review when the posterior probability that their accuracy is "
                       "below the minimum reaches this (default 0.90; at most action_confidence)."})
    quality_action = Text(validate=validate.OneOf([a.value for a in QualityAction]), metadata={
        "description": "What happens past action_confidence: flag them for ops review (default) or block them from "
                       "the project at once."})
    action_confidence = Fixed(3, validate=_unit("0.5", "0.999"), metadata={
        "description": "The posterior probability that a worker's accuracy is below the minimum at which "
                       "quality_action is taken (default 0.99)."})
    accuracy_window = fields.Integer(strict=True, validate=validate.Range(1, 1000), metadata={
        "description": "Golds in the rolling accuracy (default 20)."})
    fast_answer_fraction = Fixed(2, validate=_unit(), metadata={
        "description": "A task done in less than this fraction of the project's median time is too fast "
                       "(default 0.25)."})
    gold_feedback = fields.Boolean(metadata={
        "description": "Show workers the correct answer and explanation right after they miss a gold item."})
    estimated_seconds = fields.Integer(strict=True, validate=validate.Range(1, 86_400), metadata={
        "description": "Your estimate of a HIT's working time in whole seconds: required to publish paid work, "
                       "whose reward / estimate must reach the platform's wage floor."})
    target_wage_cents_per_hour = fields.Integer(strict=True, validate=validate.Range(0, 100_000), metadata={
        "description": "The hourly wage (integer cents per hour, default 1500 = $15.00/h) that approved work is "
                       "topped up to once measured times are known."})
    auto_top_up = fields.Boolean(metadata={
        "description": "Top up to the target automatically (default true); off, work is topped up only to the "
                       "platform's wage floor, which is never optional."})
    reject_gold_misses = fields.Boolean(metadata={
        "description": "Let auto-approval reject submitted work that missed a gold item (default false)."})


class ProjectCreateSchema(ProjectSettingsSchema):
    title = Text(required=True, validate=validate.Length(1, 200))
    description = Text(validate=validate.Length(max=20_000))
    instructions = Text(validate=validate.Length(max=200_000),
                                 metadata={"description": "Guidelines in Markdown; each change is a new version."})
    label_schema = fields.Nested(LabelSchemaSchema, required=True)
    reward_cents = fields.Integer(required=True, strict=True, validate=validate.Range(0, 1_000_000),
                                  metadata={"description": "Reward per HIT in integer cents; never a float."})


class ProjectUpdateSchema(ProjectSettingsSchema):
    title = Text(validate=validate.Length(1, 200))
    description = Text(validate=validate.Length(max=20_000))
    instructions = Text(validate=validate.Length(max=200_000))
    label_schema = fields.Nested(LabelSchemaSchema)


class ProjectSchema(Schema):
    id = fields.Integer()
    owner_id = fields.Integer()
    title = Text()
    description = Text()
    instructions = Text()
    guideline_version = fields.Integer()
    label_schema = fields.Dict()
    reward_cents = fields.Integer()
    currency = Text()
    items_per_hit = fields.Integer()
    assignments_per_item = fields.Integer()
    assignment_duration_seconds = fields.Integer()
    lifetime_seconds = fields.Integer()
    auto_approval_delay_seconds = fields.Integer()
    gold_rate = fields.Float()
    qualification_requirements = fields.List(fields.Dict(), allow_none=True, metadata={"description": "null: none."})
    min_gold_accuracy = fields.Float()
    min_judged_answers = fields.Integer()
    flag_confidence = fields.Float()
    quality_action = Text()
    action_confidence = fields.Float()
    accuracy_window = fields.Integer()
    fast_answer_fraction = fields.Float()
    gold_feedback = fields.Boolean()
    estimated_seconds = fields.Integer(allow_none=True)
    target_wage_cents_per_hour = fields.Integer()
    auto_top_up = fields.Boolean()
    reject_gold_misses = fields.Boolean()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class ProjectListSchema(Schema):
    data = fields.List(fields.Nested(ProjectSchema))
    next_after = fields.Integer(allow_none=True)


class GuidelineVersionSchema(Schema):
    version = fields.Integer()
    instructions = Text()
    created_by_id = fields.Integer()
    created_at = fields.DateTime()


class ItemQuerySchema(PageQuerySchema):
    gold = fields.Boolean()
    batch_id = Id()


class RequesterItemSchema(Schema):
    """The requester's view of an item, gold answer included."""

    id = fields.Integer()
    external_id = Text()
    data = fields.Dict()
    is_gold = fields.Boolean()
    gold = fields.Raw(attribute="gold_answer", allow_none=True)
    explanation = Text(attribute="gold_explanation", allow_none=True)
    priority = fields.Integer()
    batch_id = fields.Integer(allow_none=True)
    hit_id = fields.Integer(allow_none=True)
    created_at = fields.DateTime()


class GoldCorrectionSchema(Schema):
    gold = JSON(required=True, allow_none=False, metadata={"description": "The corrected known answer."})
    explanation = Text(validate=validate.Length(max=20_000), allow_none=True,
                       metadata={"description": "Replaces the old one (omit to keep it)."})


class ItemListSchema(Schema):
    data = fields.List(fields.Nested(RequesterItemSchema))
    next_after = fields.Integer(allow_none=True)


class ImportQuerySchema(Schema):
    format = Text(validate=validate.OneOf(("jsonl", "csv")),
                           metadata={"description": "Defaults from the Content-Type or the file name."})


class ImportResultSchema(Schema):
    lines = fields.Integer(metadata={"description": "Non-blank records read."})
    created = fields.Integer()
    skipped = fields.Integer(metadata={"description": "Records whose external_id exists already."})
    gold = fields.Integer(metadata={"description": "Gold items among those created."})


class BatchCreateSchema(Schema):
    class Meta:
        openapi = {"not": {"required": ["item_ids", "external_ids"]}}

    name = Text(load_default="", validate=validate.Length(max=200))
    item_ids = fields.List(Id(strict=True), validate=validate.Length(1, 1_000_000))
    external_ids = fields.List(Text(validate=validate.Length(1, 255)), validate=validate.Length(1, 1_000_000))
    qualification_requirements = requirements_field(metadata={
        "description": "This batch's requirements instead of the project's."})

    @validates_schema
    def _one_selector(self, data: dict[str, Any], **_: Any) -> None:
        if "item_ids" in data and "external_ids" in data:
            raise ValidationError({"external_ids": ["give item_ids or external_ids, not both"]})


class GoldSupplySchema(Schema):
    rate = fields.Float()
    items_needed = fields.Integer()
    items_available = fields.Integer()
    hits_needed = fields.Integer(metadata={
        "description": "Gold HITs the batch's gold tasks use up: each is served to as many workers as a real HIT."})
    hits_available = fields.Integer()
    tasks_left = fields.Integer(metadata={"description": "Gold tasks the pool's HITs can still serve."})
    items_waiting = fields.Integer(metadata={"description": "Gold items too few to fill a HIT yet."})
    workers_exhausted = fields.Integer(metadata={"description": "Workers whose last gold turn found no gold."})
    short_hit = fields.Boolean(metadata={
        "description": "The batch's last HIT is short and was not filled with spare gold."})
    warning = Text(allow_none=True)


class GoldPoolSchema(Schema):
    project_id = fields.Integer()
    title = Text()
    owner_id = fields.Integer()
    workers_exhausted = fields.Integer()
    gold_hits = fields.Integer()
    warning = Text()


class GoldPoolListSchema(Schema):
    data = fields.List(fields.Nested(GoldPoolSchema))


class BatchSchema(Schema):
    id = fields.Integer()
    project_id = fields.Integer()
    name = Text()
    status = Text()
    item_count = fields.Integer()
    hit_count = fields.Integer()
    reward_cents = fields.Integer()
    currency = Text()
    items_per_hit = fields.Integer()
    assignments_per_item = fields.Integer()
    assignment_duration_seconds = fields.Integer()
    auto_approval_delay_seconds = fields.Integer()
    qualification_requirements = fields.List(fields.Dict(), allow_none=True, metadata={"description": "null: none."})
    estimated_seconds = fields.Integer(allow_none=True, metadata={"description": "The requester's estimate."})
    measured_seconds = fields.Float(allow_none=True, metadata={
        "description": "Median of per-HIT median working times (10+ submissions), refreshed by the payments cycle."})
    target_wage_cents_per_hour = fields.Integer()
    wage_floor_cents_per_hour = fields.Integer()
    auto_top_up = fields.Boolean()
    fee_model = Text()
    pay_warnings = fields.List(Text(), metadata={
        "description": "below_target / below_floor: the batch's hourly rate (measured, else estimated) is below the "
                       "target or the platform's floor (top-ups to the floor are paid and cannot be turned off). "
                       "Details: GET .../batches/<id>/pay."})
    gold = fields.Nested(GoldSupplySchema, metadata={
        "description": "The gold this batch needs at the project's gold rate and what the project's pool of the "
                       "batch's shape holds for it."})
    created_at = fields.DateTime()
    expires_at = fields.DateTime()
    status_changed_at = fields.DateTime()


class BatchListSchema(Schema):
    data = fields.List(fields.Nested(BatchSchema))


class AnswerCountSchema(Schema):
    answers = fields.Integer()
    items = fields.Integer()


class ProgressSchema(Schema):
    batch_id = fields.Integer()
    status = Text()
    items = fields.Integer()
    hits = fields.Integer()
    assignments_per_item = fields.Integer()
    answers = fields.Integer()
    items_complete = fields.Integer()
    fraction_complete = fields.Float()
    items_by_answer_count = fields.List(fields.Nested(AnswerCountSchema))
    assignments_by_status = fields.Dict(keys=Text(), values=fields.Integer())


class AnswerQuerySchema(PageQuerySchema):
    batch_id = Id()
    worker_id = Id()
    item_id = Id()


class ExportQuerySchema(Schema):
    format = Text(load_default="csv", validate=validate.OneOf(("csv", "jsonl")))
    batch_id = Id()


class AnswerSchema(Schema):
    answer_id = fields.Integer()
    assignment_id = fields.Integer()
    worker_id = fields.Integer()
    item_id = fields.Integer()
    external_id = Text()
    is_gold = fields.Boolean()
    answer = fields.Raw()
    submitted_at = fields.DateTime()
    duration_ms = fields.Integer()
    guideline_version = fields.Integer()


class AnswerListSchema(Schema):
    data = fields.List(fields.Nested(AnswerSchema))
    next_after = fields.Integer(allow_none=True)


class PriorityEntrySchema(Schema):
    class Meta:
        openapi = {"oneOf": [{"required": ["item_id"]}, {"required": ["external_id"]}]}

    item_id = Id(strict=True)
    external_id = Text(validate=validate.Length(1, 255))
    priority = fields.Integer(required=True, strict=True, validate=validate.Range(-1_000_000, 1_000_000))

    @validates_schema
    def _one_key(self, data: dict[str, Any], **_: Any) -> None:
        if ("item_id" in data) == ("external_id" in data):
            raise ValidationError({"item_id": ["give exactly one of item_id or external_id"]})


class PrioritySchema(Schema):
    items = fields.List(fields.Nested(PriorityEntrySchema), required=True, validate=validate.Length(1, 100_000))


class PriorityResultSchema(Schema):
    updated = fields.Integer()
