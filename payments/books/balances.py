"""Funding, balances and the transaction list; ops reversals. No flask here: services take the session, clock
and plain values, flush and never commit (the unit of work does)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from base.errors import Conflict, IdempotencyConflict, InvalidInput, NotFound
from base.identity import Role
from base.paging import keyset_page
from payments import ledger
from payments.models import (
    AccountKind,
    Hold,
    HoldState,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    TransactionKind,
)
from workers.models import Account

# Kinds ops may reverse by hand. Holds and releases belong to their hold (release it instead), payouts to their
# payout line (mark it failed): reversing those alone would leave escrow or payout lines disagreeing with the books.
REVERSIBLE = {TransactionKind.FUNDING, TransactionKind.REWARD, TransactionKind.BONUS}


def _account(session: Session, account_id: int, role: Role) -> Account:
    account = session.get(Account, account_id)
    if account is None or account.role != role:
        raise NotFound(f"No {role.value} account {account_id}.")
    return account


def fund(session: Session, *, requester_id: int, cents: int, currency: str, key: str, now: dt.datetime,
         actor_id: int | None, reason: str = "") -> tuple[LedgerTransaction, bool]:
    """Credit a requester's available money (idempotent by key: a replay returns the same transaction, another
    amount or requester under the same key is a 409)."""
    _account(session, requester_id, Role.REQUESTER)
    if type(cents) is not int or cents <= 0:
        raise InvalidInput("Fund a positive number of cents.", errors={"cents": ["must be positive"]})
    try:
        return ledger.fund(session, requester_id=requester_id, cents=cents, currency=currency, key=key, now=now,
                           actor_id=actor_id, reason=reason)
    except Conflict as exc:  # the key funded another amount, currency or requester
        raise IdempotencyConflict() from exc


def find_requester(session: Session, *, email: str) -> Account:
    account = session.scalar(select(Account).where(Account.email == email.lower()))
    if account is None or account.role != Role.REQUESTER:
        raise NotFound(f"No requester account with email {email}.")
    return account


def _balances(session: Session, owner_id: int, kinds: tuple[AccountKind, ...]) -> dict[str, dict[AccountKind, int]]:
    out: dict[str, dict[AccountKind, int]] = {}
    for currency, kind, bal in session.execute(
            select(LedgerAccount.currency, LedgerAccount.kind, LedgerAccount.balance)
            .where(LedgerAccount.owner_id == owner_id, LedgerAccount.kind.in_(kinds))
            .order_by(LedgerAccount.currency)):
        out.setdefault(currency, dict.fromkeys(kinds, 0))[kind] = int(bal)
    return out


def requester_balances(session: Session, *, requester_id: int) -> dict[str, Any]:
    """A requester's available and escrow money per currency, and the open hold of each batch."""
    _account(session, requester_id, Role.REQUESTER)
    kinds = (AccountKind.REQUESTER_AVAILABLE, AccountKind.REQUESTER_ESCROW)
    holds = session.scalars(select(Hold).where(Hold.requester_id == requester_id, Hold.state == HoldState.OPEN)
                            .order_by(Hold.batch_id))
    return {"account_id": requester_id,
            "balances": [{"currency": c, "available": b[kinds[0]], "escrow": b[kinds[1]]}
                         for c, b in _balances(session, requester_id, kinds).items()],
            "holds": [{"batch_id": h.batch_id, "currency": h.currency, "held": h.held, "posted": h.posted,
                       "released": h.released, "remaining": ledger.remaining(h), "created_at": h.created_at}
                      for h in holds]}


def worker_balances(session: Session, *, worker_id: int) -> dict[str, Any]:
    """A worker's payable (earned, not yet paid out) and paid-out money per currency."""
    _account(session, worker_id, Role.WORKER)
    kinds = (AccountKind.WORKER_PAYABLE, AccountKind.WORKER_PAID_OUT)
    return {"account_id": worker_id,
            "balances": [{"currency": c, "payable": b[kinds[0]], "paid_out": b[kinds[1]]}
                         for c, b in _balances(session, worker_id, kinds).items()]}


def account_balances(session: Session, *, account_id: int) -> dict[str, Any]:
    """Any account's balances (ops)."""
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound(f"Account {account_id} not found.")
    if account.role == Role.WORKER:
        return {"role": account.role.value, **worker_balances(session, worker_id=account_id)}
    if account.role == Role.REQUESTER:
        return {"role": account.role.value, **requester_balances(session, requester_id=account_id)}
    return {"role": account.role.value, "account_id": account_id, "balances": [], "holds": []}


def list_transactions(session: Session, *, after: int | None, limit: int, kind: TransactionKind | None = None,
                      requester_id: int | None = None, worker_id: int | None = None,
                      batch_id: int | None = None) -> list[LedgerTransaction]:
    """Transactions by id (keyset paging), filtered."""
    return keyset_page(session, LedgerTransaction, after=after, limit=limit, equal=(
        (LedgerTransaction.kind, kind), (LedgerTransaction.requester_id, requester_id),
        (LedgerTransaction.worker_id, worker_id), (LedgerTransaction.batch_id, batch_id)))


def legs(session: Session, transaction_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """The entries of these transactions, with their account codes, by transaction id (one query)."""
    out: dict[int, list[dict[str, Any]]] = {t: [] for t in transaction_ids}
    if not transaction_ids:
        return out
    for tid, code, amount in session.execute(
            select(LedgerEntry.transaction_id, LedgerAccount.code, LedgerEntry.amount)
            .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
            .where(LedgerEntry.transaction_id.in_(transaction_ids)).order_by(LedgerEntry.id)):
        out[tid].append({"account": code, "cents": int(amount)})
    return out


def get_transaction(session: Session, transaction_id: int) -> LedgerTransaction:
    txn = session.get(LedgerTransaction, transaction_id)
    if txn is None:
        raise NotFound(f"Transaction {transaction_id} not found.")
    return txn


def reverse(session: Session, *, transaction_id: int, reason: str, now: dt.datetime,
            actor_id: int | None) -> tuple[LedgerTransaction, bool]:
    """Reverse a funding, reward or bonus (at most once: again returns the first reversal); 402 when the money is
    gone (a worker paid out, a requester's funds spent). Money a reward took out of an open hold goes back into
    that hold; out of a closed hold's escrow, on to the requester's available money. Returns (reversal,
    created)."""
    original = get_transaction(session, transaction_id)
    done = session.scalar(select(LedgerTransaction).where(LedgerTransaction.reverses_id == transaction_id))
    if done is not None:
        return done, False
    if original.kind not in REVERSIBLE:
        raise Conflict(f"A {original.kind.value} transaction is not reversed by hand: "
                       + ("mark its payout line failed." if original.kind == TransactionKind.PAYOUT else
                          "release the hold instead." if original.kind != TransactionKind.REVERSAL else
                          "post the original again."), errors={"kind": [original.kind.value]})
    hold = ledger.lock_hold(session, original.batch_id) if original.batch_id is not None else None
    reversal = ledger.reverse(session, transaction_id, now=now, reason=reason, actor_id=actor_id)
    _return_escrow(session, original, hold, now=now)
    session.flush()
    return reversal, True


def _return_escrow(session: Session, original: LedgerTransaction, hold: Hold | None, *, now: dt.datetime) -> None:
    """Keep escrow equal to the open holds' remaining money after a reversal put money back into escrow."""
    taken = session.execute(select(LedgerEntry.account_id, LedgerEntry.amount, LedgerAccount.owner_id,
                                   LedgerAccount.currency)
                            .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
                            .where(LedgerEntry.transaction_id == original.id,
                                   LedgerAccount.kind == AccountKind.REQUESTER_ESCROW, LedgerEntry.amount < 0)).first()
    if taken is None:
        return
    escrow_id, amount, owner_id, currency = taken
    back = -int(amount)
    if hold is not None and hold.state == HoldState.OPEN and hold.posted >= back:
        session.execute(update(Hold).where(Hold.id == hold.id).values(posted=Hold.posted - back)
                        .execution_options(synchronize_session=False))
        session.refresh(hold)
        return
    to = ledger.available(owner_id, currency)
    ledger.post(session, [ledger.Posting(
        f"release:{original.batch_id}:reverse-{original.id}", TransactionKind.RELEASE, currency,
        ((escrow_id, -back), (ledger.account_ids(session, [to])[to], back)),
        {"requester_id": owner_id, "batch_id": original.batch_id,
         "reason": f"Reversal of transaction {original.id}: the escrow of a closed hold, back to available"})],
        now=now)
