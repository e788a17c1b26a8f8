"""Aggregation request and response schemas (the HTTP edge; OpenAPI is generated from them)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from aggregation.engine import METHOD_NAMES, METHODS
from market.edge import PageQuerySchema, Text

_METHODS_DOC = "; ".join(f"{k}: {v}" for k, v in METHOD_NAMES.items())


class RunCreateSchema(Schema):
    method = Text(required=True, validate=validate.OneOf(METHODS), metadata={"description": _METHODS_DOC})
    seed = fields.Integer(validate=validate.Range(0, 2**31 - 1),
                          metadata={"description": "Seeds majority vote's tie-break (default 0)."})
    max_iter = fields.Integer(validate=validate.Range(1, 10_000),
                              metadata={"description": "Dawid–Skene: most EM iterations (default 100)."})
    tol = fields.Float(validate=validate.Range(0, 1),
                       metadata={"description": "Dawid–Skene: stop once no posterior moves more (default 1e-5)."})
    smoothing = fields.Float(validate=validate.Range(1e-9, 100, min_inclusive=True),
                             metadata={"description": "Dawid–Skene: added to every count (default 0.01)."})


class RunSchema(Schema):
    id = fields.Integer()
    project_id = fields.Integer()
    method = fields.String()
    params = fields.Dict()
    status = fields.String(metadata={"description": "queued, running, succeeded or failed"})
    error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    classes = fields.List(fields.Raw(), allow_none=True)
    answers = fields.Integer(allow_none=True)
    items = fields.Integer(allow_none=True)
    workers = fields.Integer(allow_none=True)
    gold_items = fields.Integer(allow_none=True, metadata={
        "description": "Gold items with answers: anchors for ds-gold, a check for the other methods."})
    gold_accuracy = fields.Float(allow_none=True, metadata={
        "description": "Share of gold items the run labelled with the known answer (null for ds-gold)."})
    iterations = fields.Integer(allow_none=True)
    seconds = fields.Float(allow_none=True)
    priors = fields.List(fields.Float(), allow_none=True)


class RunListSchema(Schema):
    data = fields.List(fields.Nested(RunSchema))
    next_after = fields.Integer(allow_none=True)


class LabelQuerySchema(PageQuerySchema):
    gold = fields.Boolean(metadata={"description": "true: gold items only; false: the others; absent: all."})


class LabelSchema(Schema):
    item_id = fields.Integer()
    external_id = fields.String()
    label = fields.Raw()
    confidence = fields.Float()
    answers = fields.Integer()
    is_gold = fields.Boolean()
    tie = fields.Boolean(metadata={"description": "Majority votes: the top count was shared; a seeded RNG chose."})


class LabelListSchema(Schema):
    data = fields.List(fields.Nested(LabelSchema))
    next_after = fields.Integer(allow_none=True)


class RunWorkerSchema(Schema):
    worker_id = fields.Integer()
    answers = fields.Integer()
    accuracy = fields.Float(metadata={"description": "Dawid–Skene's estimate, or agreement with the run's labels."})
    confusion = fields.List(fields.List(fields.Float()), allow_none=True,
                            metadata={"description": "Dawid–Skene: true class x given label, rows sum to 1."})


class RunWorkerListSchema(Schema):
    data = fields.List(fields.Nested(RunWorkerSchema))
    next_after = fields.Integer(allow_none=True)


class LabelExportQuerySchema(Schema):
    format = Text(load_default="csv", validate=validate.OneOf(("csv", "jsonl")))
    gold = fields.Boolean(load_default=False, metadata={
        "description": "Export the gold items' labels instead of the items to label."})
