"""Reconciliation: the books, the payouts and the holds agree, per currency.

- the ledger's own checks (ledger.check_books: balanced transactions, balances equal to their entries, limits,
  escrow equal to holds);
- per currency: the workers' paid-out balances sum to the payout lines approved or paid (a failed line was
  reversed; held and pending lines moved nothing);
- per currency: the requesters' escrow balances sum to the open holds' remaining money;
- per currency: the workers' payable and paid-out money together equals the rewards and bonuses earned (net of
  reversals): nothing else moves money to workers;
- totals per currency of funding, rewards, bonuses, fees and payouts (net of reversals), for the reader.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from payments import ledger
from payments.models import (
    AccountKind,
    Hold,
    HoldState,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    PayoutLine,
    PayoutLineStatus,
    TransactionKind,
)


def totals(session: Session) -> dict[str, dict[str, int]]:
    """Per currency: funding, rewards, bonuses, fees, payouts, each net of its reversals (a reversal counts
    against the kind it reverses)."""
    original = aliased(LedgerTransaction)
    kind = func.coalesce(original.kind, LedgerTransaction.kind)
    rows = session.execute(
        select(LedgerAccount.currency, LedgerAccount.kind, kind, func.sum(LedgerEntry.amount))
        .select_from(LedgerEntry)
        .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .outerjoin(original, original.id == LedgerTransaction.reverses_id)
        .group_by(LedgerAccount.currency, LedgerAccount.kind, kind))
    out: defaultdict[str, dict[str, int]] = defaultdict(
        lambda: {"funding": 0, "rewards": 0, "bonuses": 0, "fees": 0, "payouts": 0})
    for currency, account_kind, txn_kind, amount in rows:
        amount, txn_kind = int(amount or 0), TransactionKind(txn_kind)
        t = out[currency]
        if account_kind == AccountKind.PLATFORM_FUNDING:
            t["funding"] -= amount
        elif account_kind == AccountKind.PLATFORM_FEES:
            t["fees"] += amount
        elif account_kind == AccountKind.WORKER_PAID_OUT:
            t["payouts"] += amount
        elif account_kind == AccountKind.WORKER_PAYABLE and txn_kind == TransactionKind.REWARD:
            t["rewards"] += amount
        elif account_kind == AccountKind.WORKER_PAYABLE and txn_kind == TransactionKind.BONUS:
            t["bonuses"] += amount
    return dict(out)


def _balances_by_currency(session: Session, *kinds: AccountKind) -> dict[str, int]:
    return {c: int(s or 0) for c, s in session.execute(
        select(LedgerAccount.currency, func.sum(LedgerAccount.balance))
        .where(LedgerAccount.kind.in_(kinds)).group_by(LedgerAccount.currency))}


def reconcile(session: Session) -> dict[str, Any]:
    """Every check above; `ok` when nothing disagrees."""
    problems = ledger.check_books(session)
    paid_out = _balances_by_currency(session, AccountKind.WORKER_PAID_OUT)
    to_workers = _balances_by_currency(session, AccountKind.WORKER_PAYABLE, AccountKind.WORKER_PAID_OUT)
    escrow = _balances_by_currency(session, AccountKind.REQUESTER_ESCROW)
    lines = {c: int(s or 0) for c, s in session.execute(
        select(PayoutLine.currency, func.sum(PayoutLine.amount_cents))
        .where(PayoutLine.status.in_((PayoutLineStatus.APPROVED, PayoutLineStatus.PAID)))
        .group_by(PayoutLine.currency))}
    holds = {c: int(s or 0) for c, s in session.execute(
        select(Hold.currency, func.sum(Hold.held - Hold.posted - Hold.released))
        .where(Hold.state == HoldState.OPEN).group_by(Hold.currency))}
    sums = totals(session)
    currencies: dict[str, Any] = {}
    for currency in sorted(set(paid_out) | set(escrow) | set(lines) | set(holds) | set(sums) | set(to_workers)):
        t = sums.get(currency, {"funding": 0, "rewards": 0, "bonuses": 0, "fees": 0, "payouts": 0})
        checks = {
            "paid_out_vs_payout_lines": (paid_out.get(currency, 0), lines.get(currency, 0)),
            "escrow_vs_open_holds": (escrow.get(currency, 0), holds.get(currency, 0)),
            "worker_money_vs_earnings": (to_workers.get(currency, 0), t["rewards"] + t["bonuses"]),
        }
        mine = [f"{currency} {name}: {a} != {b}" for name, (a, b) in checks.items() if a != b]
        problems += mine
        currencies[currency] = {
            "paid_out": paid_out.get(currency, 0), "payout_lines_paid": lines.get(currency, 0),
            "escrow": escrow.get(currency, 0), "open_holds_remaining": holds.get(currency, 0),
            "worker_money": to_workers.get(currency, 0), "totals": t, "problems": mine}
    return {"ok": not problems, "problems": problems, "currencies": currencies}
