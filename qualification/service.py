"""Qualification types and their tests: create, take (start, submit, score), grant and revoke. No flask here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from base.errors import Conflict, DomainError, Gone, InvalidInput, NotFound
from base.identity import Actor, Role
from base.labels import AnswerError, same_answer, validate_answer, validate_answer_set
from base.paging import keyset_page
from base.uow import savepoint
from qualification.models import (
    AttemptStatus,
    GrantSource,
    QualificationAttempt,
    QualificationGrant,
    QualificationQuestion,
    QualificationType,
)
from qualification.requirements import meets, unmet
from workers.models import Account
from workers.service import find_worker


class AttemptRefused(DomainError):
    """A test the worker may not start now: out of attempts, or inside the retry delay."""

    status = 409
    title = "Test not available"


# ---- types (requesters; ops read) ---------------------------------------------------------------------------


def create_type(session: Session, *, owner: Actor, data: dict[str, Any], now: dt.datetime) -> QualificationType:
    """Create a qualification type with its test; every known answer must fit the label schema."""
    schema = data["label_schema"]
    errors: dict[str, list[str]] = {}
    answers = []
    for n, question in enumerate(data["questions"]):
        try:
            answers.append(validate_answer(schema, question["answer"]))
        except AnswerError as exc:
            errors[str(n)] = [f"answer {exc}"]
    if errors:
        raise InvalidInput("Some known answers do not fit the label schema.", errors={"questions": errors})
    qtype = QualificationType(
        owner_id=owner.id, name=data["name"], description=data["description"], label_schema=schema,
        passing_score=data["passing_score"], test_duration_seconds=data["test_duration_seconds"],
        retry_delay_seconds=data["retry_delay_seconds"], max_attempts=data["max_attempts"],
        auto_grant=data["auto_grant"], created_at=now)
    session.add(qtype)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(f"You have a qualification type named {data['name']!r} already.") from exc
    session.add_all(QualificationQuestion(type_id=qtype.id, position=n, data=q["data"], answer=answer)
                    for n, (q, answer) in enumerate(zip(data["questions"], answers, strict=True)))
    session.flush()
    return qtype


def get_type(session: Session, *, type_id: int, account: Actor) -> QualificationType:
    """The type if the account may manage it: its owner, or ops (who read every type and grant or revoke any);
    others get 404, never 403."""
    qtype = session.get(QualificationType, type_id)
    if qtype is None or not (qtype.owner_id == account.id or account.role == Role.OPS):
        raise NotFound(f"Qualification type {type_id} not found.")
    return qtype


def list_types(session: Session, *, account: Actor, after: int | None, limit: int) -> list[QualificationType]:
    """The account's qualification types (ops: all), by id."""
    owner = None if account.role == Role.OPS else account.id
    return keyset_page(session, QualificationType, after=after, limit=limit,
                       equal=((QualificationType.owner_id, owner),))


def questions(session: Session, type_id: int) -> list[QualificationQuestion]:
    return list(session.scalars(select(QualificationQuestion).where(QualificationQuestion.type_id == type_id)
                                .order_by(QualificationQuestion.position)))


def check_requirements(session: Session, *, owner_id: int,
                       requirements: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Requirements as a project or batch stores them (None when there are none); each must name one of the
    owner's qualification types."""
    if not requirements:
        return None
    ids = {r["qualification_id"] for r in requirements}
    owned = set(session.scalars(select(QualificationType.id).where(QualificationType.id.in_(ids),
                                                                   QualificationType.owner_id == owner_id)))
    errors = {str(n): [f"unknown qualification type {r['qualification_id']}"]
              for n, r in enumerate(requirements) if r["qualification_id"] not in owned}
    if errors:
        raise InvalidInput("Requirements must name your own qualification types.",
                           errors={"qualification_requirements": errors})
    return [{"qualification_id": r["qualification_id"], "comparator": r["comparator"], "values": r["values"]}
            for r in requirements]


def unmet_requirements(session: Session, *, worker_id: int,
                       gates: dict[int, list[dict[str, Any]]]) -> tuple[set[int], list[dict[str, Any]]]:
    """Of the gated batches (batch id -> requirements), those the worker may not work on, and what they miss:
    each unmet requirement once, with the qualification's name, the worker's value and where its test is."""
    wanted = {r["qualification_id"] for reqs in gates.values() for r in reqs}
    held = dict(session.execute(select(QualificationGrant.type_id, QualificationGrant.value).where(
        QualificationGrant.worker_id == worker_id, QualificationGrant.revoked_at.is_(None),
        QualificationGrant.type_id.in_(wanted))).all())
    shut: set[int] = set()
    missing: dict[tuple[int, str, tuple[int, ...]], dict[str, Any]] = {}
    for batch_id, reqs in gates.items():
        for r in unmet(reqs, held):
            shut.add(batch_id)
            missing.setdefault((r["qualification_id"], r["comparator"], tuple(r["values"])), r)
    if not missing:
        return shut, []
    types = {t.id: t for t in session.scalars(select(QualificationType).where(
        QualificationType.id.in_({k[0] for k in missing})))}
    with_test = set(session.scalars(select(QualificationQuestion.type_id).where(
        QualificationQuestion.type_id.in_(list(types))).distinct()))
    return shut, [{"qualification_id": q, "name": types[q].name if q in types else None, "comparator": c,
                   "values": list(v), "your_value": held.get(q),
                   "test": f"/api/v1/qualification-tests/{q}/attempts" if q in with_test else None}
                  for (q, c, v) in sorted(missing)]


# ---- tests (workers) ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    """One test as a worker sees it: whether they may start it now, and what they hold."""

    qtype: QualificationType
    question_count: int
    attempts_used: int
    attempts_left: int | None
    available_at: dt.datetime | None  # None: never again (out of attempts)
    open_attempt_id: int | None
    held_value: int | None


def _attempts(session: Session, type_id: int, worker_id: int) -> list[QualificationAttempt]:
    return list(session.scalars(select(QualificationAttempt).where(
        QualificationAttempt.type_id == type_id, QualificationAttempt.worker_id == worker_id)
        .order_by(QualificationAttempt.id)))


def _live_grant(session: Session, type_id: int, worker_id: int, *, lock: bool = False) -> QualificationGrant | None:
    stmt = select(QualificationGrant).where(QualificationGrant.type_id == type_id,
                                            QualificationGrant.worker_id == worker_id,
                                            QualificationGrant.revoked_at.is_(None))
    return session.scalar(stmt.with_for_update() if lock else stmt)


def _status(qtype: QualificationType, attempts: list[QualificationAttempt], count: int, held: int | None,
            now: dt.datetime) -> Standing:
    open_attempt = next((a for a in attempts if a.status == AttemptStatus.STARTED and a.expires_at > now), None)
    used = len(attempts)
    left = None if qtype.max_attempts is None else max(0, qtype.max_attempts - used)
    if open_attempt is not None:
        available: dt.datetime | None = now
    elif left == 0:
        available = None
    elif attempts:
        available = max(now, attempts[-1].finished_at() + dt.timedelta(seconds=qtype.retry_delay_seconds))
    else:
        available = now
    return Standing(qtype, count, used, left, available, open_attempt.id if open_attempt else None, held)


def list_tests(session: Session, *, worker: Actor, now: dt.datetime) -> list[Standing]:
    """Every test (a type with questions), with the worker's standing on each."""
    counts = dict(session.execute(select(QualificationQuestion.type_id, func.count())
                                  .group_by(QualificationQuestion.type_id)).all())
    types = list(session.scalars(select(QualificationType).where(QualificationType.id.in_(list(counts)))
                                 .order_by(QualificationType.id)))
    mine: dict[int, list[QualificationAttempt]] = {}
    for attempt in session.scalars(select(QualificationAttempt).where(QualificationAttempt.worker_id == worker.id)
                                   .order_by(QualificationAttempt.id)):
        mine.setdefault(attempt.type_id, []).append(attempt)
    held = dict(session.execute(select(QualificationGrant.type_id, QualificationGrant.value).where(
        QualificationGrant.worker_id == worker.id, QualificationGrant.revoked_at.is_(None))).all())
    return [_status(t, mine.get(t.id, []), counts[t.id], held.get(t.id), now) for t in types]


def start_attempt(session: Session, *, worker: Actor, type_id: int,
                  now: dt.datetime) -> tuple[QualificationAttempt, list[QualificationQuestion], bool]:
    """Start (or resume) an attempt at a test: (attempt, questions, created). Refused when out of attempts or
    inside the retry delay after the last one."""
    qtype = session.get(QualificationType, type_id)
    items = questions(session, type_id) if qtype is not None else []
    if qtype is None or not items:
        raise NotFound(f"Qualification test {type_id} not found.")
    attempts = _attempts(session, type_id, worker.id)
    for attempt in attempts:
        if attempt.status == AttemptStatus.STARTED:
            if attempt.expires_at > now:
                return attempt, items, False  # resume: the clock keeps running from the first start
            attempt.status = AttemptStatus.EXPIRED
    status = _status(qtype, attempts, len(items), None, now)
    # Refusals keep the writes before them (`keep_writes`): attempts whose time ran out are marked expired.
    if status.available_at is None:
        raise AttemptRefused(f"You have used all {qtype.max_attempts} attempts at this test.",
                             reason="no_attempts_left").keep_writes()
    if status.available_at > now:
        raise AttemptRefused("You can retake this test after its retry delay.", reason="retry_delay",
                             available_at=status.available_at.isoformat()).keep_writes()
    attempt = QualificationAttempt(type_id=type_id, worker_id=worker.id, status=AttemptStatus.STARTED,
                                   started_at=now, expires_at=now + dt.timedelta(seconds=qtype.test_duration_seconds))
    try:
        with savepoint(session):
            session.add(attempt)
            session.flush()
    except IntegrityError:  # the worker's simultaneous request started one first: hand out that one
        return start_attempt(session, worker=worker, type_id=type_id, now=now)
    return attempt, items, True


def get_attempt(session: Session, *, worker: Actor, attempt_id: int) -> QualificationAttempt:
    attempt = session.get(QualificationAttempt, attempt_id)
    if attempt is None or attempt.worker_id != worker.id:
        raise NotFound(f"Attempt {attempt_id} not found.")
    return attempt


def score(correct: int, total: int) -> int:
    """Percent correct, rounded half up, as an integer 0-100."""
    return (200 * correct + total) // (2 * total)


def submit_attempt(session: Session, *, worker: Actor, attempt_id: int, answers: list[dict[str, Any]],
                   now: dt.datetime) -> tuple[QualificationAttempt, bool]:
    """Score an attempt (one answer per question) and, on a pass with auto-grant, grant the qualification with
    the score as its value. Returns (attempt, replayed): the same answers again return the same result."""
    attempt = session.scalar(select(QualificationAttempt).where(QualificationAttempt.id == attempt_id)
                             .with_for_update())
    if attempt is None or attempt.worker_id != worker.id:
        raise NotFound(f"Attempt {attempt_id} not found.")
    qtype = session.get_one(QualificationType, attempt.type_id)
    items = questions(session, attempt.type_id)
    values, errors = validate_answer_set(qtype.label_schema, [q.id for q in items], answers, key="question_id",
                                         stranger="is not a question of this test")
    if errors:
        raise InvalidInput("Some answers are invalid; nothing was scored.", errors={"answers": errors})
    if attempt.status == AttemptStatus.SUBMITTED:
        if attempt.answers != {str(k): v for k, v in values.items()}:
            raise Conflict("This attempt was submitted already with different answers.",
                           errors={"answers": ["differ from the submitted ones"]})
        return attempt, True
    if attempt.status == AttemptStatus.EXPIRED or now >= attempt.expires_at:
        attempt.status = AttemptStatus.EXPIRED  # true whatever the answers: kept though they are refused
        raise Gone("The time for this attempt ran out; its answers were not scored.", reason="expired",
                   expired_at=attempt.expires_at.isoformat()).keep_writes()
    correct = sum(same_answer(qtype.label_schema, values[q.id], q.answer) for q in items)
    attempt.status, attempt.submitted_at = AttemptStatus.SUBMITTED, now
    attempt.answers = {str(k): v for k, v in values.items()}
    attempt.score = score(correct, len(items))
    attempt.passed = attempt.score >= qtype.passing_score
    if attempt.passed and qtype.auto_grant:
        _set_grant(session, qtype.id, worker.id, value=attempt.score, source=GrantSource.TEST, by=None,
                   reason=f"passed the test with {attempt.score}", attempt_id=attempt.id, now=now)
    session.flush()
    return attempt, False


# ---- grants (the type's requester, or ops) -----------------------------------------------------------------


def _set_grant(session: Session, type_id: int, worker_id: int, *, value: int, source: GrantSource, by: int | None,
               reason: str, now: dt.datetime, attempt_id: int | None = None) -> QualificationGrant:
    """Grant, or give a live grant a new value (MTurk's semantics: one value per worker and type, the latest)."""
    grant = _live_grant(session, type_id, worker_id, lock=True)
    if grant is None:
        grant = QualificationGrant(type_id=type_id, worker_id=worker_id, granted_at=now)
        session.add(grant)
    grant.value, grant.source, grant.granted_by_id, grant.reason, grant.attempt_id = (
        value, source, by, reason, attempt_id)
    grant.granted_at = now
    session.flush()
    return grant


def _took_your_tests(session: Session, requester_id: int, worker_id: int) -> bool:
    """The worker has attempted, or been granted, one of the requester's qualification types."""
    yours = select(QualificationType.id).where(QualificationType.owner_id == requester_id)
    return bool(session.scalar(select(
        exists().where(QualificationAttempt.worker_id == worker_id, QualificationAttempt.type_id.in_(yours))
        | exists().where(QualificationGrant.worker_id == worker_id, QualificationGrant.type_id.in_(yours)))))


def _grantee(session: Session, *, account: Actor, worker_id: int | None, username: str | None,
             worked_for: Callable[[int], bool]) -> int:
    """The worker a grant is for. By username: any worker (they gave it). By id: ops any; a requester only a worker
    who has worked for them, so ids cannot be probed for accounts; no such worker and not yours are one 404."""
    if username is not None:
        found = find_worker(session, username=username)
        if found is None:
            raise NotFound(f"No worker with username {username!r}.")
        return found.id
    if worker_id is None:
        raise InvalidInput("Name the worker by worker_id or username.", errors={"worker_id": ["required"]})
    target = session.get(Account, worker_id)
    if target is None or target.role != Role.WORKER or not (
            account.role == Role.OPS or _took_your_tests(session, account.id, worker_id) or worked_for(worker_id)):
        raise NotFound(f"Worker {worker_id} not found.")
    return worker_id


def grant(session: Session, *, type_id: int, account: Actor, value: int, reason: str, now: dt.datetime,
          worker_id: int | None = None, username: str | None = None,
          worked_for: Callable[[int], bool] = lambda _worker_id: False) -> QualificationGrant:
    """Grant a qualification by hand (or set a holder's value), with a reason, to `worker_id` or `username`
    (see `_grantee`). `worked_for` tells whether a worker id has worked on the requester's projects (the market's
    knowledge, passed in)."""
    get_type(session, type_id=type_id, account=account)
    worker_id = _grantee(session, account=account, worker_id=worker_id, username=username, worked_for=worked_for)
    try:
        result = _set_grant(session, type_id, worker_id, value=value, source=GrantSource.MANUAL, by=account.id,
                            reason=reason, now=now)
    except IntegrityError as exc:  # a simultaneous grant to the same worker won
        raise Conflict("The worker was granted this qualification just now; try again.") from exc
    return result


def revoke(session: Session, *, type_id: int, account: Actor, worker_id: int, reason: str,
           now: dt.datetime) -> QualificationGrant:
    """Take a qualification away, with a reason; the grant stays on record as revoked."""
    get_type(session, type_id=type_id, account=account)
    held = _live_grant(session, type_id, worker_id, lock=True)
    if held is None:
        raise NotFound(f"Worker {worker_id} does not hold qualification {type_id}.")
    held.revoked_at, held.revoked_by_id, held.revoke_reason = now, account.id, reason
    session.flush()
    return held


@dataclass(frozen=True)
class Holder:
    grant: QualificationGrant
    username: str | None
    best_score: int | None
    attempts: int


def holder(session: Session, grant: QualificationGrant) -> Holder:
    """One grant as `list_holders` shows it."""
    best, attempts = session.execute(select(func.max(QualificationAttempt.score), func.count()).where(
        QualificationAttempt.type_id == grant.type_id, QualificationAttempt.worker_id == grant.worker_id)).one()
    return Holder(grant, session.get_one(Account, grant.worker_id).username, best, attempts)


def list_holders(session: Session, *, type_id: int, account: Actor, revoked: bool = False) -> list[Holder]:
    """The type's holders (or, with `revoked`, every grant ever made), with each worker's best test score."""
    get_type(session, type_id=type_id, account=account)
    stmt = (select(QualificationGrant, Account.username).join(Account, Account.id == QualificationGrant.worker_id)
            .where(QualificationGrant.type_id == type_id).order_by(QualificationGrant.id))
    if not revoked:
        stmt = stmt.where(QualificationGrant.revoked_at.is_(None))
    scores = {w: (best, n) for w, best, n in session.execute(
        select(QualificationAttempt.worker_id, func.max(QualificationAttempt.score), func.count())
        .where(QualificationAttempt.type_id == type_id).group_by(QualificationAttempt.worker_id))}
    return [Holder(g, username, *scores.get(g.worker_id, (None, 0))) for g, username in session.execute(stmt)]


@dataclass(frozen=True)
class RequirementStatus:
    """One qualification requirement as a worker sees it: met or not, and where its test stands for them."""

    requirement: dict[str, Any]
    name: str | None
    met: bool
    held_value: int | None
    test: Standing | None  # None: the type has no test (granted by hand only)


def requirement_statuses(session: Session, *, worker: Actor, requirements: list[dict[str, Any]],
                         now: dt.datetime) -> list[RequirementStatus]:
    """Each requirement with the worker's standing: whether they meet it (requirements.meets, as the engine
    decides), their value, the type's name and, when it has a test, whether they may take it now (list_tests)."""
    ids = {r["qualification_id"] for r in requirements}
    if not ids:
        return []
    names = dict(session.execute(select(QualificationType.id, QualificationType.name)
                                 .where(QualificationType.id.in_(ids))).all())
    held = dict(session.execute(select(QualificationGrant.type_id, QualificationGrant.value).where(
        QualificationGrant.worker_id == worker.id, QualificationGrant.revoked_at.is_(None),
        QualificationGrant.type_id.in_(ids))).all())
    tests = {s.qtype.id: s for s in list_tests(session, worker=worker, now=now) if s.qtype.id in ids}
    return [RequirementStatus(r, names.get(r["qualification_id"]), meets(r, held.get(r["qualification_id"])),
                              held.get(r["qualification_id"]), tests.get(r["qualification_id"]))
            for r in requirements]
