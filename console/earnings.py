"""The worker's earnings page, `GET /work/earnings`: each submitted or reviewed assignment with its reward, any
top-up with its reason and any rejection with its feedback; the realized hourly rate; balances; payouts.

All of it is payments' data, read through payments' functions (the API's too: review/listing, books/reports,
books/balances, books/payouts), and only the signed-in worker's own: never gold flags, never anyone else's."""

from __future__ import annotations

from flask import Blueprint, Response, render_template

from base.identity import Role
from edge.request import db_session
from edge.web import page_account, query_id, signed_in
from payments.books.balances import worker_balances
from payments.books.payouts import worker_lines
from payments.books.reports import worker_realized_rate
from payments.review.listing import worker_history

blp = Blueprint("earnings", __name__)
PAGE = 50  # assignments per page, newest first; "Older" pages on by id
PAYOUTS = 20


@blp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"  # a worker's own money: never cached, nor shown after log-out
    return response


@blp.get("/work/earnings")
@signed_in(Role.WORKER)
def earnings():
    """The worker's earnings: work with its pay, top-ups and feedback, realized rate, balances and payouts."""
    session, worker = db_session(), page_account()
    before = query_id("before")  # not a whole number: ignored, the newest page is shown
    rows = worker_history(session, worker_id=worker.id, before=before, limit=PAGE + 1)
    older = rows[PAGE - 1]["assignment_id"] if len(rows) > PAGE else None
    return render_template("console/earnings.html", rows=rows[:PAGE], older=older, before=before,
                           rates=worker_realized_rate(session, worker_id=worker.id),
                           balances=worker_balances(session, worker_id=worker.id)["balances"],
                           payouts=worker_lines(session, worker_id=worker.id, limit=PAYOUTS))
