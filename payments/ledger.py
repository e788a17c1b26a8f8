"""The ledger: post balanced transactions, reverse them, hold and release escrow, check the books.

Every movement of money goes through `post` (many transactions in one call: bulk approval posts 100,000 in a few
statements). A transaction is a list of legs (account, signed cents) that sum to zero, and an idempotency key that
is unique in the database: posting a key twice fails, and the callers that may be retried look the key up first
(`find`). Balances are updated in the same database transaction, locking the accounts in id order (so concurrent
posters never deadlock on them), and the database's CHECK refuses any limit broken: a requester's available
money, an escrow, a hold and a worker's payable never go below zero, whoever writes (`InsufficientFunds`, 402).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from base import events
from base.clock import utcnow
from base.db import dialect_insert
from base.errors import Conflict, DomainError, NotFound
from base.uow import savepoint
from payments.models import (
    NONNEGATIVE,
    AccountKind,
    Hold,
    HoldState,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    TransactionKind,
)


class InsufficientFunds(DomainError):
    """Too little money for what was asked: 402, with the shortfall (cents and currency) in the problem."""

    status = 402
    title = "Insufficient funds"


# --- accounts -------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AccountRef:
    kind: AccountKind
    currency: str
    owner_id: int | None = None
    platform: str | None = None

    @property
    def code(self) -> str:
        side = {AccountKind.REQUESTER_AVAILABLE: "available", AccountKind.REQUESTER_ESCROW: "escrow",
                AccountKind.WORKER_PAYABLE: "payable", AccountKind.WORKER_PAID_OUT: "paid_out"}
        if self.kind in (AccountKind.REQUESTER_AVAILABLE, AccountKind.REQUESTER_ESCROW):
            return f"requester:{self.owner_id}:{side[self.kind]}:{self.currency}"
        if self.kind in (AccountKind.WORKER_PAYABLE, AccountKind.WORKER_PAID_OUT):
            return f"worker:{self.owner_id}:{side[self.kind]}:{self.currency}"
        if self.kind == AccountKind.PLATFORM_FEES:
            return f"fees:{self.platform or 'platform'}:{self.currency}"
        if self.kind == AccountKind.PLATFORM_FUNDING:
            return f"funding:external:{self.currency}"
        return f"external:{self.platform}:{self.currency}"


def available(requester_id: int, currency: str) -> AccountRef:
    return AccountRef(AccountKind.REQUESTER_AVAILABLE, currency, requester_id)


def escrow(requester_id: int, currency: str) -> AccountRef:
    return AccountRef(AccountKind.REQUESTER_ESCROW, currency, requester_id)


def payable(worker_id: int, currency: str) -> AccountRef:
    return AccountRef(AccountKind.WORKER_PAYABLE, currency, worker_id)


def paid_out(worker_id: int, currency: str) -> AccountRef:
    return AccountRef(AccountKind.WORKER_PAID_OUT, currency, worker_id)


def fees(currency: str, platform: str = "platform") -> AccountRef:
    return AccountRef(AccountKind.PLATFORM_FEES, currency, platform=platform)


def funding(currency: str) -> AccountRef:
    return AccountRef(AccountKind.PLATFORM_FUNDING, currency)


def external(platform: str, currency: str) -> AccountRef:
    return AccountRef(AccountKind.EXTERNAL_PLATFORM, currency, platform=platform)


def account_ids(session: Session, refs: Iterable[AccountRef]) -> dict[AccountRef, int]:
    """The ledger account of each ref, created on first use (a race to create one is settled by its unique
    code)."""
    wanted = {ref.code: ref for ref in refs}
    if not wanted:
        return {}
    found = _ids_by_code(session, list(wanted))
    # In code order: two transactions creating the same accounts wait for each other's rows in one order, never
    # in a cycle (unordered, concurrent approvals creating workers' payable accounts deadlocked).
    missing = sorted((ref for code, ref in wanted.items() if code not in found), key=lambda ref: ref.code)
    if missing and _pg(session):
        # One statement over arrays, in code order (ORDER BY), returning what it made.
        found.update({code: aid for code, aid in session.execute(_PG_NEW_ACCOUNTS, {
            "code": [r.code for r in missing], "kind": [r.kind.value for r in missing],
            "owner": [r.owner_id for r in missing], "platform": [r.platform for r in missing],
            "currency": [r.currency for r in missing], "nonneg": [r.kind in NONNEGATIVE for r in missing],
            "now": utcnow()})})
        missing = [ref for ref in missing if ref.code not in found]  # another transaction made these meanwhile
    if missing and not _pg(session):
        insert = dialect_insert(session.get_bind().dialect.name)
        session.execute(insert(LedgerAccount).on_conflict_do_nothing(index_elements=["code"]), [
            {"code": ref.code, "kind": ref.kind, "owner_id": ref.owner_id, "platform": ref.platform,
             "currency": ref.currency, "balance": 0, "nonnegative": ref.kind in NONNEGATIVE}
            for ref in missing])
    if missing:
        found.update(_ids_by_code(session, [ref.code for ref in missing]))
    return {ref: found[code] for code, ref in wanted.items()}


# PostgreSQL: many ids or codes travel as one array parameter (`= ANY(:array)`), not as an IN list of thousands
# of bind parameters, which psycopg spends most of a bulk payout's time converting.
_PG_IDS_BY_CODE = text("SELECT code, id FROM ledger_account WHERE code = ANY(CAST(:codes AS text[]))")
_PG_LOCK = text("SELECT id FROM ledger_account WHERE id = ANY(CAST(:ids AS bigint[])) ORDER BY id "
                "FOR NO KEY UPDATE")
_PG_NEW_ACCOUNTS = text("""
    INSERT INTO ledger_account (code, kind, owner_id, platform, currency, balance, nonnegative, created_at)
    SELECT x.code, x.kind, x.owner, x.platform, x.currency, 0, x.nonneg, CAST(:now AS timestamptz)
    FROM unnest(CAST(:code AS text[]), CAST(:kind AS text[]), CAST(:owner AS bigint[]), CAST(:platform AS text[]),
                CAST(:currency AS text[]), CAST(:nonneg AS boolean[]))
         AS x(code, kind, owner, platform, currency, nonneg)
    ORDER BY x.code
    ON CONFLICT (code) DO NOTHING
    RETURNING code, id""")


def _pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _ids_by_code(session: Session, codes: list[str]) -> dict[str, int]:
    if _pg(session):
        return {code: aid for code, aid in session.execute(_PG_IDS_BY_CODE, {"codes": codes})}
    out: dict[str, int] = {}
    for start in range(0, len(codes), 5000):
        part = codes[start:start + 5000]
        out.update({code: aid for code, aid in session.execute(
            select(LedgerAccount.code, LedgerAccount.id).where(LedgerAccount.code.in_(part)))})
    return out


def balance(session: Session, ref: AccountRef) -> int:
    """An account's balance in cents (0 for an account never used)."""
    value = session.scalar(select(LedgerAccount.balance).where(LedgerAccount.code == ref.code))
    return int(value or 0)


# --- posting --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Posting:
    """One transaction to post: its legs (account id, signed cents) sum to zero."""

    key: str
    kind: TransactionKind
    currency: str
    legs: tuple[tuple[int, int], ...]
    meta: dict[str, Any] = field(default_factory=dict)


_META = ("requester_id", "worker_id", "project_id", "batch_id", "assignment_id", "hold_id", "payout_id",
         "actor_id", "reason", "detail", "reverses_id")


def post(session: Session, postings: Sequence[Posting], *, now: dt.datetime) -> list[int]:
    """Post transactions (in one database transaction, the caller's); returns their ids in order."""
    if not postings:
        return []
    for p in postings:
        legs = [(a, c) for a, c in p.legs if c != 0]
        if type(p.currency) is not str or len(legs) < 2 or sum(c for _, c in legs) != 0 \
                or any(type(c) is not int for _, c in legs):
            raise ValueError(f"unbalanced or malformed transaction {p.key!r}: {p.legs!r}")
        if unknown := set(p.meta) - set(_META):
            raise ValueError(f"unknown transaction fields {sorted(unknown)}")
    deltas: defaultdict[int, int] = defaultdict(int)
    for p in postings:
        for account, cents in p.legs:
            deltas[account] += cents
    _lock(session, sorted(a for a, d in deltas.items() if d))
    rows = [{"idempotency_key": p.key, "kind": p.kind, "currency": p.currency, "created_at": now,
             "reason": p.meta.get("reason", ""), **{k: p.meta.get(k) for k in _META if k != "reason"}}
            for p in postings]
    pg = session.get_bind().dialect.name == "postgresql"
    try:
        with savepoint(session):
            if pg:
                ids = _insert_transactions_pg(session, rows)
            else:
                ids = list(session.scalars(LedgerTransaction.__table__.insert().returning(
                    LedgerTransaction.id, sort_by_parameter_order=True), rows))
    except IntegrityError as exc:
        raise Conflict("A transaction with this idempotency key exists already.",
                       errors={"idempotency_key": ["used"]}) from exc
    entries = [(tid, account, cents) for tid, p in zip(ids, postings, strict=True)
               for account, cents in p.legs if cents != 0]
    if pg:
        session.execute(_PG_ENTRIES, {"t": [e[0] for e in entries], "a": [e[1] for e in entries],
                                      "m": [e[2] for e in entries]})
    else:
        session.execute(LedgerEntry.__table__.insert(),
                        [{"transaction_id": t, "account_id": a, "amount": m} for t, a, m in entries])
    _apply(session, deltas)
    events.publish(session, events.LedgerPosted(tuple(TransactionKind(p.kind).value for p in postings), now))
    return ids


# PostgreSQL: each of a bulk post's three writes is one statement over arrays (unnest), not thousands of rows of
# parameters: 100,000 approvals took half the time than through executemany (insertmanyvalues), whose statements
# psycopg re-parsed for every page of rows.
_TXN_ARRAYS = (("idempotency_key", "text"), ("kind", "text"), ("currency", "text"), ("reason", "text"),
               ("requester_id", "bigint"), ("worker_id", "bigint"), ("project_id", "bigint"), ("batch_id", "bigint"),
               ("assignment_id", "bigint"), ("hold_id", "bigint"), ("payout_id", "bigint"), ("actor_id", "bigint"),
               ("detail", "jsonb"), ("reverses_id", "bigint"))
_PG_TRANSACTIONS = text(
    f"INSERT INTO ledger_transaction (created_at, {', '.join(c for c, _ in _TXN_ARRAYS)}) "
    f"SELECT CAST(:now AS timestamptz), {', '.join(f'x.{c}' for c, _ in _TXN_ARRAYS)} "
    f"FROM unnest({', '.join(f'CAST(:{c} AS {t}[])' for c, t in _TXN_ARRAYS)}) "
    f"AS x({', '.join(c for c, _ in _TXN_ARRAYS)}) RETURNING id, idempotency_key")
_PG_ENTRIES = text("INSERT INTO ledger_entry (transaction_id, account_id, amount) "
                   "SELECT * FROM unnest(CAST(:t AS bigint[]), CAST(:a AS bigint[]), CAST(:m AS bigint[]))")
_PG_ADD = text("UPDATE ledger_account AS a SET balance = a.balance + x.d "
               "FROM unnest(CAST(:a AS bigint[]), CAST(:d AS bigint[])) AS x(id, d) WHERE a.id = x.id")


def _insert_transactions_pg(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    params: dict[str, Any] = {"now": rows[0]["created_at"]}
    for column, kind in _TXN_ARRAYS:
        values = [r[column] for r in rows]
        if kind == "jsonb":
            values = [None if v is None else json.dumps(v) for v in values]
        elif column == "kind":
            values = [TransactionKind(v).value for v in values]
        params[column] = values
    by_key = dict((key, tid) for tid, key in session.execute(_PG_TRANSACTIONS, params))
    return [by_key[r["idempotency_key"]] for r in rows]


_ACCOUNTS = LedgerAccount.__table__
_ADD = _ACCOUNTS.update().where(_ACCOUNTS.c.id == bindparam("aid")).values(balance=_ACCOUNTS.c.balance
                                                                            + bindparam("delta"))


def _lock(session: Session, accounts: list[int]) -> None:
    """Lock the accounts in id order before anything else touches them: two posters touching the same accounts
    queue up rather than deadlock. NO KEY UPDATE, the lock the balance update takes anyway, so the foreign-key
    checks of the entries' inserts (KEY SHARE) do not conflict with it."""
    if _pg(session):  # SQLite has one writer at a time
        session.execute(_PG_LOCK, {"ids": accounts})


def _apply(session: Session, deltas: dict[int, int]) -> None:
    changed = sorted(a for a, d in deltas.items() if d)
    if not changed:
        return
    try:
        with savepoint(session):
            if session.get_bind().dialect.name == "postgresql":
                session.execute(_PG_ADD, {"a": changed, "d": [deltas[a] for a in changed]})
            else:
                session.execute(_ADD, [{"aid": a, "delta": deltas[a]} for a in changed])
    except IntegrityError as exc:
        _raise_shortfall(session, deltas, exc)
        raise


def _raise_shortfall(session: Session, deltas: dict[int, int], exc: IntegrityError) -> None:
    debited = [a for a, d in deltas.items() if d < 0]
    rows = session.execute(select(LedgerAccount.id, LedgerAccount.code, LedgerAccount.balance,
                                  LedgerAccount.currency, LedgerAccount.nonnegative)
                           .where(LedgerAccount.id.in_(debited)))
    for aid, code, bal, currency, nonneg in rows:
        if nonneg and bal + deltas[aid] < 0:
            short = -(bal + deltas[aid])
            raise InsufficientFunds(
                f"{code} holds {bal} cents; {-deltas[aid]} are needed: {short} short.",
                errors={"balance": [f"short by {short} {currency} cents"]},
                shortfall={"cents": short, "currency": currency}, account=code) from exc


def find(session: Session, key: str) -> LedgerTransaction | None:
    """The transaction posted under an idempotency key, if any."""
    return session.scalar(select(LedgerTransaction).where(LedgerTransaction.idempotency_key == key))


def legs_of(session: Session, transaction_id: int) -> list[tuple[int, int]]:
    return [(a, c) for a, c in session.execute(select(LedgerEntry.account_id, LedgerEntry.amount)
                                               .where(LedgerEntry.transaction_id == transaction_id)
                                               .order_by(LedgerEntry.id))]


def reverse(session: Session, transaction_id: int, *, now: dt.datetime, reason: str,
            actor_id: int | None = None) -> LedgerTransaction:
    """Post the exact negation of a transaction (at most once: a second call returns the first reversal)."""
    original = session.get(LedgerTransaction, transaction_id)
    if original is None:
        raise NotFound(f"Transaction {transaction_id} not found.")
    if original.kind == TransactionKind.REVERSAL:
        raise Conflict("A reversal is not reversed; post the original again under a new key.")
    done = session.scalar(select(LedgerTransaction).where(LedgerTransaction.reverses_id == transaction_id))
    if done is not None:
        return done
    meta = {k: getattr(original, k) for k in _META if k not in ("reason", "detail", "reverses_id", "actor_id")}
    [tid] = post(session, [Posting(f"reverse:{transaction_id}", TransactionKind.REVERSAL, original.currency,
                                   tuple((a, -c) for a, c in legs_of(session, transaction_id)),
                                   {**meta, "reverses_id": transaction_id, "reason": reason, "actor_id": actor_id,
                                    "detail": {"reverses_kind": original.kind.value}})], now=now)
    return session.get(LedgerTransaction, tid)  # type: ignore[return-value]


# --- funding --------------------------------------------------------------------------------------------------

def fund(session: Session, *, requester_id: int, cents: int, currency: str, key: str, now: dt.datetime,
         actor_id: int | None, reason: str = "") -> tuple[LedgerTransaction, bool]:
    """Credit a requester's available money from outside; returns (transaction, created). A repeated key with the
    same amount is a replay; with another amount, a conflict."""
    if type(cents) is not int or cents <= 0:
        raise ValueError("funding is a positive number of integer cents")
    key = f"fund:{key}"
    ids = account_ids(session, [available(requester_id, currency), funding(currency)])
    done = find(session, key)
    if done is not None:
        if (ids[available(requester_id, currency)], cents) not in legs_of(session, done.id):
            raise Conflict("This idempotency key funded something else.", errors={"idempotency_key": ["used"]})
        return done, False
    [tid] = post(session, [Posting(key, TransactionKind.FUNDING, currency,
                                   ((ids[funding(currency)], -cents), (ids[available(requester_id, currency)], cents)),
                                   {"requester_id": requester_id, "actor_id": actor_id, "reason": reason})], now=now)
    return session.get(LedgerTransaction, tid), True  # type: ignore[return-value]


# --- holds (escrow) -------------------------------------------------------------------------------------------

def place_hold(session: Session, *, requester_id: int, batch_id: int, currency: str, cents: int,
               now: dt.datetime, detail: dict[str, Any] | None = None) -> Hold:
    """Reserve `cents` of the requester's available money for a batch (402 with the shortfall when short)."""
    hold = Hold(requester_id=requester_id, batch_id=batch_id, currency=currency, state=HoldState.OPEN, held=0,
                posted=0, released=0, detail=detail, created_at=now)
    session.add(hold)
    session.flush()
    if cents:
        extend_hold(session, hold, cents, now=now, key=f"hold:{batch_id}")
    return hold


def extend_hold(session: Session, hold: Hold, cents: int, *, now: dt.datetime, key: str) -> None:
    """Move more of the requester's available money into a hold."""
    ids = account_ids(session, [available(hold.requester_id, hold.currency), escrow(hold.requester_id, hold.currency)])
    post(session, [Posting(key, TransactionKind.HOLD, hold.currency,
                           ((ids[available(hold.requester_id, hold.currency)], -cents),
                            (ids[escrow(hold.requester_id, hold.currency)], cents)),
                           {"requester_id": hold.requester_id, "batch_id": hold.batch_id, "hold_id": hold.id})],
         now=now)
    session.execute(update(Hold).where(Hold.id == hold.id).values(held=Hold.held + cents)
                    .execution_options(synchronize_session=False))
    session.refresh(hold)


def lock_hold(session: Session, batch_id: int) -> Hold | None:
    """A batch's hold, locked for this transaction."""
    return session.scalar(select(Hold).where(Hold.batch_id == batch_id).with_for_update()
                          .execution_options(populate_existing=True))


def remaining(hold: Hold) -> int:
    return hold.held - hold.posted - hold.released


def draw(session: Session, hold: Hold, cents: int, *, now: dt.datetime, key: str) -> None:
    """Count `cents` of an open hold as posted (the caller posts the transaction that moves them out of escrow),
    extending the hold from the requester's available money first when it is short."""
    if hold.state != HoldState.OPEN:
        raise Conflict(f"The hold of batch {hold.batch_id} is closed.")
    short = cents - remaining(hold)
    if short > 0:
        extend_hold(session, hold, short, now=now, key=f"{key}:extend")
    session.execute(update(Hold).where(Hold.id == hold.id).values(posted=Hold.posted + cents)
                    .execution_options(synchronize_session=False))
    session.refresh(hold)


def release(session: Session, hold: Hold, cents: int, *, now: dt.datetime, key: str, close: bool = False) -> int:
    """Give `cents` of a hold back to the requester's available money; `close` ends the hold (at most once: a
    closed hold is never reopened). Returns the cents released."""
    if hold.state != HoldState.OPEN:
        return 0
    cents = min(cents, remaining(hold))
    if cents > 0:
        ids = account_ids(session, [available(hold.requester_id, hold.currency),
                                    escrow(hold.requester_id, hold.currency)])
        post(session, [Posting(key, TransactionKind.RELEASE, hold.currency,
                               ((ids[escrow(hold.requester_id, hold.currency)], -cents),
                                (ids[available(hold.requester_id, hold.currency)], cents)),
                               {"requester_id": hold.requester_id, "batch_id": hold.batch_id, "hold_id": hold.id})],
             now=now)
    values: dict[str, Any] = {"released": Hold.released + cents}
    if close:
        values.update(state=HoldState.CLOSED, closed_at=now)
    done = session.execute(update(Hold).where(Hold.id == hold.id, Hold.state == HoldState.OPEN).values(**values)
                           .execution_options(synchronize_session=False)).rowcount
    if done != 1:
        raise Conflict(f"The hold of batch {hold.batch_id} was closed meanwhile.")
    session.refresh(hold)
    return cents


# --- the books ------------------------------------------------------------------------------------------------

def check_books(session: Session) -> list[str]:
    """Every way the books could be wrong, as sentences (none: they balance). Per currency: entries of each
    transaction sum to zero; each account's balance is the sum of its entries; no limited account is negative;
    each requester's escrow equals the remaining money of their open holds."""
    problems: list[str] = []
    for tid, total in session.execute(select(LedgerEntry.transaction_id, func.sum(LedgerEntry.amount))
                                      .group_by(LedgerEntry.transaction_id)
                                      .having(func.sum(LedgerEntry.amount) != 0)):
        problems.append(f"transaction {tid} is unbalanced by {total}")
    sums = {aid: total for aid, total in session.execute(
        select(LedgerEntry.account_id, func.sum(LedgerEntry.amount)).group_by(LedgerEntry.account_id))}
    per_currency: defaultdict[str, int] = defaultdict(int)
    escrows: dict[tuple[int, str], int] = {}
    for aid, code, kind, owner, currency, bal, nonneg in session.execute(select(
            LedgerAccount.id, LedgerAccount.code, LedgerAccount.kind, LedgerAccount.owner_id,
            LedgerAccount.currency, LedgerAccount.balance, LedgerAccount.nonnegative)):
        if int(sums.get(aid, 0)) != bal:
            problems.append(f"{code}: balance {bal} but its entries sum to {int(sums.get(aid, 0))}")
        if nonneg and bal < 0:
            problems.append(f"{code} is negative: {bal}")
        per_currency[currency] += bal
        if kind == AccountKind.REQUESTER_ESCROW:
            escrows[(owner, currency)] = bal
    problems += [f"{currency} balances sum to {total}, not 0" for currency, total in per_currency.items() if total]
    held: defaultdict[tuple[int, str], int] = defaultdict(int)
    for requester, currency, rest in session.execute(
            select(Hold.requester_id, Hold.currency, func.sum(Hold.held - Hold.posted - Hold.released))
            .group_by(Hold.requester_id, Hold.currency)):
        held[(requester, currency)] = int(rest or 0)
    for key in set(held) | set(escrows):
        if held.get(key, 0) != escrows.get(key, 0):
            problems.append(f"requester {key[0]} {key[1]}: escrow {escrows.get(key, 0)} but holds keep "
                            f"{held.get(key, 0)}")
    for hold_id in session.scalars(select(Hold.id).where(Hold.state == HoldState.CLOSED,
                                                         Hold.held != Hold.posted + Hold.released)):
        problems.append(f"hold {hold_id} is closed with money left in it")
    return problems
