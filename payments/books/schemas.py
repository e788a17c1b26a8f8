"""Marshmallow schemas of the books' API: funding, balances, transactions, payouts, reconciliation, reports."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from edge.fields import FullMatch, MoneySchema, PageQuerySchema, Text
from payments.models import PayoutBatchStatus, PayoutLineStatus, TransactionKind

CURRENCY = FullMatch("[A-Z]{3}", error="an ISO 4217 code like USD")


def Money(**kwargs):  # noqa: N802 - reads like a field class
    return fields.Nested(MoneySchema, **kwargs)


class FundSchema(Schema):
    cents = fields.Integer(required=True, strict=True, validate=validate.Range(1, 10**12),
                           metadata={"description": "Integer cents to credit; never a float."})
    currency = Text(load_default="USD", validate=CURRENCY)
    reason = Text(load_default="", validate=validate.Length(max=1000))


class LegSchema(Schema):
    account = fields.String(required=True)
    cents = fields.Integer(required=True)


class TransactionSchema(Schema):
    id = fields.Integer(required=True)
    idempotency_key = fields.String(required=True)
    kind = fields.Enum(TransactionKind, by_value=True, required=True)
    currency = fields.String(required=True)
    reverses_id = fields.Integer(allow_none=True)
    requester_id = fields.Integer(allow_none=True)
    worker_id = fields.Integer(allow_none=True)
    project_id = fields.Integer(allow_none=True)
    batch_id = fields.Integer(allow_none=True)
    assignment_id = fields.Integer(allow_none=True)
    payout_id = fields.Integer(allow_none=True)
    actor_id = fields.Integer(allow_none=True)
    reason = fields.String()
    created_at = fields.DateTime(required=True)
    legs = fields.List(fields.Nested(LegSchema), required=True)


class TransactionListSchema(Schema):
    data = fields.List(fields.Nested(TransactionSchema), required=True)
    next_after = fields.Integer(allow_none=True, required=True)


class TransactionQuerySchema(PageQuerySchema):
    kind = fields.Enum(TransactionKind, by_value=True)
    requester_id = fields.Integer(validate=validate.Range(1, 2**31 - 1))
    worker_id = fields.Integer(validate=validate.Range(1, 2**31 - 1))
    batch_id = fields.Integer(validate=validate.Range(1, 2**31 - 1))


class ReverseSchema(Schema):
    reason = Text(required=True, validate=validate.Length(1, 1000))


class HoldSchema(Schema):
    batch_id = fields.Integer(required=True)
    currency = fields.String(required=True)
    held = Money(required=True)
    posted = Money(required=True)
    released = Money(required=True)
    remaining = Money(required=True)
    created_at = fields.DateTime(required=True)


class CurrencyBalanceSchema(Schema):
    currency = fields.String(required=True)
    available = Money()
    escrow = Money()
    payable = Money()
    paid_out = Money()


class BalancesSchema(Schema):
    account_id = fields.Integer(required=True)
    role = fields.String()
    balances = fields.List(fields.Nested(CurrencyBalanceSchema), required=True)
    holds = fields.List(fields.Nested(HoldSchema))


class ReconcileCurrencySchema(Schema):
    paid_out = fields.Integer(required=True)
    payout_lines_paid = fields.Integer(required=True)
    escrow = fields.Integer(required=True)
    open_holds_remaining = fields.Integer(required=True)
    worker_money = fields.Integer(required=True)
    totals = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    problems = fields.List(fields.String(), required=True)


class ReconcileSchema(Schema):
    ok = fields.Boolean(required=True)
    problems = fields.List(fields.String(), required=True)
    currencies = fields.Dict(keys=fields.String(), values=fields.Nested(ReconcileCurrencySchema), required=True)


class PayoutCreateSchema(Schema):
    currency = Text(load_default="USD", validate=CURRENCY)
    period_end = fields.AwareDateTime(required=True, default_timezone=None)
    minimum_cents = fields.Integer(load_default=0, strict=True, validate=validate.Range(0, 2**31 - 1))
    provider = Text(load_default="manual", validate=validate.Length(1, 40))


class PayoutLineSchema(Schema):
    id = fields.Integer(required=True)
    worker_id = fields.Integer(required=True)
    amount = Money(required=True)
    status = fields.Enum(PayoutLineStatus, by_value=True, required=True)
    hold_reason = fields.String(allow_none=True)
    transaction_id = fields.Integer(allow_none=True)
    external_reference = fields.String(allow_none=True)
    paid_at = fields.DateTime(allow_none=True)


class PayoutBatchSchema(Schema):
    id = fields.Integer(required=True)
    currency = fields.String(required=True)
    period_end = fields.DateTime(required=True)
    minimum = Money(required=True)
    provider = fields.String(required=True)
    status = fields.Enum(PayoutBatchStatus, by_value=True, required=True)
    created_by_id = fields.Integer(required=True)
    approved_by_id = fields.Integer(allow_none=True)
    created_at = fields.DateTime(required=True)
    approved_at = fields.DateTime(allow_none=True)
    paid_at = fields.DateTime(allow_none=True)
    summary = fields.Dict(keys=fields.String(), values=fields.Dict(keys=fields.String(), values=fields.Integer()))
    lines = fields.List(fields.Nested(PayoutLineSchema))


class PayoutBatchListSchema(Schema):
    data = fields.List(fields.Nested(PayoutBatchSchema), required=True)
    next_after = fields.Integer(allow_none=True, required=True)


class PayoutQuerySchema(PageQuerySchema):
    status = fields.Enum(PayoutBatchStatus, by_value=True)


class ReferenceSchema(Schema):
    reference = Text(required=True, validate=validate.Length(1, 200))


class FailSchema(Schema):
    reason = Text(load_default="", validate=validate.Length(max=1000))


class ReportQuerySchema(Schema):
    format = fields.String(validate=validate.OneOf(["json", "csv"]),
                           metadata={"description": "json (default) or csv; `Accept: text/csv` also asks for CSV."})


class EarningsRowSchema(Schema):
    day = fields.String(required=True)
    project_id = fields.Integer(allow_none=True)
    project_title = fields.String(allow_none=True)
    currency = fields.String(required=True)
    rewards = Money(required=True)
    bonuses = Money(required=True)
    assignments = fields.Integer(required=True)
    duration_ms = fields.Integer(required=True)
    hours = fields.String(required=True, metadata={"description": "Decimal hours, 4 places."})
    hourly_rate = Money(allow_none=True, metadata={"description": "(rewards + bonuses) per hour, half up."})


class EarningsSchema(Schema):
    worker_id = fields.Integer(required=True)
    data = fields.List(fields.Nested(EarningsRowSchema), required=True)


class SpendRowSchema(Schema):
    project_id = fields.Integer(allow_none=True)
    project_title = fields.String(allow_none=True)
    batch_id = fields.Integer(allow_none=True)
    batch_name = fields.String(allow_none=True)
    currency = fields.String(required=True)
    rewards = Money(required=True)
    bonuses = Money(required=True)
    fees = Money(required=True)
    total = Money(required=True)
    held = Money(required=True)
    posted = Money(required=True)
    released = Money(required=True)
    remaining = Money(required=True)


class SpendSchema(Schema):
    requester_id = fields.Integer(required=True)
    data = fields.List(fields.Nested(SpendRowSchema), required=True)
