"""A published project of 2-item HITs with gold, and its workers, for the work page's tests."""

from __future__ import annotations

import io
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select

from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.imports import import_items
from market.catalogue.models import Item, Project
from tests.browser import with_password
from tests.factories import account, jsonl, project
from workers.models import Account

# The gold items' known answers and explanations: a response that shows one before the worker answered leaks it.
EXPLANATION = "Sarcastic praise: the reviewer hated it (note 7731)."
GOLD = [("gold-a", "Oh great, another broken zipper.", "neg"), ("gold-b", "Truly the best hour of my life.", "neg")]


@dataclass
class WorkWorld:
    owner: Account
    owner_token: str
    project: Project
    worker: Account
    worker_token: str
    login: str
    gold_items: list[Item]


def work_world(app, session, clock, *, feedback: bool = True, real: int = 8, data: list[dict] | None = None,
               **settings) -> WorkWorld:
    """A project of 2-item HITs (one answer per item) with a 2-item gold HIT, and a worker with a password.
    `data`: the real items' data (else `real` texts)."""
    owner, owner_token = account(session, Role.REQUESTER, now=clock())
    proj = project(session, owner, now=clock(), items_per_hit=2, assignments_per_item=1, reward_cents=12,
                   gold_rate=Decimal("0.10"), gold_feedback=feedback, instructions="Pick the sentiment.",
                   **settings)
    data = data or [{"text": f"Review number {i}: it was fine."} for i in range(real)]
    records = [{"external_id": f"r{i}", "data": d} for i, d in enumerate(data)]
    if proj.label_schema["type"] == "single_choice":
        records += [{"external_id": e, "data": {"text": text}, "gold": answer, "explanation": EXPLANATION}
                    for e, text, answer in GOLD]
    import_items(session, project=proj, stream=io.BytesIO(jsonl(records)), fmt="jsonl", now=clock())
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    session.commit()
    worker, worker_token = account(session, Role.WORKER, now=clock())
    login = with_password(app, session, worker)
    gold = list(session.scalars(select(Item).where(Item.project_id == proj.id, Item.is_gold).order_by(Item.id)))
    return WorkWorld(owner, owner_token, proj, worker, worker_token, login, gold)
