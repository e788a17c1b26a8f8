"""Setup for the ops console's tests: a gold project, a worker who answers its gold wrong until the quality rules
flag them (a real GOLD_BELOW_THRESHOLD flag, raised by market/quality/scoring.py), ops staff with a password."""

from __future__ import annotations

import io
import re
from decimal import Decimal

from sqlalchemy import select

from base.identity import Role
from market.catalogue.batches import publish_batch
from market.catalogue.imports import import_items
from market.catalogue.models import Item
from market.engine import next_task
from tests.factories import account, auth, item_id, jsonl, project
from workers.models import FlagReason, WorkerFlag

LABELS = ("pos", "neg", "neu")


def gold_project(session, clock, *, real: int = 10, gold: int = 10, title: str = "Sentiment of reviews", **settings):
    owner, _ = account(session, Role.REQUESTER, now=clock())
    settings.setdefault("gold_rate", Decimal("0.10"))
    settings.setdefault("min_judged_answers", 4)
    proj = project(session, owner, now=clock(), title=title, assignments_per_item=1, **settings)
    records = [{"external_id": f"r{i}", "data": {"text": f"review {i}"}} for i in range(real)]
    records += [{"external_id": f"g{g}", "data": {"text": f"gold review {g}"}, "gold": LABELS[g % 3]}
                for g in range(gold)]
    import_items(session, project=proj, stream=io.BytesIO(jsonl(records)), fmt="jsonl", now=clock())
    publish_batch(session, project_id=proj.id, account=owner, now=clock())
    return proj


def task(client, session, clock, token, *, correct: bool, seconds: float = 5) -> None:
    """Claim and submit one task through the API; gold answered right or wrong as told."""
    resp = client.post("/api/v1/work/next", headers=auth(token))
    assert resp.status_code == 200, resp.get_json()
    shown = resp.get_json()
    clock.advance(seconds=seconds)
    answers = []
    for it in shown["items"]:
        item = session.get(Item, item_id(client, it["id"]))
        value = "pos"
        if item.is_gold:
            value = item.gold_answer if correct else next(v for v in LABELS if v != item.gold_answer)
        answers.append({"item_id": it["id"], "answer": value})
    resp = client.post(f"/api/v1/assignments/{shown['assignment_id']}/submit", json={"answers": answers},
                       headers=auth(token))
    assert resp.status_code == 200, resp.get_json()
    session.expire_all()  # judged in a session of the app's


def spammer(client, session, clock, monkeypatch, *, wrong: int = 4, right: int = 0):
    """A worker who answers `right` gold tasks right and then `wrong` wrong: flagged by the quality rules.
    Returns (worker, token, flag)."""
    monkeypatch.setattr(next_task, "is_gold_turn", lambda *args, **kwargs: True)
    worker, token = account(session, Role.WORKER, now=clock())
    for correct in [True] * right + [False] * wrong:
        task(client, session, clock, token, correct=correct)
    monkeypatch.undo()
    flag = session.scalar(select(WorkerFlag).where(WorkerFlag.account_id == worker.id,
                                                   WorkerFlag.reason == FlagReason.GOLD_BELOW_THRESHOLD))
    assert flag is not None, "the quality rules did not flag the spammer"
    return worker, token, flag


def ops_session(client, session, clock):
    """An ops account, signed in on `client`'s page session."""
    ops, token = account(session, Role.OPS, now=clock())
    login_token(client, session, clock, ops)
    return ops


def login_token(client, session, clock, acct) -> None:
    """Sign `client` in as `acct` by putting a login token in its session cookie (what /login does)."""
    from workers.service import issue_token

    _, token = issue_token(session, account=acct, now=clock(), login=True)
    session.commit()
    with client.session_transaction() as s:
        s["token"] = token


def csrf(client, url: str) -> str:
    html = client.get(url).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
