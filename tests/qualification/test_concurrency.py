"""A worker's simultaneous requests to start a test end with one attempt (committed transactions, real threads)."""

from __future__ import annotations

import threading
import uuid

from sqlalchemy import delete, select

from base.clock import utcnow
from base.db import Database, make_engine
from base.identity import Role
from qualification import service
from qualification.models import QualificationAttempt, QualificationQuestion, QualificationType
from tests.factories import SENTIMENT, in_uow
from workers.models import Account
from workers.service import create_account

THREADS = 8


def test_simultaneous_starts_share_one_attempt(engine, database_url):
    db = Database(make_engine(database_url, pool_size=THREADS + 2))
    tag, now = uuid.uuid4().hex[:8], utcnow()
    with db.session_scope() as s:
        owner = in_uow(create_account, s, role=Role.REQUESTER, email=f"q-{tag}@example.com", now=now)
        worker = in_uow(create_account, s, role=Role.WORKER, username=f"q-{tag}", now=now)
        qtype = in_uow(service.create_type, s, owner=owner, now=now, data={
            "name": f"race {tag}", "description": "", "label_schema": SENTIMENT, "passing_score": 50,
            "test_duration_seconds": 600, "retry_delay_seconds": 0, "max_attempts": 1, "auto_grant": True,
            "questions": [{"data": {"text": "x"}, "answer": "pos"}]})
        ids = (owner.id, worker.id, qtype.id)
    barrier, got, errors = threading.Barrier(THREADS), [], []

    def start() -> None:
        barrier.wait()
        with db.session_scope() as s:
            try:
                attempt, _, _ = in_uow(service.start_attempt, s, worker=s.get_one(Account, ids[1]), type_id=ids[2],
                                                      now=now)
                got.append(attempt.id)
            except Exception as exc:  # noqa: BLE001 - the test reports what each thread saw
                errors.append(repr(exc))

    threads = [threading.Thread(target=start) for _ in range(THREADS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors
        assert len(got) == THREADS and len(set(got)) == 1  # max_attempts=1: a second attempt would be refused
        with db.session_scope() as s:
            assert s.scalars(select(QualificationAttempt.id).where(QualificationAttempt.type_id == ids[2])).all() == [
                got[0]]
    finally:
        with db.session_scope() as s:
            s.execute(delete(QualificationAttempt).where(QualificationAttempt.type_id == ids[2]))
            s.execute(delete(QualificationQuestion).where(QualificationQuestion.type_id == ids[2]))
            s.execute(delete(QualificationType).where(QualificationType.id == ids[2]))
            s.execute(delete(Account).where(Account.id.in_(ids[:2])))
            s.commit()
        db.dispose()
