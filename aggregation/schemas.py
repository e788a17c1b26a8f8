"""Aggregation request and response schemas (the HTTP edge; OpenAPI is generated from them)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from aggregation.engine import METHOD_NAMES, METHODS
from edge.fields import PageQuerySchema, Text

_METHODS_DOC = "; ".join(f"{k}: {v}" for k, v in METHOD_NAMES.items())


class RunCreateSchema(Schema):
    method = Text(required=True, validate=validate.OneOf(METHODS), metadata={"description": _METHODS_DOC})
    seed = fields.Integer(validate=validate.Range(0, 2**31 - 1),
                          metadata={"description": "Seeds majority vote's tie-break (default 0)."})
    max_iter = fields.Integer(validate=validate.Range(1, 10_000),
                              metadata={"description": "Dawid–Skene: most EM iterations (default 100)."})
    tol = fields.Float(validate=validate.Range(0, 1), metadata={
        "description": "Dawid–Skene: converged once the log-likelihood per answer (with the prior's log density) "
                       "changes by less (default 1e-6; 0: never)."})
    posterior_tol = fields.Float(validate=validate.Range(0, 1), metadata={
        "description": "Dawid–Skene, a second guard: converged once no posterior moves by more (default 1e-5; 0: "
                       "never)."})
    prior_correct = fields.Float(validate=validate.Range(0, 1_000), metadata={
        "description": "Dawid–Skene's Dirichlet prior: pseudo-count on each confusion row's diagonal, the worker "
                       "giving the true class (default 0.5)."})
    prior_wrong = fields.Float(validate=validate.Range(0, 1_000, min_inclusive=False), metadata={
        "description": "… on each other entry of a confusion row (default 0.01)."})
    prior_classes = fields.Float(validate=validate.Range(0, 1_000, min_inclusive=False), metadata={
        "description": "… on each class's prior (default 1)."})


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
    stop_reason = fields.String(allow_none=True, metadata={
        "description": "Dawid–Skene: converged (tol or posterior_tol met) or max_iter (stopped there, not "
                       "converged); null for the other methods."})
    log_likelihood = fields.Float(allow_none=True, metadata={
        "description": "Dawid–Skene: the objective EM climbs when it stopped, per answer: the log-likelihood of "
                       "the answers plus the prior's log density."})
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


class ReportQuerySchema(Schema):
    aggregation = fields.Integer(validate=validate.Range(1, 2**31 - 1), metadata={
        "description": "The run whose labels the report shows (default: the latest that succeeded)."})


class _RunSummarySchema(Schema):
    id = fields.Integer()
    method = fields.String()
    finished_at = fields.String()
    items = fields.Integer()
    gold_items = fields.Integer()
    gold_accuracy = fields.Float(allow_none=True)


class _CategoryAgreementSchema(Schema):
    label = fields.Raw()
    alpha = fields.Float(allow_none=True)
    fleiss_kappa = fields.Float(allow_none=True)


class _AgreementSchema(Schema):
    krippendorff_alpha = fields.Float(allow_none=True, metadata={
        "description": "Nominal, over every answer to the items to label (missing answers allowed)."})
    units = fields.Integer()
    pairable = fields.Integer()
    fleiss_kappa = fields.Float(allow_none=True, metadata={
        "description": "Over the items with exactly fleiss_raters answers."})
    fleiss_items = fields.Integer()
    fleiss_raters = fields.Integer()
    per_category = fields.List(fields.Nested(_CategoryAgreementSchema))


class _ReportWorkerSchema(Schema):
    worker_id = fields.Integer()
    answers = fields.Integer()
    gold_seen = fields.Integer()
    gold_correct = fields.Integer()
    gold_accuracy = fields.Float(allow_none=True)
    gold_interval = fields.List(fields.Float(), allow_none=True, metadata={"description": "Wilson 95%"})
    ds_accuracy = fields.Float(allow_none=True)
    agreement = fields.Float(allow_none=True, metadata={"description": "With the other workers' majority."})
    agreement_counted = fields.Integer()
    median_ms = fields.Integer(allow_none=True)
    fast_answers = fields.Integer()


class _MissSchema(Schema):
    known = fields.Raw()
    given = fields.Raw()
    count = fields.Integer()


class _GoldErrorsSchema(Schema):
    labels = fields.List(fields.Raw())
    matrix = fields.List(fields.List(fields.Integer()), metadata={"description": "known answer x given answer"})
    answers = fields.Integer()
    correct = fields.Integer()
    misses = fields.List(fields.Nested(_MissSchema))


class _SuspectSchema(Schema):
    item_id = fields.Integer()
    external_id = fields.String()
    known = fields.Raw(metadata={"description": "The gold item's known answer."})
    crowd = fields.Raw(metadata={"description": "The label a strict majority of the answers chose instead."})
    answers = fields.Integer()
    crowd_share = fields.Float()
    known_share = fields.Float()


class _CoverageSchema(Schema):
    batch_id = fields.Integer()
    name = fields.String()
    assignments_per_item = fields.Integer()
    items = fields.Integer()
    items_below = fields.Integer()
    answers_missing = fields.Integer()


class _GuidelineUseSchema(Schema):
    version = fields.Integer()
    answers = fields.Integer()
    workers = fields.Integer()
    created_at = fields.String(allow_none=True)
    current = fields.Boolean()


class _DistributionSchema(Schema):
    label = fields.Raw()
    answers = fields.Integer()
    share = fields.Float(allow_none=True)
    aggregated = fields.Integer(allow_none=True)


class _ProjectSummarySchema(Schema):
    id = fields.Integer()
    title = fields.String()
    label_type = fields.String()
    classes = fields.List(fields.Raw())
    assignments_per_item = fields.Integer()
    guideline_version = fields.Integer()


class _TotalsSchema(Schema):
    answers = fields.Integer()
    answers_excluded = fields.Integer()
    items = fields.Integer()
    items_answered = fields.Integer()
    gold_items_answered = fields.Integer()
    workers = fields.Integer()


class ReportSchema(Schema):
    project = fields.Nested(_ProjectSummarySchema)
    generated_at = fields.String()
    aggregation = fields.Nested(_RunSummarySchema, allow_none=True)
    ds_aggregation = fields.Nested(_RunSummarySchema, allow_none=True)
    totals = fields.Nested(_TotalsSchema)
    agreement = fields.Nested(_AgreementSchema)
    workers = fields.List(fields.Nested(_ReportWorkerSchema))
    gold_errors = fields.Nested(_GoldErrorsSchema)
    gold_suspects = fields.List(fields.Nested(_SuspectSchema), metadata={
        "description": "Gold items (3+ answers) where a strict majority chose another label: check their known "
                       "answers (at most 100, least supported first)."})
    coverage = fields.List(fields.Nested(_CoverageSchema))
    guidelines = fields.List(fields.Nested(_GuidelineUseSchema))
    label_distribution = fields.List(fields.Nested(_DistributionSchema))


class ReportLinkSchema(Schema):
    url = fields.String(metadata={"description": "Opens the report as a web page; no token needed, until it expires."})
    expires_at = fields.DateTime()
