"""The ops page of one worker: quality per project and overall, flag history, blocks, earnings and payouts; the
same services as the JSON API's /ops/workers/{id}/quality, /ops/flags?worker_id=, and the books' reports."""

from __future__ import annotations

from flask import Blueprint, Response, render_template

from base.identity import Role
from edge.request import clock, db_session
from edge.web import signed_in
from market.quality import scoring, triage
from payments.books import balances, payouts, reports
from workers import flags
from workers.models import Account

blp = Blueprint("ops_workers", __name__)
FLAGS_SHOWN = 500  # a worker's flag history; more than this is a case for the API's paging


@blp.after_request
def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"  # a worker's data: never cached
    return response


@blp.get("/ops/workers/<int:worker_id>")
@signed_in(Role.OPS)
def worker_page(worker_id: int):
    """A worker's stats, flags, blocks, earnings and payouts."""
    session, now = db_session(), clock()
    money = balances.worker_balances(session, worker_id=worker_id)  # 404 unless a worker
    worker = session.get_one(Account, worker_id)
    records = scoring.worker_records(session, worker_id)
    history = flags.list_flags(session, after=None, limit=FLAGS_SHOWN, worker_id=worker_id)
    blocks = flags.worker_blocks(session, worker_id=worker_id)
    titles = triage.project_titles(session, [*(r.project_id for r in records if r.project_id is not None),
                                             *(f.project_id for f in history if f.project_id is not None),
                                             *(b.project_id for b in blocks if b.project_id is not None)])
    return render_template("ops/worker.html", worker=worker, records=records, flags=history, blocks=blocks,
                           titles=titles, now=now, balances=money["balances"],
                           earnings=reports.worker_earnings(session, worker_id=worker_id)["data"],
                           lines=payouts.worker_lines(session, worker_id=worker_id))
