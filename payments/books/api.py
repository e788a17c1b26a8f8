"""The books' JSON API: funding and balances (ledger), payout batches (payouts), earnings and spend (reports)."""

from __future__ import annotations

from typing import Any

from flask import Response, request
from flask.views import MethodView

from base.errors import InvalidInput
from base.identity import Role
from edge.auth import current_account, requires
from edge.blueprint import Blueprint, idempotency_doc, idempotency_key, page, streamed
from edge.fields import money
from edge.openapi import download_doc, problems
from edge.request import clock, db_session
from payments.books import balances, export, payouts, reports
from payments.books.reconcile import reconcile
from payments.books.schemas import (
    BalancesSchema,
    EarningsSchema,
    FailSchema,
    FundSchema,
    PayoutBatchListSchema,
    PayoutBatchSchema,
    PayoutCreateSchema,
    PayoutLineSchema,
    PayoutQuerySchema,
    ReconcileSchema,
    ReferenceSchema,
    ReportQuerySchema,
    ReverseSchema,
    SpendSchema,
    TransactionListSchema,
    TransactionQuerySchema,
    TransactionSchema,
)
from payments.models import PayoutBatch, PayoutLine

blp = Blueprint("ledger", __name__, url_prefix="/api/v1/ledger",
                description="The books: funding, balances, transactions, reversals, reconciliation, audit export.")
payouts_blp = Blueprint("payouts", __name__, url_prefix="/api/v1/payouts",
                        description="Payout batches: create for a period, approve, mark paid or failed, CSV.")
reports_blp = Blueprint("reports", __name__, url_prefix="/api/v1/reports",
                        description="Worker earnings and requester spend, as JSON or CSV.")
BLUEPRINTS = (blp, payouts_blp, reports_blp)


def _txn_bodies(txns: list[Any]) -> list[dict[str, Any]]:
    legs = balances.legs(db_session(), [t.id for t in txns])
    return [{**{c: getattr(t, c) for c in ("id", "idempotency_key", "kind", "currency", "reverses_id",
                                           "requester_id", "worker_id", "project_id", "batch_id", "assignment_id",
                                           "payout_id", "actor_id", "reason", "created_at")}, "legs": legs[t.id]}
            for t in txns]


def _moneyed(body: dict[str, Any]) -> dict[str, Any]:
    """Balances' cents as money objects."""
    for row in body.get("balances", []):
        for k in ("available", "escrow", "payable", "paid_out"):
            if k in row:
                row[k] = money(row[k], row["currency"])
    for hold in body.get("holds", []):
        for k in ("held", "posted", "released", "remaining"):
            hold[k] = money(hold[k], hold["currency"])
    return body


@blp.route("/requesters/<int:requester_id>/funding")
class Funding(MethodView):
    @requires(Role.OPS)
    @blp.arguments(FundSchema)
    @blp.response(201, TransactionSchema)
    @blp.alt_response(200, schema=TransactionSchema, description="Replay of an earlier request with the same "
                                                                  "Idempotency-Key: the transaction it posted.")
    @blp.doc(**idempotency_doc("transaction"))
    def post(self, data: dict[str, Any], requester_id: int):
        """Credit a requester's available money (an Idempotency-Key is required)."""
        key = idempotency_key()
        if key is None:
            raise InvalidInput("Send an Idempotency-Key: funding is never posted twice.",
                               errors={"Idempotency-Key": ["required"]})
        txn, created = balances.fund(db_session(), requester_id=requester_id, cents=data["cents"],
                                     currency=data["currency"], key=key, now=clock(),
                                     actor_id=current_account().id, reason=data["reason"])
        return _txn_bodies([txn])[0], 201 if created else 200, {} if created else {"Idempotent-Replayed": "true"}


@blp.route("/balance")
class MyBalance(MethodView):
    @requires(Role.REQUESTER, Role.WORKER)
    @blp.response(200, BalancesSchema)
    def get(self):
        """Your own money: a requester's available, escrow and open holds per batch; a worker's payable and
        paid out."""
        me = current_account()
        if me.role == Role.WORKER:
            return _moneyed(balances.worker_balances(db_session(), worker_id=me.id))
        return _moneyed(balances.requester_balances(db_session(), requester_id=me.id))


@blp.route("/accounts/<int:account_id>")
class AccountBalance(MethodView):
    @requires(Role.OPS)
    @blp.response(200, BalancesSchema)
    def get(self, account_id: int):
        """Any account's balances."""
        return _moneyed(balances.account_balances(db_session(), account_id=account_id))


@blp.route("/transactions")
class Transactions(MethodView):
    @requires(Role.OPS)
    @blp.arguments(TransactionQuerySchema, location="query")
    @blp.response(200, TransactionListSchema)
    def get(self, args: dict[str, Any]):
        """Ledger transactions by id, with their legs (keyset paging: pass next_after as after)."""
        txns = balances.list_transactions(db_session(), after=args.get("after"), limit=args["limit"],
                                          kind=args.get("kind"), requester_id=args.get("requester_id"),
                                          worker_id=args.get("worker_id"), batch_id=args.get("batch_id"))
        return page(_txn_bodies(txns), args["limit"])


@blp.route("/transactions/<int:transaction_id>")
class TransactionDetail(MethodView):
    @requires(Role.OPS)
    @blp.response(200, TransactionSchema)
    def get(self, transaction_id: int):
        """One transaction with its legs."""
        return _txn_bodies([balances.get_transaction(db_session(), transaction_id)])[0]


@blp.route("/transactions/<int:transaction_id>/reverse")
class Reverse(MethodView):
    @requires(Role.OPS)
    @blp.arguments(ReverseSchema)
    @blp.response(201, TransactionSchema)
    @blp.alt_response(200, schema=TransactionSchema, description="Reversed before: that reversal.")
    @problems(402, 409)
    def post(self, data: dict[str, Any], transaction_id: int):
        """Reverse a funding, reward or bonus (at most once); 402 when the money has gone on already."""
        txn, created = balances.reverse(db_session(), transaction_id=transaction_id, reason=data["reason"],
                                        now=clock(), actor_id=current_account().id)
        return _txn_bodies([txn])[0], 201 if created else 200


@blp.route("/reconciliation")
class Reconciliation(MethodView):
    @requires(Role.OPS)
    @blp.response(200, ReconcileSchema)
    def get(self):
        """Payouts, holds and ledger totals agree, per currency (`ok`), with every disagreement named."""
        return reconcile(db_session())


@blp.route("/export")
class Export(MethodView):
    @requires(Role.OPS)
    @blp.response(200, description="The books as a Beancount file (check it with bean-check); streamed.")
    @blp.doc(**download_doc("text/plain"))
    def get(self):
        """The books as Beancount: accounts, every transaction, and a balance assertion per account."""
        session = db_session()
        return streamed(session, export.beancount_lines(session), mimetype="text/plain",
                        filename="crowdmarket.beancount")


# --- payouts --------------------------------------------------------------------------------------------------

def _line_body(line: PayoutLine) -> dict[str, Any]:
    return {"id": line.id, "worker_id": line.worker_id, "amount": money(line.amount_cents, line.currency),
            "status": line.status, "hold_reason": line.hold_reason, "transaction_id": line.transaction_id,
            "external_reference": line.external_reference, "paid_at": line.paid_at}


def _batch_body(batch: PayoutBatch, *, lines: bool = False) -> dict[str, Any]:
    session = db_session()
    body = {c: getattr(batch, c) for c in ("id", "currency", "period_end", "provider", "status", "created_by_id",
                                           "approved_by_id", "created_at", "approved_at", "paid_at")}
    body["minimum"] = money(batch.minimum_cents, batch.currency)
    body["summary"] = payouts.summary(session, batch.id)
    if lines:
        body["lines"] = [_line_body(line) for line in payouts.lines_of(session, batch.id)]
    return body


@payouts_blp.route("/batches")
class PayoutBatches(MethodView):
    @requires(Role.OPS)
    @payouts_blp.arguments(PayoutQuerySchema, location="query")
    @payouts_blp.response(200, PayoutBatchListSchema)
    def get(self, args: dict[str, Any]):
        """Payout batches by id (keyset paging)."""
        rows = payouts.list_batches(db_session(), after=args.get("after"), limit=args["limit"],
                                    status=args.get("status"))
        return page([_batch_body(b) for b in rows], args["limit"])

    @requires(Role.OPS)
    @payouts_blp.arguments(PayoutCreateSchema)
    @payouts_blp.response(201, PayoutBatchSchema)
    @payouts_blp.alt_response(200, schema=PayoutBatchSchema, description="Replay of an earlier request with the "
                                                                          "same Idempotency-Key: its batch.")
    @payouts_blp.doc(**idempotency_doc("payout batch"))
    def post(self, data: dict[str, Any]):
        """A draft payout batch: a line per worker whose payable balance is at least the minimum; flagged
        workers' lines held, with the reason."""
        batch, created = payouts.create_batch(db_session(), actor_id=current_account().id, now=clock(),
                                              key=idempotency_key(), **data)
        return _batch_body(batch, lines=True), 201 if created else 200, \
            {} if created else {"Idempotent-Replayed": "true"}


@payouts_blp.route("/batches/<int:batch_id>")
class PayoutBatchDetail(MethodView):
    @requires(Role.OPS)
    @payouts_blp.response(200, PayoutBatchSchema)
    def get(self, batch_id: int):
        """One payout batch with its lines."""
        return _batch_body(payouts.get_batch(db_session(), batch_id), lines=True)


@payouts_blp.route("/batches/<int:batch_id>/approve")
class PayoutApprove(MethodView):
    @requires(Role.OPS)
    @payouts_blp.response(200, PayoutBatchSchema)
    @problems(409)
    def post(self, batch_id: int):
        """Pay out every pending line (payable -> paid out); a line whose payable fell is held with the reason.
        Approving again changes nothing."""
        batch = payouts.approve(db_session(), batch_id=batch_id, actor_id=current_account().id, now=clock())
        return _batch_body(batch, lines=True)


@payouts_blp.route("/batches/<int:batch_id>/paid")
class PayoutBatchPaid(MethodView):
    @requires(Role.OPS)
    @payouts_blp.arguments(ReferenceSchema)
    @payouts_blp.response(200, PayoutBatchSchema)
    @problems(409)
    def post(self, data: dict[str, Any], batch_id: int):
        """Mark every approved line paid under one external reference."""
        batch = payouts.mark_batch_paid(db_session(), batch_id=batch_id, reference=data["reference"], now=clock())
        return _batch_body(batch, lines=True)


@payouts_blp.route("/batches/<int:batch_id>/lines/<int:line_id>/paid")
class PayoutLinePaid(MethodView):
    @requires(Role.OPS)
    @payouts_blp.arguments(ReferenceSchema)
    @payouts_blp.response(200, PayoutLineSchema)
    @problems(409)
    def post(self, data: dict[str, Any], batch_id: int, line_id: int):
        """Mark one approved line paid, with its external reference."""
        return _line_body(payouts.mark_paid(db_session(), batch_id=batch_id, line_id=line_id,
                                            reference=data["reference"], now=clock()))


@payouts_blp.route("/batches/<int:batch_id>/lines/<int:line_id>/failed")
class PayoutLineFailed(MethodView):
    @requires(Role.OPS)
    @payouts_blp.arguments(FailSchema)
    @payouts_blp.response(200, PayoutLineSchema)
    @problems(409)
    def post(self, data: dict[str, Any], batch_id: int, line_id: int):
        """The payment of a line failed: its payout is reversed and the money is payable again."""
        return _line_body(payouts.mark_failed(db_session(), batch_id=batch_id, line_id=line_id,
                                              reason=data["reason"], now=clock(), actor_id=current_account().id))


@payouts_blp.route("/batches/<int:batch_id>/export")
class PayoutExport(MethodView):
    @requires(Role.OPS)
    @payouts_blp.response(200, description="CSV with a header row; streamed.")
    @payouts_blp.doc(**download_doc("text/csv"))
    def get(self, batch_id: int):
        """The batch as CSV: line, worker id, username, name, email, amount, currency, status, reference."""
        session = db_session()
        return streamed(session, payouts.csv_lines(session, batch_id), mimetype="text/csv",
                        filename=f"payout-batch-{batch_id}.csv")


# --- reports --------------------------------------------------------------------------------------------------

def _wants_csv(args: dict[str, Any]) -> bool:
    if "format" in args:
        return args["format"] == "csv"
    best = request.accept_mimetypes.best_match(["application/json", "text/csv"])
    return best == "text/csv"


REPORT_DOC = {"responses": {200: {"content": {"text/csv": {"schema": {"type": "string"}}}}}}


def _earnings(worker_id: int, args: dict[str, Any]):
    body = reports.worker_earnings(db_session(), worker_id=worker_id)
    if _wants_csv(args):
        return Response(reports.as_csv(body["data"], reports.WORKER_COLUMNS), mimetype="text/csv")
    for r in body["data"]:
        c = r["currency"]
        r.update(rewards=money(r["rewards"], c), bonuses=money(r["bonuses"], c),
                 hourly_rate=None if r["hourly_rate_cents"] is None else money(r["hourly_rate_cents"], c))
        del r["hourly_rate_cents"]
    return body


def _spend(requester_id: int, args: dict[str, Any]):
    body = reports.requester_spend(db_session(), requester_id=requester_id)
    if _wants_csv(args):
        return Response(reports.as_csv(body["data"], reports.REQUESTER_COLUMNS), mimetype="text/csv")
    for r in body["data"]:
        for k in ("rewards", "bonuses", "fees", "total", "held", "posted", "released", "remaining"):
            r[k] = money(r[k], r["currency"])
    return body


@reports_blp.route("/earnings")
class MyEarnings(MethodView):
    @requires(Role.WORKER)
    @reports_blp.arguments(ReportQuerySchema, location="query")
    @reports_blp.response(200, EarningsSchema)
    @reports_blp.doc(**REPORT_DOC)
    def get(self, args: dict[str, Any]):
        """Your earnings by day and project: rewards, bonuses, hours worked, effective hourly rate."""
        return _earnings(current_account().id, args)


@reports_blp.route("/workers/<int:worker_id>/earnings")
class WorkerEarnings(MethodView):
    @requires(Role.OPS)
    @reports_blp.arguments(ReportQuerySchema, location="query")
    @reports_blp.response(200, EarningsSchema)
    @reports_blp.doc(**REPORT_DOC)
    def get(self, args: dict[str, Any], worker_id: int):
        """A worker's earnings by day and project."""
        balances.worker_balances(db_session(), worker_id=worker_id)  # 404 unless a worker
        return _earnings(worker_id, args)


@reports_blp.route("/spend")
class MySpend(MethodView):
    @requires(Role.REQUESTER)
    @reports_blp.arguments(ReportQuerySchema, location="query")
    @reports_blp.response(200, SpendSchema)
    @reports_blp.doc(**REPORT_DOC)
    def get(self, args: dict[str, Any]):
        """Your spend by project and batch: rewards, bonuses, fees, and each batch's hold."""
        return _spend(current_account().id, args)


@reports_blp.route("/requesters/<int:requester_id>/spend")
class RequesterSpend(MethodView):
    @requires(Role.OPS)
    @reports_blp.arguments(ReportQuerySchema, location="query")
    @reports_blp.response(200, SpendSchema)
    @reports_blp.doc(**REPORT_DOC)
    def get(self, args: dict[str, Any], requester_id: int):
        """A requester's spend by project and batch."""
        balances.requester_balances(db_session(), requester_id=requester_id)  # 404 unless a requester
        return _spend(requester_id, args)
