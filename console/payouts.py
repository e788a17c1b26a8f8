"""Ops payout pages: the payout batches, a batch with its lines (held ones with why), approve and mark paid, the CSV
and the reconciliation status. The same services as payments/books/api.py (payouts.py, reconcile.py)."""

from __future__ import annotations

import re
import uuid
from typing import Any

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from marshmallow import Schema, ValidationError

from base.errors import DomainError
from base.identity import Role
from base.uow import savepoint
from edge.blueprint import streamed
from edge.request import clock, db_session
from edge.web import page_account, query_id, signed_in
from payments.books import payouts
from payments.books.providers import PROVIDERS
from payments.books.reconcile import reconcile
from payments.books.schemas import FailSchema, PayoutCreateSchema, ReferenceSchema
from payments.models import PayoutLineStatus

blp = Blueprint("ops_payouts", __name__, url_prefix="/ops/payouts")
PAGE = 50
SHOWN_LINES = 1000  # a batch of 10,000 workers is read in the CSV; the page shows its first lines
# The form's idempotency key: what a browser generates and sends back, nothing else.
KEY = re.compile(r"^[A-Za-z0-9-]{8,64}$")


@blp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def _fields(names: tuple[str, ...]) -> dict[str, Any]:
    """The form's values of these fields, blanks left out so the schema's defaults apply."""
    return {k: v for k in names if (v := request.form.get(k, "").strip()) != ""}


def _period_end(value: str | None) -> str | None:
    # <input type="datetime-local"> sends a time without zone; the form states it is UTC.
    if value and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?", value):
        return value + "+00:00"
    return value


def _list(status: int = 200, *, errors: dict[str, Any] | None = None, message: str | None = None,
          values: dict[str, str] | None = None) -> tuple[str, int]:
    session = db_session()
    before = query_id("before")
    rows = payouts.newest_batches(session, before=before, limit=PAGE)
    batches = [(b, payouts.summary(session, b.id)) for b in rows]
    return render_template("console/payouts.html", batches=batches, providers=sorted(PROVIDERS),
                           key=uuid.uuid4().hex, errors=errors or {}, message=message,
                           values=values or {"currency": "USD", "minimum_cents": "0", "provider": "manual"},
                           next_before=rows[-1].id if len(rows) == PAGE else None), status


@blp.get("")
@signed_in(Role.OPS)
def batches():
    """Payout batches, newest first, and the form that creates one."""
    return _list()


@blp.post("")
@signed_in(Role.OPS)
def create():
    """Create a draft payout batch (idempotent by the form's key: a form sent twice makes one batch)."""
    values = {k: request.form.get(k, "") for k in ("currency", "period_end", "minimum_cents", "provider")}
    key = request.form.get("idempotency_key", "")
    if not KEY.fullmatch(key):
        return _list(422, message="The form has lost its key: reload the page and try again.", values=values)
    raw = _fields(("currency", "period_end", "minimum_cents", "provider"))
    if "period_end" in raw:
        raw["period_end"] = _period_end(raw["period_end"])
    if "minimum_cents" in raw:
        try:
            raw["minimum_cents"] = int(raw["minimum_cents"])
        except ValueError:
            return _list(422, errors={"minimum_cents": ["A whole number of cents."]}, values=values,
                         message="Please correct the fields below.")
    try:
        data = PayoutCreateSchema().load(raw)
    except ValidationError as exc:
        return _list(422, errors=exc.messages, values=values, message="Please correct the fields below.")
    session = db_session()
    try:
        with savepoint(session):
            batch, created = payouts.create_batch(session, actor_id=page_account().id, now=clock(), key=key, **data)
    except DomainError as exc:
        return _list(exc.status, errors=exc.errors if isinstance(exc.errors, dict) else {}, values=values,
                     message=exc.detail)
    flash(f"Payout batch {batch.id} created." if created else f"Payout batch {batch.id} was created already.")
    return redirect(url_for(".batch", batch_id=batch.id), 303)


def _batch_page(batch_id: int, status: int = 200, *, message: str | None = None) -> tuple[str, int]:
    session = db_session()
    batch = payouts.get_batch(session, batch_id)  # 404 page when unknown
    summary = payouts.summary(session, batch_id)
    total = {"lines": sum(s["lines"] for s in summary.values()), "cents": sum(s["cents"] for s in summary.values())}
    lines = payouts.lines_with_workers(session, batch_id, limit=SHOWN_LINES)
    held = [line for line, _ in lines if line.status in (PayoutLineStatus.HELD, PayoutLineStatus.FAILED)]
    books = reconcile(session)
    return render_template("console/payout_batch.html", batch=batch, summary=summary, total=total, lines=lines,
                           held=held, books=books, message=message, shown=SHOWN_LINES,
                           statuses=[s.value for s in PayoutLineStatus]), status


@blp.get("/<int:batch_id>")
@signed_in(Role.OPS)
def batch(batch_id: int):
    """A payout batch: per-worker lines, held workers and why, totals, actions and the books' reconciliation."""
    return _batch_page(batch_id)


def _act(batch_id: int, action: Any, done: str) -> Any:
    """Run a payout service in a savepoint: done, a flash and back to the batch; refused, the batch page says
    why and nothing is changed."""
    session = db_session()
    try:
        with savepoint(session):
            action(session)
    except DomainError as exc:
        if exc.status == 404:
            raise
        return _batch_page(batch_id, exc.status, message=exc.detail)
    flash(done)
    return redirect(url_for(".batch", batch_id=batch_id), 303)


def _load(schema: Schema, name: str, batch_id: int) -> dict[str, Any] | tuple[str, int]:
    try:
        return schema.load({name: request.form.get(name, "")} if name in request.form else {})
    except ValidationError as exc:
        detail = "; ".join(f"{k}: {', '.join(v)}" for k, v in exc.messages.items())
        return _batch_page(batch_id, 422, message=f"Nothing was changed. {detail}")


@blp.post("/<int:batch_id>/approve")
@signed_in(Role.OPS)
def approve(batch_id: int):
    """Approve the batch: each pending line is paid out of the worker's payable balance."""
    actor = page_account().id
    return _act(batch_id, lambda s: payouts.approve(s, batch_id=batch_id, actor_id=actor, now=clock()),
                f"Payout batch {batch_id} approved.")


@blp.post("/<int:batch_id>/paid")
@signed_in(Role.OPS)
def paid(batch_id: int):
    """Mark every approved line of the batch paid under one reference."""
    data = _load(ReferenceSchema(), "reference", batch_id)
    if isinstance(data, tuple):
        return data
    return _act(batch_id, lambda s: payouts.mark_batch_paid(s, batch_id=batch_id, reference=data["reference"],
                                                           now=clock()),
                f"Payout batch {batch_id} marked paid (reference {data['reference']}).")


@blp.post("/<int:batch_id>/lines/<int:line_id>/paid")
@signed_in(Role.OPS)
def line_paid(batch_id: int, line_id: int):
    """Mark one approved line paid, with its reference."""
    data = _load(ReferenceSchema(), "reference", batch_id)
    if isinstance(data, tuple):
        return data
    return _act(batch_id, lambda s: payouts.mark_paid(s, batch_id=batch_id, line_id=line_id,
                                                     reference=data["reference"], now=clock()),
                f"Line {line_id} marked paid.")


@blp.post("/<int:batch_id>/lines/<int:line_id>/failed")
@signed_in(Role.OPS)
def line_failed(batch_id: int, line_id: int):
    """The payment of a line failed: its payout is reversed, the money payable again."""
    data = _load(FailSchema(), "reason", batch_id)
    if isinstance(data, tuple):
        return data
    actor = page_account().id
    return _act(batch_id, lambda s: payouts.mark_failed(s, batch_id=batch_id, line_id=line_id,
                                                       reason=data["reason"], now=clock(), actor_id=actor),
                f"Line {line_id} marked failed; its money is payable again.")


@blp.get("/<int:batch_id>/export.csv")
@signed_in(Role.OPS)
def export(batch_id: int):
    """The batch as CSV (what the API's export streams), for the signed-in ops user."""
    session = db_session()
    payouts.get_batch(session, batch_id)
    return streamed(session, payouts.csv_lines(session, batch_id), mimetype="text/csv",
                    filename=f"payout-batch-{batch_id}.csv")
