"""Payout batches: what each worker is paid out for a period, approved by ops, paid through a provider.

Create (DRAFT): one line per worker whose payable balance, at creation, is at least the batch's minimum (and
above zero); a worker with an unresolved flag (open, or blocked and not yet dismissed: workers/flags.py closes a
flag only by dismissing it) gets a HELD line that names the flags' reasons; nothing moves yet. A worker whose money
is already in a pending line of another draft batch of the currency is left out (no double payout).
Approve: each pending line posts `payout:<line_id>` (payable -> paid out). A line whose payable fell meanwhile
below its amount is not paid: it is HELD with the reason, and the rest of the batch goes on (one short worker
does not stop ten thousand payouts). Then the provider is asked to pay (providers.py).
Mark paid (a line, or every approved line at once) records the external reference; mark failed reverses the
line's payout, so the money is payable again. Every step is idempotent.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from sqlalchemy import bindparam, func, literal, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from base.errors import Conflict, IdempotencyConflict, InvalidInput, NotFound
from base.paging import keyset_page
from base.uow import savepoint
from payments import ledger
from payments.books.providers import PROVIDERS
from payments.models import (
    AccountKind,
    LedgerAccount,
    PayoutBatch,
    PayoutBatchStatus,
    PayoutLine,
    PayoutLineStatus,
    TransactionKind,
)
from workers.models import Account, FlagState, WorkerFlag

UNRESOLVED_FLAGS = (FlagState.OPEN, FlagState.BLOCKED)


def create_batch(session: Session, *, actor_id: int, currency: str, period_end: dt.datetime, minimum_cents: int,
                 now: dt.datetime, provider: str = "manual", key: str | None = None) -> tuple[PayoutBatch, bool]:
    """A draft payout batch for the period (idempotent by key); returns (batch, created)."""
    if provider not in PROVIDERS:
        raise InvalidInput(f"Unknown payout provider {provider!r}.",
                           errors={"provider": [f"one of {sorted(PROVIDERS)}"]})
    if type(minimum_cents) is not int or minimum_cents < 0:
        raise InvalidInput("The minimum is a non-negative number of cents.", errors={"minimum_cents": ["< 0"]})
    wanted = {"currency": currency, "period_end": period_end, "minimum_cents": minimum_cents, "provider": provider}
    if key is not None and (done := _by_key(session, key)) is not None:
        return _replay(done, wanted), False
    batch = PayoutBatch(idempotency_key=key, status=PayoutBatchStatus.DRAFT, created_by_id=actor_id, created_at=now,
                        **wanted)
    try:
        with savepoint(session):
            session.add(batch)
            session.flush()
    except IntegrityError:
        done = _by_key(session, key) if key is not None else None
        if done is None:
            raise
        return _replay(done, wanted), False
    _add_lines(session, batch)
    return batch, True


def _by_key(session: Session, key: str) -> PayoutBatch | None:
    return session.scalar(select(PayoutBatch).where(PayoutBatch.idempotency_key == key))


def _replay(batch: PayoutBatch, wanted: dict[str, Any]) -> PayoutBatch:
    if any(getattr(batch, k) != v for k, v in wanted.items()):
        raise IdempotencyConflict()
    return batch


def _add_lines(session: Session, batch: PayoutBatch) -> None:
    """One line per worker whose payable balance reaches the minimum, written by one INSERT ... SELECT; then the
    lines of workers with unresolved flags are held, with the flags as the reason."""
    in_other_drafts = (select(PayoutLine.worker_id).join(PayoutBatch, PayoutBatch.id == PayoutLine.payout_batch_id)
                       .where(PayoutBatch.status == PayoutBatchStatus.DRAFT, PayoutBatch.id != batch.id,
                              PayoutBatch.currency == batch.currency, PayoutLine.status == PayoutLineStatus.PENDING))
    due = (select(literal(batch.id), LedgerAccount.owner_id, LedgerAccount.currency, LedgerAccount.balance,
                  literal(PayoutLineStatus.PENDING.value))
           .where(LedgerAccount.kind == AccountKind.WORKER_PAYABLE, LedgerAccount.currency == batch.currency,
                  LedgerAccount.balance >= max(batch.minimum_cents, 1), LedgerAccount.owner_id.not_in(in_other_drafts))
           .order_by(LedgerAccount.owner_id))
    session.execute(PayoutLine.__table__.insert().from_select(
        ["payout_batch_id", "worker_id", "currency", "amount_cents", "status"], due))
    held = _flag_reasons(session, batch.id)
    if held:
        lines = PayoutLine.__table__
        session.execute(lines.update().where(lines.c.payout_batch_id == batch.id,
                                             lines.c.worker_id == bindparam("w"))
                        .values(status=PayoutLineStatus.HELD.value, hold_reason=bindparam("r")),
                        [{"w": w, "r": r} for w, r in sorted(held.items())])


def _flag_reasons(session: Session, payout_batch_id: int) -> dict[int, str]:
    """Why each worker of the batch's lines is held back: their unresolved flags."""
    reasons: defaultdict[int, list[str]] = defaultdict(list)
    for worker, flag_id, reason, state in session.execute(
            select(WorkerFlag.account_id, WorkerFlag.id, WorkerFlag.reason, WorkerFlag.state)
            .join(PayoutLine, PayoutLine.worker_id == WorkerFlag.account_id)
            .where(PayoutLine.payout_batch_id == payout_batch_id, WorkerFlag.state.in_(UNRESOLVED_FLAGS))
            .order_by(WorkerFlag.id)):
        reasons[worker].append(f"flag {flag_id} ({state.value}): {reason.value}")
    return {w: "Held back for review: " + "; ".join(r) for w, r in reasons.items()}


def get_batch(session: Session, batch_id: int, *, lock: bool = False) -> PayoutBatch:
    stmt = select(PayoutBatch).where(PayoutBatch.id == batch_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    batch = session.scalar(stmt)
    if batch is None:
        raise NotFound(f"Payout batch {batch_id} not found.")
    return batch


def list_batches(session: Session, *, after: int | None, limit: int,
                 status: PayoutBatchStatus | None = None) -> list[PayoutBatch]:
    return keyset_page(session, PayoutBatch, after=after, limit=limit, equal=((PayoutBatch.status, status),))


def newest_batches(session: Session, *, before: int | None, limit: int) -> list[PayoutBatch]:
    """Payout batches newest first (by id): at most `limit` with an id below `before` (the ops console's list)."""
    stmt = select(PayoutBatch).order_by(PayoutBatch.id.desc()).limit(limit)
    if before is not None:
        stmt = stmt.where(PayoutBatch.id < before)
    return list(session.scalars(stmt))


def lines_with_workers(session: Session, batch_id: int, *, limit: int) -> list[tuple[PayoutLine, str | None]]:
    """The batch's first `limit` lines (by id), each with its worker's username (or email): what ops read."""
    return [(line, name) for line, name in session.execute(
        select(PayoutLine, func.coalesce(Account.username, Account.email))
        .join(Account, Account.id == PayoutLine.worker_id)
        .where(PayoutLine.payout_batch_id == batch_id).order_by(PayoutLine.id).limit(limit))]


def lines_of(session: Session, batch_id: int, *, status: PayoutLineStatus | None = None) -> list[PayoutLine]:
    stmt = select(PayoutLine).where(PayoutLine.payout_batch_id == batch_id)
    if status is not None:
        stmt = stmt.where(PayoutLine.status == status)
    return list(session.scalars(stmt.order_by(PayoutLine.id)))


def worker_lines(session: Session, *, worker_id: int, limit: int = 200) -> list[tuple[PayoutLine, PayoutBatch]]:
    """The worker's payout lines, newest first, each with its payout batch (its status and dates)."""
    return [(line, batch) for line, batch in session.execute(
        select(PayoutLine, PayoutBatch).join(PayoutBatch, PayoutBatch.id == PayoutLine.payout_batch_id)
        .where(PayoutLine.worker_id == worker_id).order_by(PayoutLine.id.desc()).limit(limit))]


def summary(session: Session, batch_id: int) -> dict[str, dict[str, int]]:
    """Lines and cents per line status."""
    out: dict[str, dict[str, int]] = {}
    for status, n, cents in session.execute(
            select(PayoutLine.status, func.count(), func.sum(PayoutLine.amount_cents))
            .where(PayoutLine.payout_batch_id == batch_id).group_by(PayoutLine.status)):
        out[status.value] = {"lines": int(n), "cents": int(cents or 0)}
    return out


def approve(session: Session, *, batch_id: int, actor_id: int, now: dt.datetime) -> PayoutBatch:
    """Move each pending line's money payable -> paid out (idempotent: an approved batch is returned as it is),
    then hand the lines to the batch's provider."""
    batch = get_batch(session, batch_id, lock=True)
    if batch.status in (PayoutBatchStatus.APPROVED, PayoutBatchStatus.PAID):
        return batch
    if batch.status != PayoutBatchStatus.DRAFT:
        raise Conflict(f"Payout batch {batch_id} is {batch.status.value}.", errors={"status": [batch.status.value]})
    lines = lines_of(session, batch_id, status=PayoutLineStatus.PENDING)
    refs = {w: (ledger.payable(w, batch.currency), ledger.paid_out(w, batch.currency)) for w in
            sorted({line.worker_id for line in lines})}
    ids = ledger.account_ids(session, [r for pair in refs.values() for r in pair])
    # Lock every account the payouts touch, in id order and NO KEY UPDATE, as post() does: no deadlock.
    balances = _locked_balances(session, sorted(ids.values()))
    postings, paid, short = [], [], []
    for line in lines:
        payable_id, paid_out_id = (ids[r] for r in refs[line.worker_id])
        if balances.get(payable_id, 0) < line.amount_cents:
            short.append({"lid": line.id, "reason": f"Not paid: the payable balance fell to "
                                                     f"{balances.get(payable_id, 0)} cents before approval, below "
                                                     f"this line's {line.amount_cents}."})
            continue
        balances[payable_id] -= line.amount_cents
        paid.append(line)
        postings.append(ledger.Posting(
            f"payout:{line.id}", TransactionKind.PAYOUT, batch.currency,
            ((payable_id, -line.amount_cents), (paid_out_id, line.amount_cents)),
            {"worker_id": line.worker_id, "payout_id": line.id, "actor_id": actor_id,
             "reason": f"Payout batch {batch.id}", "detail": {"payout_batch_id": batch.id}}))
    tids = ledger.post(session, postings, now=now)
    lines_table = PayoutLine.__table__
    if paid and session.get_bind().dialect.name == "postgresql":
        session.execute(_PG_APPROVE_LINES, {"l": [line.id for line in paid], "t": tids})
    elif paid:
        session.execute(lines_table.update().where(lines_table.c.id == bindparam("lid"))
                        .values(status=PayoutLineStatus.APPROVED, transaction_id=bindparam("tid")),
                        [{"lid": line.id, "tid": tid} for line, tid in zip(paid, tids, strict=True)])
    if short:
        session.execute(lines_table.update().where(lines_table.c.id == bindparam("lid"))
                        .values(status=PayoutLineStatus.HELD, hold_reason=bindparam("reason")), short)
    # The lines in this session say what the statements above wrote, without reloading 10,000 rows.
    for line, tid in zip(paid, tids, strict=True):
        set_committed_value(line, "status", PayoutLineStatus.APPROVED)
        set_committed_value(line, "transaction_id", tid)
    held = {entry["lid"] for entry in short}
    for line in lines:
        if line.id in held:
            session.expire(line)
    batch.status, batch.approved_by_id, batch.approved_at = PayoutBatchStatus.APPROVED, actor_id, now
    session.flush()
    references = PROVIDERS[batch.provider].submit(batch, paid)
    if references:
        for line_id, reference in sorted(references.items()):
            mark_paid(session, batch_id=batch_id, line_id=line_id, reference=reference, now=now)
    _settle(session, batch, now)
    return batch


_PG_LOCKED_BALANCES = text("SELECT id, balance FROM ledger_account WHERE id = ANY(CAST(:ids AS bigint[])) "
                           "ORDER BY id FOR NO KEY UPDATE")
# One statement over arrays on PostgreSQL, not an executemany of 10,000 updates.
_PG_APPROVE_LINES = text("UPDATE payout_line AS l SET status = 'approved', transaction_id = x.t "
                         "FROM unnest(CAST(:l AS bigint[]), CAST(:t AS bigint[])) AS x(l, t) WHERE l.id = x.l")


def _locked_balances(session: Session, account_ids: list[int]) -> dict[int, int]:
    out: dict[int, int] = {}
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        return {a: int(b) for a, b in session.execute(_PG_LOCKED_BALANCES, {"ids": account_ids})}
    for start in range(0, len(account_ids), 10_000):
        stmt = (select(LedgerAccount.id, LedgerAccount.balance)
                .where(LedgerAccount.id.in_(account_ids[start:start + 10_000])).order_by(LedgerAccount.id))
        out.update({a: int(b) for a, b in session.execute(stmt.with_for_update(key_share=True) if postgres else stmt)})
    return out


def _line(session: Session, batch_id: int, line_id: int) -> PayoutLine:
    line = session.scalar(select(PayoutLine).where(PayoutLine.id == line_id, PayoutLine.payout_batch_id == batch_id)
                          .with_for_update().execution_options(populate_existing=True))
    if line is None:
        raise NotFound(f"Payout batch {batch_id} has no line {line_id}.")
    return line


def mark_paid(session: Session, *, batch_id: int, line_id: int, reference: str, now: dt.datetime) -> PayoutLine:
    """Record that an approved line was paid, with the provider's reference (again with the same reference: no
    change; with another: 409)."""
    line = _line(session, batch_id, line_id)
    if line.status == PayoutLineStatus.PAID and line.external_reference == reference:
        return line
    if line.status != PayoutLineStatus.APPROVED:
        raise Conflict(f"Payout line {line_id} is {line.status.value}"
                       + (f" (reference {line.external_reference})" if line.external_reference else "") + ".",
                       errors={"status": [line.status.value]})
    line.status, line.external_reference, line.paid_at = PayoutLineStatus.PAID, reference, now
    session.flush()
    _settle(session, get_batch(session, batch_id), now)
    return line


def mark_batch_paid(session: Session, *, batch_id: int, reference: str, now: dt.datetime) -> PayoutBatch:
    """Mark every approved line of the batch paid under one reference (a manual provider's single transfer file)."""
    batch = get_batch(session, batch_id, lock=True)
    if batch.status not in (PayoutBatchStatus.APPROVED, PayoutBatchStatus.PAID):
        raise Conflict(f"Payout batch {batch_id} is {batch.status.value}: approve it first.",
                       errors={"status": [batch.status.value]})
    session.execute(update(PayoutLine).where(PayoutLine.payout_batch_id == batch_id,
                                             PayoutLine.status == PayoutLineStatus.APPROVED)
                    .values(status=PayoutLineStatus.PAID, external_reference=reference, paid_at=now)
                    .execution_options(synchronize_session=False))
    session.expire_all()
    _settle(session, batch, now)
    return batch


def mark_failed(session: Session, *, batch_id: int, line_id: int, reason: str, now: dt.datetime,
                actor_id: int | None) -> PayoutLine:
    """The provider could not pay a line: reverse its payout (the money is payable again). Idempotent."""
    line = _line(session, batch_id, line_id)
    if line.status == PayoutLineStatus.FAILED:
        return line
    if line.status not in (PayoutLineStatus.APPROVED, PayoutLineStatus.PAID) or line.transaction_id is None:
        raise Conflict(f"Payout line {line_id} is {line.status.value}: nothing was paid out.",
                       errors={"status": [line.status.value]})
    ledger.reverse(session, line.transaction_id, now=now, actor_id=actor_id,
                   reason=f"Payout failed: {reason}" if reason else "Payout failed")
    line.status, line.hold_reason = PayoutLineStatus.FAILED, f"Failed: {reason}" if reason else "Failed"
    session.flush()
    _settle(session, get_batch(session, batch_id), now)
    return line


def _settle(session: Session, batch: PayoutBatch, now: dt.datetime) -> None:
    """An approved batch with no line waiting for the provider is paid."""
    if batch.status != PayoutBatchStatus.APPROVED:
        return
    waiting = session.scalar(select(PayoutLine.id).where(PayoutLine.payout_batch_id == batch.id,
                                                         PayoutLine.status == PayoutLineStatus.APPROVED).limit(1))
    if waiting is None:
        batch.status, batch.paid_at = PayoutBatchStatus.PAID, now
        session.flush()


CSV_COLUMNS = ("line_id", "worker_id", "username", "name", "email", "amount", "amount_cents", "currency", "status",
               "hold_reason", "reference")


def csv_lines(session: Session, batch_id: int) -> Iterator[str]:
    """The batch as CSV (a header row, one row per line): what ops pay from."""
    get_batch(session, batch_id)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield flush()
    rows = session.execute(
        select(PayoutLine, Account.username, Account.display_name, Account.email)
        .join(Account, Account.id == PayoutLine.worker_id)
        .where(PayoutLine.payout_batch_id == batch_id).order_by(PayoutLine.id))
    for n, (line, username, name, email) in enumerate(rows, 1):
        writer.writerow((line.id, line.worker_id, username or "", name or "", email or "",
                         _decimal(line.amount_cents), line.amount_cents, line.currency, line.status.value,
                         line.hold_reason or "", line.external_reference or ""))
        if n % 1000 == 0:
            yield flush()
    yield flush()


def _decimal(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"

