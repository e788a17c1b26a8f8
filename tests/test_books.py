"""The books' API and CLI: funding (idempotent, 409 on another amount), balances per audience, the transaction
list, reversals (402 when the money is gone), reconciliation catching a planted mismatch."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from base.identity import Role
from payments import ledger
from payments.books import balances, payouts
from payments.books.reconcile import reconcile
from payments.models import LedgerAccount, PayoutBatch, PayoutLine, PayoutLineStatus, TransactionKind
from shell.cli import cli
from tests import books_support as books
from tests import factories
from tests.factories import auth, in_uow


@pytest.fixture
def ops(session, clock):
    return factories.account(session, Role.OPS, now=clock())


@pytest.fixture
def invoke(app):
    runner = app.test_cli_runner()
    return lambda *args: runner.invoke(cli, list(args), obj=lambda: app)


def _fund(client, token, requester_id, key="k1", **body):
    headers = {**auth(token), **({"Idempotency-Key": key} if key else {})}
    return client.post(f"/api/v1/ledger/requesters/{requester_id}/funding", headers=headers,
                       json={"cents": 5000, "currency": "USD", **body})


def test_funding_is_idempotent_and_another_amount_under_the_key_is_409(client, session, clock, ops):
    owner, owner_token = books.requester(session, clock())
    first = _fund(client, ops[1], owner.id)
    assert first.status_code == 201, first.get_json()
    body = first.get_json()
    assert body["kind"] == "funding" and body["idempotency_key"] == "fund:k1"
    assert sorted(leg["cents"] for leg in body["legs"]) == [-5000, 5000]
    replay = _fund(client, ops[1], owner.id)
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json()["id"] == body["id"]
    conflict = _fund(client, ops[1], owner.id, cents=4000)
    assert conflict.status_code == 409
    assert ledger.balance(session, ledger.available(owner.id, "USD")) == 5000
    assert _fund(client, ops[1], owner.id, key=None).status_code == 422  # a key is required
    assert _fund(client, ops[1], owner.id, key="f", cents=1.5).status_code == 422  # never a float
    mine = client.get("/api/v1/ledger/balance", headers=auth(owner_token)).get_json()
    assert mine["balances"] == [{"currency": "USD", "available": {"cents": 5000, "currency": "USD"},
                                 "escrow": {"cents": 0, "currency": "USD"}}]


def test_funding_a_non_requester_is_404(client, session, clock, ops):
    worker, _ = factories.account(session, Role.WORKER, now=clock())
    assert _fund(client, ops[1], worker.id).status_code == 404
    assert _fund(client, ops[1], 999_999).status_code == 404


@pytest.mark.parametrize("who", ["worker", "requester", "other_requester", "anonymous"])
def test_ops_endpoints_refuse_everyone_else(client, session, clock, ops, who):
    owner, owner_token = books.requester(session, clock(), cents=100)
    tokens = {"worker": factories.account(session, Role.WORKER, now=clock())[1], "requester": owner_token,
              "other_requester": factories.account(session, Role.REQUESTER, now=clock(), funded=False)[1]}
    headers = auth(tokens[who]) if who in tokens else {}
    expected = 401 if who == "anonymous" else 403
    txn = ledger.find(session, f"fund:seed-{owner.id}")
    for method, url, body in (
            ("post", f"/api/v1/ledger/requesters/{owner.id}/funding", {"cents": 1}),
            ("get", f"/api/v1/ledger/accounts/{owner.id}", None), ("get", "/api/v1/ledger/transactions", None),
            ("get", f"/api/v1/ledger/transactions/{txn.id}", None),
            ("post", f"/api/v1/ledger/transactions/{txn.id}/reverse", {"reason": "x"}),
            ("get", "/api/v1/ledger/reconciliation", None), ("get", "/api/v1/ledger/export", None),
            ("get", f"/api/v1/reports/requesters/{owner.id}/spend", None)):
        resp = getattr(client, method)(url, headers={**headers, "Idempotency-Key": "x"}, json=body)
        assert resp.status_code == expected, (url, resp.status_code)
    assert ledger.balance(session, ledger.available(owner.id, "USD")) == 100


def test_each_sees_their_own_balance(client, session, clock, ops):
    owner, owner_token = books.requester(session, clock(), cents=3000)
    batch = books.batch(session, owner, clock(), hold_cents=1000)
    worker, worker_token = factories.account(session, Role.WORKER, now=clock())
    books.pay(session, batch, books.assignment(session, batch, worker, clock()), reward=30, fee=6, now=clock())
    session.commit()
    req = client.get("/api/v1/ledger/balance", headers=auth(owner_token)).get_json()
    assert req["account_id"] == owner.id
    assert req["balances"][0]["available"]["cents"] == 2000 and req["balances"][0]["escrow"]["cents"] == 964
    assert [(h["batch_id"], h["held"]["cents"], h["posted"]["cents"], h["remaining"]["cents"])
            for h in req["holds"]] == [(batch.id, 1000, 36, 964)]
    mine = client.get("/api/v1/ledger/balance", headers=auth(worker_token)).get_json()
    assert mine == {"account_id": worker.id, "balances": [{"currency": "USD", "payable": {"cents": 30,
                    "currency": "USD"}, "paid_out": {"cents": 0, "currency": "USD"}}]}
    seen = client.get(f"/api/v1/ledger/accounts/{worker.id}", headers=auth(ops[1])).get_json()
    assert seen["role"] == "worker" and seen["balances"] == mine["balances"]
    assert client.get("/api/v1/ledger/balance", headers=auth(ops[1])).status_code == 403


def test_the_transaction_list_pages_by_id(client, session, clock, ops):
    owner, _ = books.requester(session, clock())
    for n in range(5):
        ledger.fund(session, requester_id=owner.id, cents=100 + n, currency="USD", key=f"p{n}", now=clock(),
                    actor_id=None)
    session.commit()
    seen, after = [], None
    while True:
        url = "/api/v1/ledger/transactions?limit=2&kind=funding" + (f"&after={after}" if after else "")
        page = client.get(url, headers=auth(ops[1])).get_json()
        seen += [t["idempotency_key"] for t in page["data"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == [f"fund:p{n}" for n in range(5)]


def test_ops_reverse_a_transaction_once_and_402_when_the_money_is_gone(client, session, clock, ops):
    owner, _ = books.requester(session, clock(), cents=1000)
    batch = books.batch(session, owner, clock(), hold_cents=500)
    worker, _ = factories.account(session, Role.WORKER, now=clock())
    reward = books.pay(session, batch, books.assignment(session, batch, worker, clock()), reward=40, fee=0,
                       now=clock())
    session.commit()
    url = f"/api/v1/ledger/transactions/{reward}/reverse"
    first = client.post(url, headers=auth(ops[1]), json={"reason": "approved by mistake"})
    assert first.status_code == 201, first.get_json()
    assert first.get_json()["kind"] == "reversal" and first.get_json()["reverses_id"] == reward
    assert client.post(url, headers=auth(ops[1]), json={"reason": "again"}).get_json()["id"] == first.get_json()["id"]
    assert ledger.balance(session, ledger.payable(worker.id, "USD")) == 0
    assert reconcile(session)["ok"], reconcile(session)["problems"]  # the hold got its money back
    # The seed funding cannot be reversed: 500 of its 1000 cents are held.
    funding = ledger.find(session, f"fund:seed-{owner.id}")
    short = client.post(f"/api/v1/ledger/transactions/{funding.id}/reverse", headers=auth(ops[1]),
                        json={"reason": "bounced"})
    assert short.status_code == 402 and short.get_json()["shortfall"] == {"cents": 500, "currency": "USD"}
    hold = ledger.find(session, f"hold:{batch.id}")
    assert client.post(f"/api/v1/ledger/transactions/{hold.id}/reverse", headers=auth(ops[1]),
                       json={"reason": "no"}).status_code == 409
    assert reconcile(session)["ok"]


def test_reconciliation_finds_a_planted_unbalanced_entry(client, session, clock, ops, invoke):
    owner, _ = books.requester(session, clock(), cents=700)
    assert reconcile(session) == {**reconcile(session), "ok": True, "problems": []}
    account = session.scalar(select(LedgerAccount).where(LedgerAccount.code == f"requester:{owner.id}:available:USD"))
    txn = ledger.find(session, f"fund:seed-{owner.id}")
    # Bypass the ledger: an entry the balance never saw, in a transaction that no longer balances.
    session.execute(text("INSERT INTO ledger_entry (transaction_id, account_id, amount) VALUES (:t, :a, 5)"),
                    {"t": txn.id, "a": account.id})
    session.commit()
    report = reconcile(session)
    assert not report["ok"]
    assert any(f"transaction {txn.id} is unbalanced by 5" in p for p in report["problems"])
    assert any("balance 700 but its entries sum to 705" in p for p in report["problems"])
    via_api = client.get("/api/v1/ledger/reconciliation", headers=auth(ops[1])).get_json()
    assert via_api["ok"] is False and via_api["problems"] == report["problems"]
    result = invoke("ledger", "reconcile")
    assert result.exit_code == 1 and "unbalanced by 5" in result.output


def test_reconciliation_finds_a_payout_line_without_its_payout(session, clock, ops, invoke):
    owner, _ = books.requester(session, clock(), cents=700)
    assert invoke("ledger", "reconcile").exit_code == 0
    batch, _ = in_uow(payouts.create_batch, session, actor_id=ops[0].id, currency="USD",
                      period_end=clock(), minimum_cents=0, now=clock())
    worker, _ = factories.account(session, Role.WORKER, now=clock())
    session.add(PayoutLine(payout_batch_id=batch.id, worker_id=worker.id, currency="USD", amount_cents=25,
                           status=PayoutLineStatus.APPROVED))
    session.commit()
    report = reconcile(session)
    assert report["problems"] == ["USD paid_out_vs_payout_lines: 0 != 25"]
    assert report["currencies"]["USD"]["totals"]["funding"] == 700
    assert invoke("ledger", "reconcile").exit_code == 1
    assert session.get(PayoutBatch, batch.id) is not None


def test_cli_fund_is_idempotent_by_key(invoke, session, clock):
    owner, _ = books.requester(session, clock())
    result = invoke("ledger", "fund", "--email", owner.email.upper(), "--cents", "1200", "--key", "cli-1")
    assert result.exit_code == 0, result.output
    assert "Funded" in result.output and "available now 1200" in result.output
    again = invoke("ledger", "fund", "--email", owner.email, "--cents", "1200", "--key", "cli-1")
    assert again.exit_code == 0 and "replay" in again.output
    other = invoke("ledger", "fund", "--email", owner.email, "--cents", "1300", "--key", "cli-1")
    assert other.exit_code == 1 and "different request" in other.output
    assert invoke("ledger", "fund", "--email", "nobody@example.com", "--cents", "5").exit_code == 1
    assert ledger.balance(session, ledger.available(owner.id, "USD")) == 1200
    txns = balances.list_transactions(session, after=None, limit=10, requester_id=owner.id,
                                      kind=TransactionKind.FUNDING)
    assert [t.idempotency_key for t in txns] == ["fund:cli-1"]
