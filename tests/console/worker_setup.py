"""Setup for the worker pages' tests: a requester's qualification test, a published project that requires it, and a
Flask client signed in as an account (its token in the page session, as log-in leaves it)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.models import Batch, Project
from qualification.models import QualificationType
from qualification.service import create_type
from tests import factories
from workers.models import Account

# The known answers of the test: a worker who picks these passes (3 of 3), one who picks others fails.
KNOWN = ["pos", "neg", "neu"]
QUESTIONS = ["I loved it", "Broke in a day", "It is a chair"]


@dataclass
class Market:
    owner: Account
    owner_token: str
    qtype: QualificationType
    project: Project
    batch: Batch


def qualification_type(session: Session, owner: Account, now: dt.datetime, **overrides: Any) -> QualificationType:
    data = {"name": "Sentiment screener", "description": "Three short reviews to label.",
            "label_schema": factories.SENTIMENT, "passing_score": 70, "test_duration_seconds": 600,
            "retry_delay_seconds": 3600, "max_attempts": 3, "auto_grant": True,
            "questions": [{"data": {"text": t}, "answer": a} for t, a in zip(QUESTIONS, KNOWN, strict=True)]}
    data.update(overrides)
    qtype = create_type(session, owner=owner, data=data, now=now)
    session.commit()
    return qtype


def gated_market(session: Session, now: dt.datetime, *, title: str = "Review sentiment", items: int = 3,
                 min_score: int = 70, **project: Any) -> Market:
    """A funded requester's published project whose work needs a score of `min_score` on their test."""
    owner, token = factories.account(session, Role.REQUESTER, now=now)
    qtype = qualification_type(session, owner, now)
    reqs = [{"qualification_id": qtype.id, "comparator": "GreaterThanOrEqualTo", "values": [min_score]}]
    proj = factories.project(session, owner, now=now, title=title, qualification_requirements=reqs, **project)
    factories.items(session, proj, items, now=now, prefix=f"g{proj.id}-")
    batch, _ = publish_batch(session, project_id=proj.id, account=owner, now=now)
    session.commit()
    return Market(owner, token, qtype, proj, batch)


def open_market(session: Session, now: dt.datetime, *, title: str = "Open sentiment", items: int = 2,
                **project: Any) -> tuple[Project, Batch, Account]:
    """A published project without requirements."""
    owner, _ = factories.account(session, Role.REQUESTER, now=now)
    proj = factories.project(session, owner, now=now, title=title, **project)
    factories.items(session, proj, items, now=now, prefix=f"o{proj.id}-")
    batch, _ = publish_batch(session, project_id=proj.id, account=owner, now=now)
    session.commit()
    return proj, batch, owner


def signed_in(app: Any, token: str) -> Any:
    """A test client whose page session holds `token` (what log-in stores)."""
    client = app.test_client()
    with client.session_transaction() as s:
        s["token"] = token
    return client


def csrf(client: Any, url: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(url).get_data(as_text=True)).group(1)
