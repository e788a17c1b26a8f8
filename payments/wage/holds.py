"""The hold placed when a batch is published: its maximum cost (payments/wage/costs.py), moved from the
requester's available money into escrow in the publisher's transaction, so too little money (402) publishes
nothing."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from base.events import BatchPublished, PlacesMoved
from base.money import Money
from market.catalogue.models import Batch, Project
from payments import ledger
from payments.ledger import InsufficientFunds
from payments.models import Hold, HoldState
from payments.wage.costs import assignment_cost, max_cost


def on_batch_published(session: Session, event: BatchPublished) -> None:
    """Hold the new batch's maximum cost (once per batch: a replayed event places no second hold)."""
    if session.scalar(select(Hold.id).where(Hold.batch_id == event.batch_id)) is not None:
        return
    batch = session.get(Batch, event.batch_id)
    project = session.get(Project, event.project_id)
    assert batch is not None and project is not None
    detail = max_cost(session, batch, project)
    cents = detail["total_cents"]
    try:
        ledger.place_hold(session, requester_id=event.requester_id, batch_id=batch.id, currency=batch.currency,
                          cents=cents, now=event.at, detail=detail)
    except InsufficientFunds as exc:
        short = exc.extra.get("shortfall") or {"cents": cents, "currency": batch.currency}
        raise InsufficientFunds(
            f"Publishing this batch holds its maximum cost of {Money(cents, batch.currency)} in escrow "
            f"({detail['real_assignments'] + detail['gold_assignments']} assignments at "
            f"{detail['per_assignment']['total_cents']} cents at most, fair-wage headroom and fees included); your "
            f"available money is {Money(short['cents'], short['currency'])} short. Nothing was published.",
            errors={"funds": [f"short by {short['cents']} {short['currency']} cents"]},
            shortfall=short, required={"cents": cents, "currency": batch.currency}) from exc


def on_places_moved(session: Session, event: PlacesMoved) -> None:
    """The moved places' maximum cost leaves the source batch's open hold (what it has left, at most) and joins
    the target's open hold; a batch without an open hold pays later work from available money, as always."""
    for batch_id, sign in sorted(((event.from_batch_id, -1), (event.to_batch_id, 1))):  # holds in id order
        hold = ledger.lock_hold(session, batch_id)
        batch = session.get(Batch, batch_id)
        if hold is None or batch is None or hold.state != HoldState.OPEN:
            continue
        cents = event.places * assignment_cost(batch).total
        if sign < 0:
            ledger.release(session, hold, cents, now=event.at, key=f"hold:{batch_id}:{event.key}:out")
        elif cents:
            ledger.extend_hold(session, hold, cents, now=event.at, key=f"hold:{batch_id}:{event.key}:in")
