"""Payout batches: the minimum's boundary, flagged workers held with the reason, approval once, a short payable
held, failed lines reversed, marking paid, the CSV, and the API's roles."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest

from base.errors import Conflict
from base.identity import Role
from payments import ledger
from payments.books import payouts
from payments.books.reconcile import reconcile
from payments.models import PayoutBatchStatus, PayoutLineStatus, TransactionKind
from tests import books_support as books
from tests import factories
from tests.factories import auth, in_uow
from workers import flags
from workers.models import FlagReason

PERIOD = dt.datetime(2026, 1, 31, tzinfo=dt.UTC)


@pytest.fixture
def world(session, clock):
    """A funded requester, a batch with a hold, and workers earning 99, 100, 101 and 250 cents."""
    owner, _ = books.requester(session, clock(), cents=10_000)
    batch = books.batch(session, owner, clock(), items=4, hold_cents=2000)
    ops, ops_token = factories.account(session, Role.OPS, now=clock())
    workers = []
    for n, reward in enumerate((99, 100, 101, 250)):
        worker, token = factories.account(session, Role.WORKER, now=clock())
        books.pay(session, batch, books.assignment(session, batch, worker, clock(), n=n), reward=reward, fee=0,
                  now=clock())
        workers.append((worker, token))
    session.commit()
    return {"owner": owner, "batch": batch, "ops": ops, "ops_token": ops_token, "workers": workers}


def _create(session, world, clock, minimum=100, key=None):
    batch, _ = in_uow(payouts.create_batch, session, actor_id=world["ops"].id, currency="USD", period_end=PERIOD,
                      minimum_cents=minimum, now=clock(), key=key)
    return batch


def _lines(session, batch):
    return {line.worker_id: line for line in payouts.lines_of(session, batch.id)}


def test_the_minimum_is_included_and_one_cent_less_is_not(session, clock, world):
    batch = _create(session, world, clock, minimum=100)
    lines = _lines(session, batch)
    w99, w100, w101, w250 = (w.id for w, _ in world["workers"])
    assert set(lines) == {w100, w101, w250}
    assert {w: line.amount_cents for w, line in lines.items()} == {w100: 100, w101: 101, w250: 250}
    assert all(line.status == PayoutLineStatus.PENDING for line in lines.values())
    assert batch.status == PayoutBatchStatus.DRAFT
    assert ledger.balance(session, ledger.paid_out(w100, "USD")) == 0  # a draft moves nothing


def test_a_flagged_worker_is_held_with_the_flags_reason(session, clock, world):
    w101 = world["workers"][2][0].id
    flag = in_uow(flags.raise_flag, session, worker_id=w101, project_id=None, reason=FlagReason.FAST_ANSWERS,
                  note="too fast", now=clock())
    batch = _create(session, world, clock)
    line = _lines(session, batch)[w101]
    assert line.status == PayoutLineStatus.HELD
    assert f"flag {flag.id}" in line.hold_reason and "FAST_ANSWERS" in line.hold_reason
    in_uow(payouts.approve, session, batch_id=batch.id, actor_id=world["ops"].id, now=clock())
    assert ledger.balance(session, ledger.payable(w101, "USD")) == 101  # held back: not paid
    # A dismissed flag no longer holds the worker back.
    in_uow(flags.dismiss, session, flag_id=flag.id, actor=world["ops"], reason="fine", now=clock())
    again = _create(session, world, clock, key="after-dismissal")
    assert _lines(session, again)[w101].status == PayoutLineStatus.PENDING


def test_approval_pays_out_once(session, clock, world):
    batch = _create(session, world, clock)
    for _ in range(2):
        in_uow(payouts.approve, session, batch_id=batch.id, actor_id=world["ops"].id, now=clock())
    w250 = world["workers"][3][0].id
    assert ledger.balance(session, ledger.payable(w250, "USD")) == 0
    assert ledger.balance(session, ledger.paid_out(w250, "USD")) == 250
    lines = _lines(session, batch)
    assert all(line.status == PayoutLineStatus.APPROVED for line in lines.values())
    for line in lines.values():
        txn = ledger.find(session, f"payout:{line.id}")
        assert txn is not None and txn.id == line.transaction_id and txn.kind == TransactionKind.PAYOUT
    assert session.get(type(batch), batch.id).status == PayoutBatchStatus.APPROVED
    assert reconcile(session)["ok"], reconcile(session)["problems"]


def test_a_line_whose_payable_fell_is_held_with_the_reason_and_the_rest_is_paid(session, clock, world):
    batch = _create(session, world, clock)
    w100, w250 = world["workers"][1][0].id, world["workers"][3][0].id
    # A second batch of the same currency leaves the draft's workers out, so pay w250 out through a line of its
    # own: reverse the reward that made the money instead (the payable falls to 0).
    reward = ledger.find(session, f"reward:{_asg_of(session, w250)}")
    from payments.books import balances

    in_uow(balances.reverse, session, transaction_id=reward.id, reason="paid by mistake", now=clock(),
           actor_id=world["ops"].id)
    in_uow(payouts.approve, session, batch_id=batch.id, actor_id=world["ops"].id, now=clock())
    lines = _lines(session, batch)
    assert lines[w250].status == PayoutLineStatus.HELD and "fell to 0 cents" in lines[w250].hold_reason
    assert lines[w250].transaction_id is None and ledger.find(session, f"payout:{lines[w250].id}") is None
    assert lines[w100].status == PayoutLineStatus.APPROVED
    assert ledger.balance(session, ledger.paid_out(w100, "USD")) == 100
    assert reconcile(session)["ok"], reconcile(session)["problems"]


def _asg_of(session, worker_id):
    from sqlalchemy import select

    from payments.models import AssignmentPay

    return session.scalar(select(AssignmentPay.assignment_id).where(AssignmentPay.worker_id == worker_id))


def test_a_failed_line_is_reversed_and_the_money_is_payable_again(session, clock, world):
    batch = _create(session, world, clock)
    in_uow(payouts.approve, session, batch_id=batch.id, actor_id=world["ops"].id, now=clock())
    lines = _lines(session, batch)
    w100, w101, w250 = (w.id for w, _ in world["workers"][1:])
    in_uow(payouts.mark_paid, session, batch_id=batch.id, line_id=lines[w100].id, reference="bank-1", now=clock())
    failed = in_uow(payouts.mark_failed, session, batch_id=batch.id, line_id=lines[w101].id,
                    reason="account closed", now=clock(), actor_id=world["ops"].id)
    assert failed.status == PayoutLineStatus.FAILED
    assert ledger.balance(session, ledger.payable(w101, "USD")) == 101
    assert ledger.balance(session, ledger.paid_out(w101, "USD")) == 0
    assert ledger.find(session, f"reverse:{lines[w101].transaction_id}") is not None
    in_uow(payouts.mark_failed, session, batch_id=batch.id, line_id=lines[w101].id, reason="again", now=clock(),
           actor_id=None)  # idempotent
    assert ledger.balance(session, ledger.payable(w101, "USD")) == 101
    assert reconcile(session)["ok"], reconcile(session)["problems"]
    with pytest.raises(Conflict):
        in_uow(payouts.mark_paid, session, batch_id=batch.id, line_id=lines[w100].id, reference="other",
               now=clock())
    in_uow(payouts.mark_batch_paid, session, batch_id=batch.id, reference="bank-2", now=clock())
    lines = _lines(session, batch)
    assert (lines[w100].external_reference, lines[w250].external_reference) == ("bank-1", "bank-2")
    assert session.get(type(batch), batch.id).status == PayoutBatchStatus.PAID
    # The failed worker's money is in the next batch.
    nxt = _create(session, world, clock, key="next")
    assert {w: line.amount_cents for w, line in _lines(session, nxt).items()} == {w101: 101}


def test_the_same_key_returns_the_same_batch_and_other_terms_are_409(session, clock, world):
    first = _create(session, world, clock, key="jan")
    assert _create(session, world, clock, key="jan").id == first.id
    with pytest.raises(Conflict):
        _create(session, world, clock, minimum=200, key="jan")


def test_the_api_creates_approves_marks_and_exports_csv(client, session, clock, world):
    ops = auth(world["ops_token"])
    made = client.post("/api/v1/payouts/batches", headers={**ops, "Idempotency-Key": "jan"},
                       json={"period_end": "2026-01-31T00:00:00Z", "minimum_cents": 100})
    assert made.status_code == 201, made.get_json()
    body = made.get_json()
    assert body["minimum"] == {"cents": 100, "currency": "USD"} and len(body["lines"]) == 3
    replay = client.post("/api/v1/payouts/batches", headers={**ops, "Idempotency-Key": "jan"},
                         json={"period_end": "2026-01-31T00:00:00Z", "minimum_cents": 100})
    assert replay.status_code == 200 and replay.get_json()["id"] == body["id"]
    url = f"/api/v1/payouts/batches/{body['id']}"
    approved = client.post(f"{url}/approve", headers=ops)
    assert approved.status_code == 200 and approved.get_json()["status"] == "approved"
    line = approved.get_json()["lines"][0]
    paid = client.post(f"{url}/lines/{line['id']}/paid", headers=ops, json={"reference": "tx-77"})
    assert paid.status_code == 200 and paid.get_json()["external_reference"] == "tx-77"
    assert client.post(f"{url}/lines/{line['id']}/paid", headers=ops, json={"reference": "tx-78"}).status_code == 409
    exported = client.get(f"{url}/export", headers=ops)
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True))))
    workers = {w.id: w for w, _ in world["workers"]}
    assert [(int(r["worker_id"]), r["amount"], int(r["amount_cents"]), r["currency"], r["status"]) for r in rows] \
        == [(w.id, f"{c // 100}.{c % 100:02d}", c, "USD", "paid" if w.id == line["worker_id"] else "approved")
            for w, c in ((workers[int(r["worker_id"])], int(r["amount_cents"])) for r in rows)]
    assert sorted(int(r["amount_cents"]) for r in rows) == [100, 101, 250]
    assert {r["username"] for r in rows} == {workers[int(r["worker_id"])].username for r in rows}
    assert [r["reference"] for r in rows if r["status"] == "paid"] == ["tx-77"]


@pytest.mark.parametrize("who", ["worker", "requester", "anonymous"])
def test_payout_endpoints_are_for_ops_only(client, session, clock, world, who):
    token = {"worker": world["workers"][0][1],
             "requester": factories.account(session, Role.REQUESTER, now=clock(), funded=False)[1]}.get(who)
    headers = auth(token) if token else {}
    batch = _create(session, world, clock)
    expected = 401 if who == "anonymous" else 403
    for method, url, body in (("post", "/api/v1/payouts/batches", {"period_end": "2026-01-31T00:00:00Z"}),
                              ("get", "/api/v1/payouts/batches", None),
                              ("get", f"/api/v1/payouts/batches/{batch.id}", None),
                              ("post", f"/api/v1/payouts/batches/{batch.id}/approve", None),
                              ("get", f"/api/v1/payouts/batches/{batch.id}/export", None)):
        resp = getattr(client, method)(url, headers=headers, json=body)
        assert resp.status_code == expected, (url, resp.get_json())
    assert session.get(type(batch), batch.id).status == PayoutBatchStatus.DRAFT


class InstantProvider:
    """A provider that pays at once and answers with its references (a real one would call an API)."""

    name = "instant"
    confirmation = "webhook"

    def __init__(self):
        self.submitted = []

    def submit(self, batch, lines):
        self.submitted.append((batch.id, [line.id for line in lines]))
        return {line.id: f"inst-{line.id}" for line in lines}


def test_a_provider_chosen_per_batch_pays_and_confirms(session, clock, world, monkeypatch):
    from payments.books import providers

    instant = InstantProvider()
    monkeypatch.setitem(providers.PROVIDERS, "instant", instant)
    batch, _ = in_uow(payouts.create_batch, session, actor_id=world["ops"].id, currency="USD", period_end=PERIOD,
                      minimum_cents=100, now=clock(), provider="instant")
    assert batch.provider == "instant"
    in_uow(payouts.approve, session, batch_id=batch.id, actor_id=world["ops"].id, now=clock())
    in_uow(payouts.approve, session, batch_id=batch.id, actor_id=world["ops"].id, now=clock())
    lines = payouts.lines_of(session, batch.id)
    assert instant.submitted == [(batch.id, [line.id for line in lines])]  # once, with the approved lines
    assert {(line.status, line.external_reference) for line in lines} == {
        (PayoutLineStatus.PAID, f"inst-{line.id}") for line in lines}
    assert session.get(type(batch), batch.id).status == PayoutBatchStatus.PAID
    with pytest.raises(Exception, match="Unknown payout provider"):
        in_uow(payouts.create_batch, session, actor_id=world["ops"].id, currency="USD", period_end=PERIOD,
               minimum_cents=100, now=clock(), provider="nope")
