"""Ops payout pages: ops only, batches with per-worker amounts and held reasons as money, create (once for a form
sent twice), approve and mark paid as the API does, bad input refused on the page with nothing changed."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from base.identity import Role
from payments.books import payouts
from payments.models import PayoutBatch, PayoutBatchStatus, PayoutLineStatus
from tests import books_support as books
from tests import factories
from tests.browser import audit, with_password
from tests.console.money_support import browser_log_in, csrf, form_value, sign_in
from workers import flags
from workers.models import FlagReason


@pytest.fixture
def world(session, clock):
    """A requester's batch; workers earning 150, 250 and 1234 cents; the last one flagged; an ops user."""
    owner, _ = books.requester(session, clock(), cents=10_000)
    batch = books.batch(session, owner, clock(), items=4, hold_cents=3000)
    ops, _ = factories.account(session, Role.OPS, now=clock())
    workers = []
    for n, reward in enumerate((150, 250, 1234)):
        worker, _ = factories.account(session, Role.WORKER, now=clock())
        books.pay(session, batch, books.assignment(session, batch, worker, clock(), n=n), reward=reward, fee=0,
                  now=clock())
        workers.append(worker)
    flags.raise_flag(session, worker_id=workers[2].id, project_id=batch.project_id, reason=FlagReason.FAST_ANSWERS,
                     note="too fast", now=clock())
    session.commit()
    return {"owner": owner, "ops": ops, "workers": workers}


def _count(session) -> int:
    return session.scalar(select(func.count()).select_from(PayoutBatch))


def _create(client, **fields):
    html = client.get("/ops/payouts").get_data(as_text=True)
    data = {"csrf_token": form_value(html, "csrf_token"), "idempotency_key": form_value(html, "idempotency_key"),
            "period_end": "2026-11-30T00:00", "minimum_cents": "100", "currency": "USD", "provider": "manual",
            **fields}
    return client.post("/ops/payouts", data=data), data


@pytest.mark.parametrize("role", [Role.WORKER, Role.REQUESTER])
def test_payout_pages_refuse_other_roles(client, app, session, clock, world, role):
    other, _ = factories.account(session, role, now=clock())
    sign_in(client, app, session, other)
    assert client.get("/ops/payouts").status_code == 403
    batch, _ = payouts.create_batch(session, actor_id=world["ops"].id, currency="USD", period_end=clock(),
                                    minimum_cents=0, now=clock())
    session.commit()
    assert client.get(f"/ops/payouts/{batch.id}").status_code == 403
    token = csrf(client, "/work" if role == Role.WORKER else "/requester")
    assert client.post(f"/ops/payouts/{batch.id}/approve", data={"csrf_token": token}).status_code == 403
    session.refresh(batch)
    assert batch.status == PayoutBatchStatus.DRAFT


def test_signed_out_visitors_are_sent_to_log_in(client, world):
    resp = client.get("/ops/payouts")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


def test_a_form_sent_twice_creates_one_batch_with_amounts_and_held_reasons(client, app, session, world):
    sign_in(client, app, session, world["ops"])
    before = _count(session)
    first, data = _create(client)
    assert first.status_code == 303
    again = client.post("/ops/payouts", data=data)  # the same form, its key and all, sent again
    assert again.status_code == 303 and again.headers["Location"] == first.headers["Location"]
    assert _count(session) == before + 1
    page = client.get(first.headers["Location"])
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    assert "$1.50" in html and "$2.50" in html and "$12.34" in html and "$16.34" in html  # cents shown as money
    assert "Held back for review" in html and "FAST_ANSWERS" in html
    assert f'href="/ops/workers/{world["workers"][2].id}"' in html
    assert "The books balance." in html
    listing = client.get("/ops/payouts").get_data(as_text=True)
    assert "$16.34" in listing and "draft" in listing


def test_approve_and_mark_paid_change_the_batch_as_the_api_does(client, app, session, world):
    sign_in(client, app, session, world["ops"])
    resp, _ = _create(client)
    batch_url = resp.headers["Location"]
    batch_id = int(batch_url.rsplit("/", 1)[1])
    token = csrf(client, batch_url)
    assert client.post(f"{batch_url}/approve", data={"csrf_token": token}).status_code == 303
    batch = session.get(PayoutBatch, batch_id)
    session.refresh(batch)
    assert batch.status == PayoutBatchStatus.APPROVED and batch.approved_by_id == world["ops"].id
    lines = {line.worker_id: line for line in payouts.lines_of(session, batch_id)}
    w1, w2, w3 = (w.id for w in world["workers"])
    assert lines[w1].status == lines[w2].status == PayoutLineStatus.APPROVED
    assert lines[w3].status == PayoutLineStatus.HELD
    resp = client.post(f"{batch_url}/paid", data={"csrf_token": token, "reference": "WIRE-42"})
    assert resp.status_code == 303
    session.expire_all()
    assert session.get(PayoutBatch, batch_id).status == PayoutBatchStatus.PAID
    assert {line.external_reference for line in payouts.lines_of(session, batch_id, status=PayoutLineStatus.PAID)} \
        == {"WIRE-42"}
    html = client.get(batch_url).get_data(as_text=True)
    assert "WIRE-42" in html and "The books balance." in html


def test_bad_input_is_refused_on_the_page_and_changes_nothing(client, app, session, world):
    sign_in(client, app, session, world["ops"])
    before = _count(session)
    for fields, text in (({"period_end": ""}, "Please correct"), ({"minimum_cents": "1.5"}, "whole number"),
                         ({"minimum_cents": "-3"}, "Please correct"), ({"currency": "dollars"}, "Please correct"),
                         ({"provider": "paypal"}, "Unknown payout provider"),
                         ({"idempotency_key": ""}, "lost its key")):
        resp, _ = _create(client, **fields)
        assert resp.status_code in (409, 422) and text in resp.get_data(as_text=True), fields
    assert _count(session) == before
    resp, _ = _create(client)
    batch_url = resp.headers["Location"]
    token = csrf(client, batch_url)
    # Mark paid before approval: refused with the reason, the batch still a draft.
    resp = client.post(f"{batch_url}/paid", data={"csrf_token": token, "reference": "X-1"})
    assert resp.status_code == 409 and "approve it first" in resp.get_data(as_text=True)
    client.post(f"{batch_url}/approve", data={"csrf_token": token})
    resp = client.post(f"{batch_url}/paid", data={"csrf_token": token, "reference": ""})
    assert resp.status_code == 422 and "Nothing was changed" in resp.get_data(as_text=True)
    batch_id = int(batch_url.rsplit("/", 1)[1])
    session.expire_all()
    assert session.get(PayoutBatch, batch_id).status == PayoutBatchStatus.APPROVED
    assert client.get("/ops/payouts/999999").status_code == 404


def test_the_csv_export_and_per_line_actions(client, app, session, world):
    sign_in(client, app, session, world["ops"])
    resp, _ = _create(client)
    batch_url = resp.headers["Location"]
    batch_id = int(batch_url.rsplit("/", 1)[1])
    token = csrf(client, batch_url)
    client.post(f"{batch_url}/approve", data={"csrf_token": token})
    w1, w2, _ = (w.id for w in world["workers"])
    lines = {line.worker_id: line for line in payouts.lines_of(session, batch_id)}
    assert client.post(f"{batch_url}/lines/{lines[w1].id}/paid",
                       data={"csrf_token": token, "reference": "TX-1"}).status_code == 303
    assert client.post(f"{batch_url}/lines/{lines[w2].id}/failed",
                       data={"csrf_token": token, "reason": "bounced"}).status_code == 303
    session.expire_all()
    assert session.get(type(lines[w1]), lines[w1].id).status == PayoutLineStatus.PAID
    assert session.get(type(lines[w2]), lines[w2].id).status == PayoutLineStatus.FAILED
    assert session.get(PayoutBatch, batch_id).status == PayoutBatchStatus.PAID
    csv = client.get(f"{batch_url}/export.csv")
    assert csv.status_code == 200 and csv.mimetype == "text/csv"
    body = csv.get_data(as_text=True)
    assert body.startswith("line_id,") and "TX-1" in body and "Failed: bounced" in body


def test_an_ops_user_approves_a_payout_batch_and_marks_it_paid_in_the_browser(app, session, page, live_server,
                                                                             world):
    page, problems = page
    browser_log_in(page, live_server, with_password(app, session, world["ops"]), "/ops/payouts")
    page.get_by_label("Period end (UTC)").fill("2026-11-30T00:00")
    page.get_by_label("Minimum payout (cents)").fill("100")
    audit(page, "payouts")
    page.get_by_role("button", name="Create payout batch").click()
    page.wait_for_url("**/ops/payouts/*")
    assert "Held back for review" in page.content()
    page.get_by_role("button", name="Approve").click()
    page.wait_for_selector("text=approved.")
    page.get_by_label("Payment reference").fill("WIRE-7")
    audit(page, "payout-batch")
    page.get_by_role("button", name="Mark paid").click()
    page.wait_for_selector("text=marked paid")
    assert page.locator("#batch-status").inner_text() == "paid"
    assert problems == []


def test_newest_batches_pages_backwards_and_lines_carry_the_workers_names(session, clock, world):
    made = [payouts.create_batch(session, actor_id=world["ops"].id, currency="USD", period_end=clock(),
                                 minimum_cents=0, now=clock())[0].id for _ in range(3)]
    session.commit()
    newest = [b.id for b in payouts.newest_batches(session, before=None, limit=2)]
    assert newest == [made[2], made[1]]
    assert [b.id for b in payouts.newest_batches(session, before=made[1], limit=2)][0] == made[0]
    rows = payouts.lines_with_workers(session, made[0], limit=2)
    assert [(line.worker_id, name) for line, name in rows] == [(w.id, w.username) for w in world["workers"][:2]]
    # A later draft leaves out the money pending in the first; the flagged worker's held line is not pending.
    [(line, name)] = payouts.lines_with_workers(session, made[2], limit=10)
    assert (line.worker_id, line.status) == (world["workers"][2].id, PayoutLineStatus.HELD)
