"""Test data builders. They write real rows through the services (or the models where no service exists yet)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from typing import Any

from sqlalchemy.orm import Session

from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.models import Answer, Assignment, AssignmentStatus, Hit, Item, Project
from market.catalogue.projects import create_project
from qualification.gold import schedule_key
from workers.models import Account
from workers.service import create_account, issue_token

# The gold schedule's key for services called without the app (which derives its own from the secret key).
TEST_GOLD_KEY = schedule_key("crowdmarket tests")

_seq = itertools.count(1)

SENTIMENT = {
    "type": "single_choice",
    "categories": [{"key": "pos", "name": "Positive"}, {"key": "neg", "name": "Negative"},
                   {"key": "neu", "name": "Neutral", "description": "Neither", "example": "It is a chair."}],
}


# What every requester made by `account` is funded with (publishing holds a batch's maximum cost).
REQUESTER_FUNDS_CENTS = 10_000_000


def account(session: Session, role: Role = Role.REQUESTER, *, now: dt.datetime,
            funded: bool = True) -> tuple[Account, str]:
    """An account and a live API token for it; a requester is funded with $100,000 (`funded=False`: nothing)."""
    n = next(_seq)
    if role == Role.WORKER:
        acct = create_account(session, role=role, username=f"worker{n}", now=now)
    else:
        acct = create_account(session, role=role, email=f"{role.value}{n}@example.com", now=now)
    _, token = issue_token(session, account=acct, now=now)
    if role == Role.REQUESTER and funded:
        fund(session, acct, REQUESTER_FUNDS_CENTS, now=now)
    session.commit()
    return acct, token


def fund(session: Session, requester: Account, cents: int, *, now: dt.datetime, currency: str = "USD") -> None:
    """Credit a requester's available money (test setup: the ops funding API is not under test here)."""
    from payments import ledger

    ledger.fund(session, requester_id=requester.id, cents=cents, currency=currency, now=now, actor_id=None,
                key=f"test:{requester.id}:{next(_seq)}", reason="test setup")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def project_payload(**overrides: Any) -> dict[str, Any]:
    body = {"title": "Sentiment of reviews", "instructions": "Pick the sentiment.", "label_schema": SENTIMENT,
            "reward_cents": 12, "assignments_per_item": 3, "estimated_seconds": 30}
    body.update(overrides)
    return body


def project(session: Session, owner: Account, *, now: dt.datetime, **overrides: Any) -> Project:
    data = project_payload(**overrides)
    return create_project(session, owner=owner, data=data, now=now)


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def items(session: Session, proj: Project, n: int, *, now: dt.datetime, gold: int = 0, prefix: str = "it") -> None:
    """Import n plain items and `gold` gold items through the import service."""
    import io

    from market.catalogue.imports import import_items

    records = [{"external_id": f"{prefix}{i}", "data": {"text": f"text {i}"}} for i in range(n)]
    records += [{"external_id": f"{prefix}-gold{i}", "data": {"text": f"gold {i}"}, "gold": "pos"}
                for i in range(gold)]
    import_items(session, project=proj, stream=io.BytesIO(jsonl(records)), fmt="jsonl", now=now)


def answer(session: Session, item: Item, worker: Account, value: Any, *, now: dt.datetime,
           status: AssignmentStatus = AssignmentStatus.SUBMITTED, duration_ms: int = 4000,
           guideline_version: int = 1) -> Answer:
    """A submitted assignment on the item's HIT with one answer (the worker API arrives in #3)."""
    hit = session.get(Hit, item.hit_id)
    assert hit is not None, "publish the item first"
    asg = Assignment(hit_id=hit.id, batch_id=hit.batch_id, project_id=item.project_id, worker_id=worker.id,
                     status=status,
                     guideline_version=guideline_version, leased_at=now - dt.timedelta(milliseconds=duration_ms),
                     expires_at=now + dt.timedelta(minutes=10), submitted_at=now)
    session.add(asg)
    session.flush()
    ans = Answer(assignment_id=asg.id, item_id=item.id, worker_id=worker.id, project_id=item.project_id,
                 value=value, guideline_version=guideline_version, submitted_at=now, duration_ms=duration_ms)
    session.add(ans)
    session.commit()
    return ans


def answered_project(session: Session, *, now: dt.datetime, value: Any = "neg") -> tuple[Project, str]:
    """A published project of one item with one worker's answer, and its requester's token."""
    owner, token = account(session, Role.REQUESTER, now=now)
    proj = project(session, owner, now=now)
    items(session, proj, 1, now=now)
    publish_batch(session, project_id=proj.id, account=owner, now=now)
    worker, _ = account(session, Role.WORKER, now=now)
    only = session.query(Item).filter(Item.project_id == proj.id).one()
    answer(session, only, worker, value, now=now)
    return proj, token


def lease(session: Session, hit_id: int, project_id: int, worker: Account, *, now: dt.datetime,
          seconds: int = 600) -> Assignment:
    asg = Assignment(hit_id=hit_id, batch_id=session.get(Hit, hit_id).batch_id, project_id=project_id,
                     worker_id=worker.id, status=AssignmentStatus.LEASED,
                     guideline_version=1, leased_at=now, expires_at=now + dt.timedelta(seconds=seconds))
    session.add(asg)
    session.commit()
    return asg


def item_id(client: Any, public_id: int) -> int:
    """The internal id of an item a worker's task shows (workers see keyed public ids, see base/public_ids.py)."""
    return client.application.extensions["crowdmarket.item_ids"].internal(public_id)


def public_item_id(client: Any, internal_id: int) -> int:
    return client.application.extensions["crowdmarket.item_ids"].public(internal_id)


def in_uow(fn: Any, session: Session, *args: Any, **kwargs: Any) -> Any:
    """Call a service as the edge does: in a unit of work of its own (base/uow.py), committed when it returns (or
    refuses keeping its writes), rolled back when it raises."""
    from base.uow import UnitOfWork

    with UnitOfWork(session):
        return fn(session, *args, **kwargs)
