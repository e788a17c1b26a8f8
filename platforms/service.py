"""Talking to the platforms: publish a burst, sync it (a scheduled, idempotent job), cancel it, and say where
everything stands. No flask here.

Calls to a platform never run inside a database transaction: each step reads what it needs in one unit of work,
calls the platform, and records the outcome in another, so a slow or failing platform holds no locks. Each call
is written to the job log (PlatformCall) as it finishes, retries included, so nothing done out there is lost if
the process dies; every token sent derives from our ids, so the step run again does nothing twice.

The sync, for each burst not yet finished:
1. lists the platform's submissions and records them;
2. checks each against our records: the same worker id did our task for that platform assignment, and stored
   it with us (a submission without work of ours, or by someone else, is rejected there, with the reason);
3. mirrors our reviews: approved here -> approved there, rejected -> rejected with our feedback (a submission
   of several of our tasks, a Prolific session, is approved when any is approved, rejected when all are);
4. sends fair-wage top-ups paid here as the platform's bonus, once per amount (the token is the amount so far);
5. mirrors blocks of workers who came from the platform;
6. ends the platform's tasks when the burst has no place left, when its batch is closed, or on cancel, and gives
   the unused places back to the parent batch.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from base.db import Database
from market.catalogue.models import Assignment, AssignmentStatus, Batch, BatchStatus
from payments.models import AssignmentPay
from platforms import burst as bursts
from platforms import charges
from platforms.base import Crowd, ExternalSubmission, ExternalTask, PlatformError
from platforms.calls import CallRecord, RecordingLog
from platforms.models import (
    BurstStatus,
    PlatformAssignment,
    PlatformBatch,
    PlatformBlock,
    PlatformCall,
    PlatformSubmission,
    PlatformTask,
)
from workers.models import ExternalIdentity, WorkerBlock

NO_WORK = "No work was recorded on our task page for this assignment."
NOT_YOURS = "This assignment's task on our page was done under another worker id."
# A closed burst is still synced this long, for reviews and top-ups that come after its work is done.
SYNC_AFTER_CLOSE = dt.timedelta(days=30)


@dataclass
class Outcome:
    burst_id: int
    done: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def count(self, what: str, n: int = 1) -> None:
        self.done[what] = self.done.get(what, 0) + n


class BufferedLog(RecordingLog):
    """The job log of one job run. A failed call is written at once, in a transaction of its own, so no error is
    ever lost; successful calls are written with the next record the job makes (`flush`: a mirrored approval
    and its ApproveAssignment in one commit), or by `close` at the end."""

    def __init__(self, db: Database, *, platform: str, job: str, burst_id: int | None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(sink=self._keep, sleep=sleep)
        self._db, self._platform, self._job, self._burst_id = db, platform, job, burst_id
        self._pending: list[PlatformCall] = []
        self._run: PlatformCall | None = None  # the run of listing pages the next page may join

    def _row(self, record: CallRecord) -> PlatformCall:
        return PlatformCall(platform_batch_id=self._burst_id, platform=self._platform, job=self._job,
                            operation=record.operation, idempotency_key=record.key, target=record.target,
                            attempts=record.attempts, outcome=record.outcome, error=record.error,
                            retried_errors=record.errors[:-1] if record.error else record.errors, ms=record.ms,
                            calls=1)

    def _keep(self, record: CallRecord) -> None:
        if record.outcome == "ok":
            run = self._run
            if record.listing and record.attempts == 1 and run is not None and run.operation == record.operation:
                run.calls, run.ms, run.last_target = run.calls + 1, run.ms + record.ms, record.target
                return
            row = self._row(record)
            self._pending.append(row)
            self._run = row if record.listing and record.attempts == 1 else None
            return
        self._run = None
        with self._db.unit_of_work() as session:
            self.flush(session)
            session.add(self._row(record))

    def flush(self, session: Session) -> None:
        session.add_all(self._pending)
        self._pending, self._run = [], None

    def close(self) -> None:
        if self._pending:
            with self._db.unit_of_work() as session:
                self.flush(session)


def call_log(db: Database, *, platform: str, job: str, burst_id: int | None,
             sleep: Callable[[float], None] = time.sleep) -> BufferedLog:
    return BufferedLog(db, platform=platform, job=job, burst_id=burst_id, sleep=sleep)


def note_error(db: Database, burst_id: int, error: str) -> None:
    with db.unit_of_work() as session:
        burst = session.get(PlatformBatch, burst_id)
        if burst is not None:
            burst.last_error = error[:2000]


def _tasks(session: Session, burst_id: int, *, live_only: bool = False) -> list[ExternalTask]:
    stmt = select(PlatformTask).where(PlatformTask.platform_batch_id == burst_id).order_by(PlatformTask.id)
    if live_only:
        stmt = stmt.where(PlatformTask.ended_at.is_(None))
    return [ExternalTask(t.external_id, t.max_assignments, t.reward_cents, group=t.group_id, key=t.token,
                         expires_at=t.expires_at, ended=t.ended_at is not None) for t in session.scalars(stmt)]


# --- publish ---------------------------------------------------------------------------------------------------

def publish(db: Database, crowd: Crowd, burst_id: int, *, url: str, keywords: tuple[str, ...], now: dt.datetime,
            sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Make the burst's tasks on the platform (a burst published already is left alone; one that failed is
    tried again: the platform's tokens make nothing twice)."""
    out = Outcome(burst_id)
    with db.unit_of_work() as session:
        burst = session.get(PlatformBatch, burst_id)
        if burst is None or burst.status != BurstStatus.PUBLISHING:
            return out
        tried = session.scalar(select(PlatformCall.id).where(PlatformCall.platform_batch_id == burst_id,
                                                             PlatformCall.job == "publish").limit(1)) is not None
        order = bursts.order(session, burst, url=url, keywords=keywords, now=now, retry=tried)
    log = call_log(db, platform=crowd.name, job="publish", burst_id=burst_id, sleep=sleep)
    try:
        tasks = crowd.publish(order, log)
    except PlatformError as exc:
        log.close()
        note_error(db, burst_id, str(exc))
        out.errors.append(str(exc))
        return out
    with db.unit_of_work() as session:
        burst = session.get(PlatformBatch, burst_id)
        assert burst is not None
        bursts.published(session, burst, tasks, now=now)
        log.flush(session)
    out.count("tasks", len(tasks))
    return out


# --- sync ------------------------------------------------------------------------------------------------------

def due(session: Session, *, now: dt.datetime) -> list[int]:
    """Bursts the sync looks at: those not closed, and closed ones for a while (late reviews and top-ups)."""
    return list(session.scalars(select(PlatformBatch.id).where(
        (PlatformBatch.closed_at.is_(None) & (PlatformBatch.status != BurstStatus.PUBLISHING))
        | (PlatformBatch.closed_at > now - SYNC_AFTER_CLOSE)).order_by(PlatformBatch.id)))


def sync_all(db: Database, crowds: Mapping[str, Callable[[], Crowd]], *, now: dt.datetime,
             sleep: Callable[[float], None] = time.sleep) -> list[Outcome]:
    """One sync of every due burst, and of blocks per platform; a platform that cannot be reached is recorded and
    the others go on."""
    with db.unit_of_work() as session:
        due_bursts = [(b, p) for b, p in session.execute(
            select(PlatformBatch.id, PlatformBatch.platform).where(PlatformBatch.id.in_(due(session, now=now))))]
        platforms_used = sorted(set(session.scalars(select(PlatformBatch.platform).distinct())))
    made: dict[str, Crowd] = {}
    outcomes = []
    for name in platforms_used:
        if name not in crowds:
            continue
        try:
            made[name] = crowds[name]()
        except Exception as exc:  # noqa: BLE001 - a misconfigured platform must not stop the others' sync
            outcomes.append(Outcome(0, errors=[f"{name}: {exc!r}"]))
            continue
        outcomes.append(sync_blocks(db, made[name], now=now, sleep=sleep))
    for burst_id, name in due_bursts:
        if name in made:
            outcomes.append(sync(db, made[name], burst_id, now=now, sleep=sleep))
    return outcomes


def sync(db: Database, crowd: Crowd, burst_id: int, *, now: dt.datetime,
         sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """One idempotent sync of a burst (module docstring). The burst's records are read once; a submission
    costs writes only when something about it changes, so a sync with nothing to do writes almost nothing."""
    out = Outcome(burst_id)
    log = call_log(db, platform=crowd.name, job="sync", burst_id=burst_id, sleep=sleep)
    with db.unit_of_work() as session:
        burst = session.get(PlatformBatch, burst_id)
        if burst is None or burst.status == BurstStatus.PUBLISHING:
            return out
        tasks = _tasks(session, burst_id)
        settled = _settled(session, burst, now=now)
    try:
        listed = crowd.submissions([t for t in tasks if t.external_id not in settled], log)
    except PlatformError as exc:
        log.close()
        note_error(db, burst_id, str(exc))
        out.errors.append(str(exc))
        return out
    # MTurk gives identical HIT types one id, so its listing may bring other bursts' HITs: only ours count here.
    ours = {t.external_id for t in tasks} - settled
    listed = [sub for sub in listed if sub.task_ref in ours]
    out.count("listed", len(listed))
    with db.unit_of_work() as session:
        burst = session.get(PlatformBatch, burst_id)
        assert burst is not None
        rows = _seen(session, burst, listed, now=now, out=out)
        # Settled tasks are not listed again; their approved submissions still get later top-ups.
        listed += [ExternalSubmission(r.external_id, r.external_task_id, r.external_worker_id, r.mirrored or "other",
                                      r.external_status)
                   for r in rows.values() if r.external_task_id in settled and r.mirrored == "approved"]
        work = _work_of(session, burst)
        pending = [(sub, rows[sub.external_id].id, rows[sub.external_id].mirrored, rows[sub.external_id].bonus_cents,
                    _decide(work.get(sub.external_id, []), sub)) for sub in listed]
        for sub, _, _, _, decision in pending:
            row = rows[sub.external_id]
            if decision.problem and row.problem != decision.problem:
                row.problem = decision.problem
                out.count("problems")
    for sub, row_id, mirrored, sent, decision in pending:
        if decision.action is None or (mirrored is not None and not (mirrored == "approved"
                                                                      and decision.bonus_cents > sent)):
            continue
        try:
            _mirror(db, crowd, log, sub, row_id, mirrored, sent, decision, now=now, out=out)
        except PlatformError as exc:  # recorded in the job log; the next sync tries again
            out.errors.append(str(exc))
    _finish(db, crowd, log, burst_id, now=now, out=out)
    with db.unit_of_work() as session:
        burst = session.get(PlatformBatch, burst_id)
        assert burst is not None
        burst.synced_at = now
        burst.last_error = "; ".join(out.errors)[:2000] or None
        log.flush(session)
    return out


def _settled(session: Session, burst: PlatformBatch, *, now: dt.datetime) -> set[str]:
    """The burst's platform tasks with nothing left to learn: ended long enough ago that no assignment taken
    before can still be submitted (the lease), and every submission on them mirrored."""
    batch = session.get(Batch, burst.batch_id)
    assert batch is not None
    quiet_since = now - dt.timedelta(seconds=batch.assignment_duration_seconds)
    unmirrored = select(PlatformSubmission.id).where(PlatformSubmission.platform_batch_id == burst.id,
                                                     PlatformSubmission.external_task_id == PlatformTask.external_id,
                                                     PlatformSubmission.mirrored.is_(None))
    return set(session.scalars(select(PlatformTask.external_id).where(
        PlatformTask.platform_batch_id == burst.id, PlatformTask.ended_at <= quiet_since, ~unmirrored.exists())))


def _seen(session: Session, burst: PlatformBatch, listed: list[ExternalSubmission], *, now: dt.datetime,
          out: Outcome) -> dict[str, PlatformSubmission]:
    """The burst's submission records, with the newly listed added and changed statuses noted."""
    rows = {r.external_id: r for r in session.scalars(
        select(PlatformSubmission).where(PlatformSubmission.platform_batch_id == burst.id))}
    for sub in listed:
        row = rows.get(sub.external_id)
        if row is None:
            row = rows[sub.external_id] = PlatformSubmission(
                platform_batch_id=burst.id, platform=burst.platform, external_id=sub.external_id,
                external_task_id=sub.task_ref, external_worker_id=sub.worker_ref, external_status=sub.raw_status,
                bonus_cents=0, seen_at=now)
            session.add(row)
            out.count("new")
        elif row.external_status != sub.raw_status:
            row.external_status = sub.raw_status
    session.flush()
    return rows


@dataclass(frozen=True)
class _Ours:
    external_worker_id: str
    status: AssignmentStatus
    feedback: str | None
    top_up_cents: int  # paid, as a bonus is due


def _work_of(session: Session, burst: PlatformBatch) -> dict[str, list[_Ours]]:
    """Our tasks done for each of the burst's platform assignments, in one read."""
    out: dict[str, list[_Ours]] = {}
    for ext, worker, status, feedback, top_up, top_up_txn in session.execute(
            select(PlatformAssignment.external_id, PlatformAssignment.external_worker_id, Assignment.status,
                   Assignment.review_feedback, AssignmentPay.top_up_cents, AssignmentPay.top_up_transaction_id)
            .join(Assignment, Assignment.id == PlatformAssignment.assignment_id)
            .outerjoin(AssignmentPay, AssignmentPay.assignment_id == Assignment.id)
            .where(PlatformAssignment.platform_batch_id == burst.id)
            .order_by(PlatformAssignment.external_id, PlatformAssignment.seq)):
        out.setdefault(ext, []).append(_Ours(worker, AssignmentStatus(status), feedback,
                                             (top_up or 0) if top_up_txn is not None else 0))
    return out


@dataclass(frozen=True)
class _Decision:
    action: str | None  # "approve" | "reject" | None (not yet: our review is pending)
    feedback: str | None = None
    problem: str | None = None
    bonus_cents: int = 0


def _decide(ours: list[_Ours], sub: ExternalSubmission) -> _Decision:
    if sub.status == "other":
        return _Decision(None)
    if not ours:
        return _Decision("reject", NO_WORK, problem="no work of ours recorded for it")
    if any(row.external_worker_id != sub.worker_ref for row in ours):
        return _Decision("reject", NOT_YOURS, problem=f"submitted by {sub.worker_ref}, our task done by "
                                                      f"{ours[0].external_worker_id}")
    statuses = [row.status for row in ours]
    if any(s in (AssignmentStatus.LEASED, AssignmentStatus.SUBMITTED) for s in statuses):
        return _Decision(None)
    if AssignmentStatus.APPROVED in statuses:
        return _Decision("approve", bonus_cents=sum(row.top_up_cents for row in ours))
    if all(s == AssignmentStatus.REJECTED for s in statuses):
        return _Decision("reject", next((row.feedback for row in ours if row.feedback), None) or "Rejected on review.")
    # Returned or expired on our side only: nothing was stored for it.
    return _Decision("reject", NO_WORK, problem="our task was returned or let lapse")


def _mirror(db: Database, crowd: Crowd, log: BufferedLog, sub: ExternalSubmission, row_id: int,
            mirrored: str | None, sent: int, decision: _Decision, *, now: dt.datetime, out: Outcome) -> None:
    """Our decision on one submission sent to the platform, and recorded in one commit with the calls made."""
    if mirrored is None:
        settled = {"approve": "approved", "reject": "rejected"}[decision.action or ""]
        if sub.status in ("approved", "rejected") and sub.status != settled:
            # Decided there before our review reached it (MTurk's auto-approval): cannot be undone; say so.
            _record(db, log, row_id, mirrored=sub.status, now=now,
                    problem=f"{sub.status} on the platform before our review ({settled} here)")
            out.count("problems")
            return
        if decision.action == "approve":
            crowd.approve(sub, log)
        else:
            crowd.reject(sub, log, feedback=decision.feedback or "Rejected on review.")
        _record(db, log, row_id, mirrored=settled, now=now)
        out.count(settled)
        mirrored = settled
    if mirrored == "approved" and decision.bonus_cents > sent:
        # The token names the total so far: a retry of the same bonus is one bonus; a later top-up another.
        crowd.bonus(log, submission=sub, cents=decision.bonus_cents - sent,
                    reason="Fair-wage top-up: your measured working time at the requester's target wage.",
                    key=f"cm-topup-{row_id}-{decision.bonus_cents}")
        _record(db, log, row_id, bonus_cents=decision.bonus_cents, now=now)
        out.count("bonuses")


def _record(db: Database, log: BufferedLog, row_id: int, *, now: dt.datetime, mirrored: str | None = None,
            bonus_cents: int | None = None, problem: str | None = None) -> None:
    with db.unit_of_work() as session:
        row = session.get(PlatformSubmission, row_id)
        assert row is not None
        if mirrored is not None and row.mirrored is None:
            row.mirrored, row.mirrored_at = mirrored, now
            if mirrored == "approved":  # what the platform will charge for it, in the books (charges.py)
                burst = session.get(PlatformBatch, row.platform_batch_id)
                assert burst is not None
                charges.settle_submission(session, burst, row, now=now)
        if bonus_cents is not None:
            row.bonus_cents = bonus_cents
        if problem is not None:
            row.problem = problem
        log.flush(session)


def _finish(db: Database, crowd: Crowd, log: BufferedLog, burst_id: int, *, now: dt.datetime,
            out: Outcome) -> None:
    """End the platform's tasks when the burst is done, its batch closed, or it is cancelled; give places back."""
    with db.unit_of_work() as session:
        burst = session.get(PlatformBatch, burst_id)
        batch = session.get(Batch, burst.batch_id) if burst is not None else None
        assert burst is not None and batch is not None
        if burst.status == BurstStatus.CLOSED:
            out.count("places_back", bursts.reclaim(session, burst, now=now))  # leases lapsed since
            return
        parent = session.get(Batch, burst.parent_batch_id)
        if (burst.status == BurstStatus.CANCELLING or batch.status == BatchStatus.CANCELLED or parent is None
                or parent.status == BatchStatus.CANCELLED):
            closing = BatchStatus.CANCELLED
        elif batch.expires_at <= now or batch.status == BatchStatus.EXPIRED:
            closing = BatchStatus.EXPIRED
        elif batch.status == BatchStatus.COMPLETE or bursts.places_left(session, burst) == 0:
            closing = BatchStatus.COMPLETE
        else:
            return  # open (a paused burst batch keeps its platform tasks)
        live = _tasks(session, burst_id, live_only=True)
    for task in live:
        crowd.cancel(task, log)
        with db.unit_of_work() as session:
            session.execute(PlatformTask.__table__.update().where(
                PlatformTask.platform == crowd.name, PlatformTask.external_id == task.external_id)
                .values(ended_at=now))
            log.flush(session)
        out.count("ended")
    with db.unit_of_work() as session:
        burst = session.get(PlatformBatch, burst_id)
        assert burst is not None
        out.count("places_back", bursts.give_back(session, burst, now=now, status=closing))


def sync_blocks(db: Database, crowd: Crowd, *, now: dt.datetime,
                sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Mirror blocks in force (from all work, or from a project burst to the platform) of workers who came from
    the platform, once per worker."""
    out = Outcome(0)
    with db.unit_of_work() as session:
        burst_projects = select(PlatformBatch.project_id).where(PlatformBatch.platform == crowd.name)
        rows = session.execute(
            select(ExternalIdentity.external_id, func.min(WorkerBlock.id), func.min(WorkerBlock.reason))
            .join(WorkerBlock, WorkerBlock.account_id == ExternalIdentity.account_id)
            .where(ExternalIdentity.platform == crowd.name, WorkerBlock.in_force(now),
                   WorkerBlock.project_id.is_(None) | WorkerBlock.project_id.in_(burst_projects),
                   ~select(PlatformBlock.id).where(PlatformBlock.platform == crowd.name,
                                                   PlatformBlock.external_worker_id == ExternalIdentity.external_id)
                   .exists())
            .group_by(ExternalIdentity.external_id)).all()
    if not rows:
        return out
    log = call_log(db, platform=crowd.name, job="blocks", burst_id=None, sleep=sleep)
    for worker_ref, block_id, reason in rows:
        try:
            crowd.block(log, worker_ref=worker_ref, reason=(reason or "Blocked for low-quality work.")[:1024])
        except PlatformError as exc:
            out.errors.append(str(exc))
            continue
        with db.unit_of_work() as session:
            session.add(PlatformBlock(platform=crowd.name, external_worker_id=worker_ref, block_id=block_id,
                                      sent_at=now))
            log.flush(session)
        out.count("blocked")
    return out


# --- status ----------------------------------------------------------------------------------------------------

def status(session: Session, *, burst_id: int | None = None) -> list[dict[str, Any]]:
    """Every burst (or one): what is out there, what is in sync, what is not."""
    out = []
    stmt = select(PlatformBatch).order_by(PlatformBatch.id)
    if burst_id is not None:
        stmt = stmt.where(PlatformBatch.id == burst_id)
    for burst in session.scalars(stmt):
        subs = session.execute(select(
            func.count(PlatformSubmission.id), func.count(PlatformSubmission.mirrored),
            func.count(PlatformSubmission.problem), func.coalesce(func.sum(PlatformSubmission.bonus_cents), 0))
            .where(PlatformSubmission.platform_batch_id == burst.id)).one()
        tasks = session.execute(select(func.count(PlatformTask.id), func.count(PlatformTask.ended_at))
                                .where(PlatformTask.platform_batch_id == burst.id)).one()
        failed = session.scalar(select(func.count(PlatformCall.id)).where(
            PlatformCall.platform_batch_id == burst.id, PlatformCall.outcome == "error")) or 0
        out.append({
            "id": burst.id, "platform": burst.platform, "batch_id": burst.parent_batch_id,
            "burst_batch_id": burst.batch_id, "status": burst.status.value, "hits": burst.hits,
            "places": burst.slots, "tasks": burst.tasks, "places_left": bursts.places_left(session, burst),
            "platform_tasks": int(tasks[0]), "platform_tasks_ended": int(tasks[1]),
            "submissions": int(subs[0]), "mirrored": int(subs[1]), "pending": int(subs[0]) - int(subs[1]),
            "problems": int(subs[2]), "bonus_cents": int(subs[3]), "failed_calls": int(failed),
            "last_error": burst.last_error, "synced_at": burst.synced_at, "published_at": burst.published_at,
            "closed_at": burst.closed_at})
    return out


def calls(session: Session, burst_id: int, *, limit: int = 200) -> list[PlatformCall]:
    """The burst's job log, newest first."""
    return list(session.scalars(select(PlatformCall).where(PlatformCall.platform_batch_id == burst_id)
                                .order_by(PlatformCall.id.desc()).limit(limit)))
