"""Reports: a worker's earnings by day and project, a requester's spend by project and batch (grouped in SQL).

Money comes from the ledger (what was actually posted, reversals netted on the day they were posted); time comes
from AssignmentPay.duration_ms (the server-measured time of each approved assignment, on its approval day). The
effective hourly rate is (rewards + bonuses) per hour of that time, computed in Decimal and rounded half up to
the cent once.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, aliased

from base.money import hourly_rate, round_cents
from market.catalogue.models import Batch, Project
from payments.models import (
    AccountKind,
    AssignmentPay,
    Hold,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    TransactionKind,
)


def _utc_day(session: Session, column: Any) -> Any:
    """The UTC calendar day of a timestamp column, as SQL (SQLite stores UTC already; PostgreSQL's date() would
    use the session's time zone)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone("UTC", column))
    return func.date(column)


def _as_day(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def _money_by_kind(session: Session, *, where: list[Any], group: list[Any], account_kinds: tuple[AccountKind, ...]):
    """Sums of entries on accounts of `account_kinds`, by the transaction's kind (a reversal counts as the kind
    it reverses, negatively) and by the `group` columns."""
    original = aliased(LedgerTransaction)
    kind = func.coalesce(original.kind, LedgerTransaction.kind).label("kind")
    return session.execute(
        select(*group, LedgerAccount.currency, LedgerAccount.kind, kind, func.sum(LedgerEntry.amount))
        .select_from(LedgerEntry)
        .join(LedgerAccount, LedgerAccount.id == LedgerEntry.account_id)
        .join(LedgerTransaction, LedgerTransaction.id == LedgerEntry.transaction_id)
        .outerjoin(original, original.id == LedgerTransaction.reverses_id)
        .outerjoin(Batch, Batch.id == LedgerTransaction.batch_id)
        .where(LedgerAccount.kind.in_(account_kinds), *where)
        .group_by(*group, LedgerAccount.currency, LedgerAccount.kind, kind))


def worker_earnings(session: Session, *, worker_id: int) -> dict[str, Any]:
    """Per (day, project, currency): rewards, bonuses, assignments, time worked, hours and effective rate."""
    project = func.coalesce(LedgerTransaction.project_id, Batch.project_id).label("project_id")
    day = _utc_day(session, LedgerTransaction.created_at).label("day")
    rows: dict[tuple[str, int | None, str], dict[str, Any]] = {}

    def row(day: Any, project_id: int | None, currency: str) -> dict[str, Any]:
        key = (_as_day(day), project_id, currency)
        return rows.setdefault(key, {"day": key[0], "project_id": project_id, "currency": currency, "rewards": 0,
                                     "bonuses": 0, "assignments": 0, "duration_ms": 0})

    for d, p, currency, _, kind, amount in _money_by_kind(
            session, where=[LedgerAccount.owner_id == worker_id],
            group=[day, project], account_kinds=(AccountKind.WORKER_PAYABLE,)):
        kind = TransactionKind(kind)
        if kind in (TransactionKind.REWARD, TransactionKind.BONUS):
            row(d, p, currency)["rewards" if kind == TransactionKind.REWARD else "bonuses"] += int(amount or 0)
    pay_day = _utc_day(session, AssignmentPay.approved_at)
    for d, p, currency, n, ms in session.execute(
            select(pay_day, AssignmentPay.project_id, AssignmentPay.currency, func.count(),
                   func.sum(AssignmentPay.duration_ms))
            .where(AssignmentPay.worker_id == worker_id)
            .group_by(pay_day, AssignmentPay.project_id, AssignmentPay.currency)):
        r = row(d, p, currency)
        r["assignments"], r["duration_ms"] = int(n), int(ms or 0)
    data = [_rated(r) for _, r in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0, kv[0][2]))]
    _titles(session, data)
    return {"worker_id": worker_id, "data": data}


def worker_realized_rate(session: Session, *, worker_id: int) -> list[dict[str, Any]]:
    """Per currency, over all time: what the worker was paid (rewards and bonuses, net of reversals, as
    `worker_earnings` counts them), the measured time of their approved work, and the realized hourly rate
    (paid per hour of that time; None before any approved work was timed)."""
    totals: dict[str, dict[str, Any]] = {}
    for r in worker_earnings(session, worker_id=worker_id)["data"]:
        t = totals.setdefault(r["currency"], {"currency": r["currency"], "rewards": 0, "bonuses": 0,
                                              "assignments": 0, "duration_ms": 0})
        for k in ("rewards", "bonuses", "assignments", "duration_ms"):
            t[k] += r[k]
    return [_rated(t) for _, t in sorted(totals.items())]


def _rated(r: dict[str, Any]) -> dict[str, Any]:
    seconds = Decimal(r["duration_ms"]) / 1000
    rate = hourly_rate(r["rewards"] + r["bonuses"], seconds)
    r["hours"] = str((seconds / 3600).quantize(Decimal("0.0001")))
    r["hourly_rate_cents"] = None if rate is None else round_cents(rate)
    return r


def _titles(session: Session, data: list[dict[str, Any]]) -> None:
    ids = sorted({r["project_id"] for r in data if r["project_id"] is not None})
    titles = {i: t for i, t in session.execute(select(Project.id, Project.title).where(Project.id.in_(ids)))}
    for r in data:
        r["project_title"] = titles.get(r["project_id"])


def requester_spend(session: Session, *, requester_id: int) -> dict[str, Any]:
    """Per (project, batch, currency): rewards, bonuses and fees posted (net of reversals), and the batch's hold
    (held, posted, released, remaining)."""
    mine = select(Project.id).where(Project.owner_id == requester_id)
    rows: dict[tuple[int | None, int | None, str], dict[str, Any]] = {}

    def row(project_id: int | None, batch_id: int | None, currency: str) -> dict[str, Any]:
        return rows.setdefault((project_id, batch_id, currency), {
            "project_id": project_id, "batch_id": batch_id, "currency": currency, "rewards": 0, "bonuses": 0,
            "fees": 0, "held": 0, "posted": 0, "released": 0, "remaining": 0})

    for p, b, currency, account_kind, kind, amount in _money_by_kind(
            session, where=[or_(Batch.project_id.in_(mine), LedgerTransaction.requester_id == requester_id)],
            group=[Batch.project_id, LedgerTransaction.batch_id],
            account_kinds=(AccountKind.WORKER_PAYABLE, AccountKind.PLATFORM_FEES, AccountKind.EXTERNAL_PLATFORM)):
        kind = TransactionKind(kind)
        if kind not in (TransactionKind.REWARD, TransactionKind.BONUS):
            continue
        r = row(p, b, currency)
        if account_kind == AccountKind.PLATFORM_FEES:
            r["fees"] += int(amount or 0)
        else:
            r["rewards" if kind == TransactionKind.REWARD else "bonuses"] += int(amount or 0)
    for p, b, currency, held, posted, released in session.execute(
            select(Batch.project_id, Hold.batch_id, Hold.currency, Hold.held, Hold.posted, Hold.released)
            .join(Batch, Batch.id == Hold.batch_id).where(Hold.requester_id == requester_id)):
        r = row(p, b, currency)
        r.update(held=int(held), posted=int(posted), released=int(released),
                 remaining=int(held - posted - released))
    data = [r for _, r in sorted(rows.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1] or 0, kv[0][2]))]
    for r in data:
        r["total"] = r["rewards"] + r["bonuses"] + r["fees"]
    _titles(session, data)
    names = {i: n for i, n in session.execute(select(Batch.id, Batch.name).where(
        Batch.id.in_([r["batch_id"] for r in data if r["batch_id"] is not None])))}
    for r in data:
        r["batch_name"] = names.get(r["batch_id"])
    return {"requester_id": requester_id, "data": data}


WORKER_COLUMNS = ("day", "project_id", "project_title", "currency", "rewards", "bonuses", "assignments",
                  "duration_ms", "hours", "hourly_rate_cents")
REQUESTER_COLUMNS = ("project_id", "project_title", "batch_id", "batch_name", "currency", "rewards", "bonuses",
                     "fees", "total", "held", "posted", "released", "remaining")


def as_csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    """Report rows as CSV with a header row (cents as integers)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow(["" if r.get(c) is None else r[c] for c in columns])
    return buffer.getvalue()
