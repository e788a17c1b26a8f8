"""Fair-wage top-ups (Fair Work, Whiting et al., HCOMP 2019; Prolific's median rule): the server measures each
assignment's working time; once a batch has 10 submissions, its HITs' time is the median over HITs of each HIT's
median time (rejected work counts: the worker spent the time), which one slow worker or one forgotten tab cannot
move the way they move a mean. When reward / that time is below the batch's target wage (only the floor when the
requester turned auto top-up off; the floor is never optional), every approved assignment earns
ceil(target x time - reward), paid per (batch, worker, UTC day of the run) as one transaction whose reason the
worker sees. An assignment's top-up is settled once (`AssignmentPay.top_up_cents`: the cents, or 0 when none is
due); one approved after its worker's top-up of the day waits for the next day's run (the key is taken).
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from base.errors import Conflict
from base.money import Money, hourly_rate, round_cents, top_up_cents
from base.uow import savepoint
from market.catalogue.models import Assignment, AssignmentStatus, Batch, BatchStatus, Project
from payments import ledger
from payments.ledger import InsufficientFunds, Posting
from payments.models import AssignmentPay, HoldState, LedgerTransaction, TransactionKind
from payments.review.approve import payee
from payments.wage.costs import fees_of, target_of

MIN_SUBMISSIONS = 10
# Work whose time is measured: submitted, reviewed either way.
SUBMITTED = (AssignmentStatus.SUBMITTED, AssignmentStatus.APPROVED, AssignmentStatus.REJECTED)
_MS = Decimal(1000)


def median_of_medians(durations_by_hit: dict[int, list[int]]) -> Decimal:
    """The median over HITs of each HIT's median, exact (Decimal), in the durations' unit."""
    return statistics.median([statistics.median([Decimal(d) for d in ds]) for ds in durations_by_hit.values()])


def estimated_seconds(session: Session, batch_id: int) -> Decimal | None:
    """A batch's HIT working time in seconds (the median of per-HIT medians), or None below 10 submissions."""
    by_hit: defaultdict[int, list[int]] = defaultdict(list)
    count = 0
    for hit_id, ms in session.execute(select(Assignment.hit_id, Assignment.duration_ms).where(
            Assignment.batch_id == batch_id, Assignment.status.in_(SUBMITTED), Assignment.duration_ms.is_not(None))):
        by_hit[hit_id].append(ms)
        count += 1
    if count < MIN_SUBMISSIONS:
        return None
    return median_of_medians(by_hit) / _MS


@dataclass
class TopUpSummary:
    batches_measured: int = 0
    batches_topped_up: int = 0
    transactions: int = 0
    assignments: int = 0  # approved assignments whose top-up was settled (paid, or none due)
    top_up_cents: int = 0
    fee_cents: int = 0
    unfunded: list[int] = field(default_factory=list)  # batches whose requester could not pay (tried next run)


def _seconds_text(seconds: Decimal) -> str:
    text = f"{seconds.quantize(Decimal('0.1')):f}"
    return text.removesuffix(".0")


def top_up_reason(project_title: str, *, seconds: Decimal, reward_cents: int, currency: str, target: int) -> str:
    """What the worker is told a top-up is for."""
    rate = hourly_rate(reward_cents, seconds)
    assert rate is not None
    return (f"Fair-wage top-up: HITs of {project_title} took a median {_seconds_text(seconds)} s, so "
            f"{Money(reward_cents, currency)} is {Money(round_cents(rate), currency)}/h; topped up to "
            f"{Money(target, currency)}/h")


def pay_top_ups(session: Session, *, now: dt.datetime) -> TopUpSummary:
    """Measure live batches (Batch.measured_seconds) and pay the top-ups due on approved work; idempotent."""
    summary = TopUpSummary()
    pending = set(session.scalars(select(AssignmentPay.batch_id).where(AssignmentPay.top_up_cents.is_(None))
                                  .distinct()))
    live = set(session.scalars(select(Batch.id).where(Batch.status.in_((BatchStatus.OPEN, BatchStatus.PAUSED)),
                                                      Batch.expires_at > now)))
    day = now.astimezone(dt.UTC).date().isoformat()
    for batch_id in sorted(pending | live):
        batch = session.get(Batch, batch_id)
        assert batch is not None
        seconds = estimated_seconds(session, batch_id)
        measured = None if seconds is None else seconds.quantize(Decimal("0.001"))
        if batch.measured_seconds != measured:
            batch.measured_seconds = measured
        summary.batches_measured += seconds is not None
        if seconds is None or batch_id not in pending:
            continue
        try:
            with savepoint(session):
                _pay_batch(session, batch, seconds, day=day, now=now, summary=summary)
        except InsufficientFunds:
            summary.unfunded.append(batch_id)
        except Conflict:
            pass  # another run paid these workers meanwhile (a batch without a hold to queue on): theirs stands
    session.flush()
    return summary


def _pay_batch(session: Session, batch: Batch, seconds: Decimal, *, day: str, now: dt.datetime,
               summary: TopUpSummary) -> None:
    target = target_of(batch)
    # Unpaid work (reward 0, the requester's own team: no floor at publish) earns no top-up either.
    per = top_up_cents(reward_cents=batch.reward_cents, target_cents_per_hour=target, seconds=seconds) \
        if batch.reward_cents else 0
    hold = ledger.lock_hold(session, batch.id)  # lock order: the hold, then accounts (post)
    # A reward ops reversed (approved by mistake) earns no top-up either: it is settled at 0.
    reversed_reward = exists().where(LedgerTransaction.reverses_id == AssignmentPay.reward_transaction_id)
    rows = session.execute(select(AssignmentPay.assignment_id, AssignmentPay.worker_id, reversed_reward).where(
        AssignmentPay.batch_id == batch.id, AssignmentPay.top_up_cents.is_(None)).order_by(AssignmentPay.assignment_id))
    by_worker: defaultdict[int, list[int]] = defaultdict(list)
    unpaid: list[int] = []
    for assignment_id, worker_id, was_reversed in rows:
        (unpaid if was_reversed else by_worker[worker_id]).append(assignment_id)
    if unpaid:
        session.execute(update(AssignmentPay), [{"assignment_id": a, "top_up_cents": 0} for a in unpaid])
        summary.assignments += len(unpaid)
    if per == 0:
        done = [{"assignment_id": a, "top_up_cents": 0} for ids in by_worker.values() for a in ids]
        if done:
            session.execute(update(AssignmentPay), done)
        summary.assignments += len(done)
        return
    keys = {worker: f"topup:{batch.id}:{worker}:{day}" for worker in by_worker}
    taken = set(session.scalars(select(LedgerTransaction.idempotency_key)
                                .where(LedgerTransaction.idempotency_key.in_(list(keys.values())))))
    workers = [w for w in sorted(by_worker) if keys[w] not in taken]
    if not workers:
        return
    project = session.get(Project, batch.project_id)
    assert project is not None
    reason = top_up_reason(project.title, seconds=seconds, reward_cents=batch.reward_cents, currency=batch.currency,
                           target=target)
    fees, currency = fees_of(batch), batch.currency
    from_hold = hold is not None and hold.state == HoldState.OPEN
    source = (ledger.escrow if from_hold else ledger.available)(project.owner_id, currency)
    fee_account = ledger.fees(currency, batch.fee_model)
    ids = ledger.account_ids(session, [source, fee_account, *(payee(batch, w) for w in workers)])
    postings, total = [], 0
    for worker in workers:
        amount = per * len(by_worker[worker])
        fee = fees.bonus_fee(amount)
        total += amount + fee
        postings.append(Posting(keys[worker], TransactionKind.BONUS, currency,
                                ((ids[source], -(amount + fee)), (ids[payee(batch, worker)], amount),
                                 (ids[fee_account], fee)),
                                {"requester_id": project.owner_id, "worker_id": worker, "project_id": project.id,
                                 "batch_id": batch.id, "hold_id": hold.id if from_hold else None, "reason": reason,
                                 "detail": {"assignments": len(by_worker[worker]), "per_assignment_cents": per,
                                            "median_seconds": str(seconds), "target_cents_per_hour": target,
                                            "fee_cents": fee}}))
    if from_hold:
        assert hold is not None
        if (short := total - ledger.remaining(hold)) > 0:
            extensions = session.scalar(select(func.count(LedgerTransaction.id)).where(
                LedgerTransaction.hold_id == hold.id, LedgerTransaction.kind == TransactionKind.HOLD)) or 0
            ledger.extend_hold(session, hold, short, now=now, key=f"hold:{batch.id}:extend:{extensions}")
        ledger.draw(session, hold, total, now=now, key=f"hold:{batch.id}:topup:{day}")
    tids = ledger.post(session, postings, now=now)
    session.execute(update(AssignmentPay), [
        {"assignment_id": a, "top_up_cents": per, "top_up_transaction_id": tid}
        for worker, tid in zip(workers, tids, strict=True) for a in by_worker[worker]])
    summary.transactions += len(tids)
    summary.assignments += sum(len(by_worker[w]) for w in workers)
    summary.top_up_cents += sum(p.legs[1][1] for p in postings)
    summary.fee_cents += sum(p.legs[2][1] for p in postings)
    summary.batches_topped_up += 1
