"""Audit: after a seeded random sequence of operations (fund, publish with a hold, approve, top up, reverse,
release, payouts created, approved, paid and failed) the Beancount export passes `bean-check` (an independent
tool: every transaction balances, every stored balance equals the sum of its entries), and an export with one
amount changed does not."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from base.identity import Role
from payments import ledger
from payments.books import balances, payouts
from payments.books.export import account_name, beancount_lines
from payments.books.reconcile import reconcile
from payments.ledger import InsufficientFunds
from payments.models import AccountKind, Hold, HoldState, LedgerTransaction, PayoutLineStatus, TransactionKind
from shell.cli import cli
from tests import books_support as books
from tests import factories

BEAN_CHECK = Path(sys.executable).with_name("bean-check")


def bean_check(path: Path) -> subprocess.CompletedProcess:
    assert BEAN_CHECK.exists(), "pip install -e '.[dev]' installs beancount (bean-check)"
    return subprocess.run([str(BEAN_CHECK), str(path)], capture_output=True, text=True, timeout=120)


def _random_books(session, clock, seed: int, steps: int = 60) -> dict[str, int]:
    rng = random.Random(seed)
    done: dict[str, int] = {}
    ops, _ = factories.account(session, Role.OPS, now=clock())
    requesters = [books.requester(session, clock())[0] for _ in range(2)]
    workers = [factories.account(session, Role.WORKER, now=clock())[0] for _ in range(5)]
    batches, used, worked = [], set(), {}

    @contextmanager
    def attempt(name):
        """Run the block in a savepoint; a 402 undoes it alone (as a refused request changes nothing)."""
        try:
            with session.begin_nested():
                yield
            done[name] = done.get(name, 0) + 1
        except InsufficientFunds:
            done[f"{name} (402)"] = done.get(f"{name} (402)", 0) + 1
        session.commit()

    for step in range(steps):
        clock.advance(hours=rng.choice([1, 5, 20]))
        op = rng.choice(["fund", "fund", "publish", "approve", "approve", "approve", "bonus", "reverse", "release",
                         "payout"])
        if op == "fund":
            who = rng.choice(requesters)
            with attempt(op):
                ledger.fund(session, requester_id=who.id, cents=rng.randint(50, 3000), currency="USD",
                            key=f"r{seed}-{step}", now=clock(), actor_id=ops.id)
        elif op == "publish":
            owner = rng.choice(requesters)
            cents = rng.randint(100, 1500)
            if ledger.balance(session, ledger.available(owner.id, "USD")) >= cents:
                batches.append(books.batch(session, owner, clock(), items=6, hold_cents=cents))
                done[op] = done.get(op, 0) + 1
        elif op == "approve" and batches:
            batch, worker, n = rng.choice(batches), rng.choice(workers), rng.randrange(6)
            if (batch.id, worker.id, n) in used:
                continue
            used.add((batch.id, worker.id, n))
            asg = books.assignment(session, batch, worker, clock(), duration_ms=rng.randint(5_000, 200_000), n=n)
            worked.setdefault(batch.id, set()).add(worker.id)
            with attempt(op):
                books.pay(session, batch, asg, reward=rng.randint(1, 80), fee=rng.randint(0, 9), now=clock())
        elif op == "bonus" and worked:
            chosen = rng.choice(sorted(worked))
            batch = next(b for b in batches if b.id == chosen)
            worker_id = rng.choice(sorted(worked[batch.id]))
            if ledger.find(session, f"topup:{batch.id}:{worker_id}:{clock().date().isoformat()}") is None:
                with attempt(op):
                    books.bonus(session, batch, worker_id, cents=rng.randint(1, 40), fee=rng.randint(0, 3),
                                now=clock())
        elif op == "reverse":
            candidates = list(session.scalars(select(LedgerTransaction.id).where(
                LedgerTransaction.kind.in_([TransactionKind.FUNDING, TransactionKind.REWARD, TransactionKind.BONUS]),
                ~select(LedgerTransaction.id).where(LedgerTransaction.reverses_id == LedgerTransaction.id)
                .correlate_except(LedgerTransaction).exists())))
            if candidates:
                tid = rng.choice(candidates)
                with attempt(op):
                    balances.reverse(session, transaction_id=tid, reason="random", now=clock(), actor_id=ops.id)
        elif op == "release":
            hold = session.scalar(select(Hold).where(Hold.state == HoldState.OPEN).order_by(Hold.id))
            if hold is not None:
                with attempt(op):
                    ledger.release(session, hold, ledger.remaining(hold), now=clock(),
                                   key=f"release:{hold.batch_id}:closed", close=True)
        elif op == "payout":
            batch, _ = payouts.create_batch(session, actor_id=ops.id, currency="USD", period_end=clock(),
                                            minimum_cents=rng.choice([0, 20, 100]), now=clock())
            payouts.approve(session, batch_id=batch.id, actor_id=ops.id, now=clock())
            for line in payouts.lines_of(session, batch.id, status=PayoutLineStatus.APPROVED):
                if rng.random() < 0.3:
                    payouts.mark_failed(session, batch_id=batch.id, line_id=line.id, reason="bounced", now=clock(),
                                        actor_id=ops.id)
                    done["payout failed"] = done.get("payout failed", 0) + 1
            payouts.mark_batch_paid(session, batch_id=batch.id, reference=f"bank-{step}", now=clock())
            session.commit()
            done[op] = done.get(op, 0) + 1
    return done


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bean_check_confirms_the_books_after_random_operations(session, clock, tmp_path, seed):
    done = _random_books(session, clock, seed)
    assert done.get("approve", 0) >= 3 and done.get("payout", 0) >= 1, done
    report = reconcile(session)
    assert report["ok"], report["problems"]
    good = tmp_path / "books.beancount"
    good.write_text("".join(beancount_lines(session, chunk=7)))  # a small chunk: the paging is exercised
    checked = bean_check(good)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    source = good.read_text()
    assert source.count("\n  ledger_id: ") == session.scalar(select(LedgerTransaction.id).order_by(
        LedgerTransaction.id.desc()).limit(1)) - session.scalar(select(LedgerTransaction.id).order_by(
        LedgerTransaction.id).limit(1)) + 1
    # Change one posting's amount (and its partner's, so the transaction still balances): the balance
    # assertions catch it.
    lines = source.splitlines(keepends=True)
    posting = re.compile(r"^(  \S+  )(-?\d+\.\d\d)( USD\n)$")
    at = [i for i, line in enumerate(lines) if posting.match(line)]
    first = at[len(at) // 2]
    m = posting.match(lines[first])
    lines[first] = f"{m[1]}{float(m[2]) + 0.01:.2f}{m[3]}"
    bad = tmp_path / "corrupted.beancount"
    bad.write_text("".join(lines))
    failed = bean_check(bad)
    assert failed.returncode != 0 and "balance" in (failed.stdout + failed.stderr).lower()


def test_the_cli_writes_a_file_bean_check_accepts(session, clock, tmp_path, app):
    owner, _ = books.requester(session, clock(), cents=900)
    batch = books.batch(session, owner, clock(), hold_cents=300)
    worker, _ = factories.account(session, Role.WORKER, now=clock())
    books.pay(session, batch, books.assignment(session, batch, worker, clock()), reward=25, fee=5, now=clock())
    session.commit()
    out = tmp_path / "cli.beancount"
    result = app.test_cli_runner().invoke(cli, ["ledger", "export", "--format", "beancount", "--output", str(out)],
                                          obj=lambda: app)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert bean_check(out).returncode == 0
    # The signs as documented: owed to the requester and the worker is negative, fees earned negative income,
    # money received a positive asset.
    assert f"balance Liabilities:Requesters:R{owner.id}:Available  -6.00 USD" in text
    assert f"balance Liabilities:Requesters:R{owner.id}:Escrow  -2.70 USD" in text
    assert f"balance Liabilities:Workers:W{worker.id}:Payable  -0.25 USD" in text
    assert "balance Income:Fees:Platform  -0.05 USD" in text
    assert "balance Assets:Funding:External  9.00 USD" in text


def test_account_names_are_valid_beancount_names():
    assert account_name(AccountKind.PLATFORM_FEES, None, "mturk_sandbox") == "Income:Fees:Mturk-sandbox"
    assert account_name(AccountKind.EXTERNAL_PLATFORM, None, "prolific") == "Assets:Paid:External:Prolific"
    assert account_name(AccountKind.WORKER_PAID_OUT, 7, None) == "Assets:Paid:Workers:W7"
