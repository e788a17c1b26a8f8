"""Workers contesting gold items, and ops deciding: correct the known answer (past answers are re-scored), retire
the item (it counts toward nobody's accuracy and is never served again), or reject. No flask here.

A worker can contest only what they were shown to have missed: an answer the project's gold feedback marked
wrong. Anything else (a real item, a gold item in a project without feedback, a gold answer that was right)
gets one and the same refusal, so contesting never tells a worker which items were gold.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from base.errors import Conflict, InvalidInput, NotFound
from base.identity import Actor
from base.labels import AnswerError, validate_answer
from base.paging import keyset_page
from base.uow import savepoint
from market.catalogue.models import Answer, Assignment, Hit, HitSlot, Item, Project, SlotState
from market.quality.models import DisputeState, GoldDispute
from market.quality.scoring import rescore_item

_NOTHING_TO_CONTEST = "Only an answer that the feedback showed as wrong can be contested."


def open_dispute(session: Session, *, worker: Actor, assignment_id: int, item_id: int, note: str,
                 now: dt.datetime) -> tuple[GoldDispute, bool]:
    """Contest a missed gold item; returns (dispute, created). Contesting it again returns the first dispute."""
    assignment = session.get(Assignment, assignment_id)
    if assignment is None or assignment.worker_id != worker.id:
        raise NotFound(f"Assignment {assignment_id} not found.")
    existing = session.scalar(select(GoldDispute).where(GoldDispute.assignment_id == assignment_id,
                                                        GoldDispute.item_id == item_id))
    if existing is not None:
        return existing, False
    answer = session.scalar(select(Answer).where(Answer.assignment_id == assignment_id, Answer.item_id == item_id))
    project = session.get(Project, assignment.project_id)
    assert project is not None
    if answer is None or not project.gold_feedback or answer.gold_correct is not False:
        raise Conflict(_NOTHING_TO_CONTEST, errors={"item_id": ["not an answer marked wrong"]})
    dispute = GoldDispute(item_id=item_id, project_id=assignment.project_id, worker_id=worker.id,
                          assignment_id=assignment_id, note=note, state=DisputeState.OPEN, created_at=now)
    try:
        with savepoint(session):
            session.add(dispute)
            session.flush()
    except IntegrityError:  # the same dispute, sent twice at once
        return open_dispute(session, worker=worker, assignment_id=assignment_id, item_id=item_id, note=note,
                            now=now)
    return dispute, True


def list_disputes(session: Session, *, after: int | None, limit: int, state: DisputeState | None = None,
                  worker_id: int | None = None, project_id: int | None = None) -> list[GoldDispute]:
    """Disputes by id, filtered."""
    return keyset_page(session, GoldDispute, after=after, limit=limit, equal=(
        (GoldDispute.state, state), (GoldDispute.worker_id, worker_id), (GoldDispute.project_id, project_id)))


@dataclass(frozen=True)
class DisputeDetail:
    """What ops see of a dispute besides its row: the item, the contested answer, how the item has scored."""

    item: Item
    answer: Any
    answers: int  # scored answers to the item
    correct: int  # of them, right


def dispute_details(session: Session, disputes: Sequence[GoldDispute]) -> dict[int, DisputeDetail]:
    """Each dispute's detail, by dispute id: three queries for the lot, however many disputes."""
    if not disputes:
        return {}
    item_ids, assignment_ids = sorted({d.item_id for d in disputes}), sorted({d.assignment_id for d in disputes})
    items = {i.id: i for i in session.scalars(select(Item).where(Item.id.in_(item_ids)))}
    # Every answer of these assignments to these items: a superset of the contested pairs, picked out below.
    values = {(a, i): v for a, i, v in session.execute(select(Answer.assignment_id, Answer.item_id, Answer.value).where(
        Answer.assignment_id.in_(assignment_ids), Answer.item_id.in_(item_ids)))}
    scored = {i: (int(n), int(right)) for i, n, right in session.execute(
        select(Answer.item_id, func.count(), func.count(case((Answer.gold_correct.is_(True), 1))))
        .where(Answer.item_id.in_(item_ids), Answer.gold_correct.is_not(None)).group_by(Answer.item_id))}
    return {d.id: DisputeDetail(items[d.item_id], values.get((d.assignment_id, d.item_id)),
                                *scored.get(d.item_id, (0, 0))) for d in disputes}


def get_dispute(session: Session, dispute_id: int, *, lock: bool = False) -> GoldDispute:
    stmt = select(GoldDispute).where(GoldDispute.id == dispute_id)
    dispute = session.scalar(stmt.with_for_update() if lock else stmt)
    if dispute is None:
        raise NotFound(f"Dispute {dispute_id} not found.")
    return dispute


def _settle(session: Session, dispute: GoldDispute, state: DisputeState, *, actor: Actor, note: str,
            now: dt.datetime, whole_item: bool) -> None:
    """Close this dispute (and, when the item itself changed, every open dispute of the item)."""
    if dispute.state != DisputeState.OPEN:
        raise Conflict(f"This dispute is {dispute.state.value} already.", errors={"state": [dispute.state.value]})
    target = (GoldDispute.item_id == dispute.item_id) if whole_item else (GoldDispute.id == dispute.id)
    session.execute(update(GoldDispute).where(target, GoldDispute.state == DisputeState.OPEN).values(
        state=state, resolved_by_id=actor.id, resolved_at=now, resolution=note))
    session.refresh(dispute)


def _set_gold(session: Session, item: Item, project: Project, gold: Any, explanation: str | None) -> None:
    if item.gold_retired_at is not None:
        raise Conflict("This gold item is retired; it cannot be corrected.", errors={"state": ["retired"]})
    try:
        item.gold_answer = validate_answer(project.label_schema, gold)
    except AnswerError as exc:
        raise InvalidInput("The corrected answer does not fit the label schema.", errors={"gold": [str(exc)]}) \
            from exc
    if explanation is not None:
        item.gold_explanation = explanation


def correct(session: Session, *, dispute_id: int, actor: Actor, gold: Any, explanation: str | None, note: str,
            now: dt.datetime) -> tuple[GoldDispute, int]:
    """Fix the item's known answer and re-score every answer to it; returns (dispute, answers re-scored)."""
    dispute = get_dispute(session, dispute_id, lock=True)
    item = session.scalar(select(Item).where(Item.id == dispute.item_id).with_for_update())
    project = session.get(Project, dispute.project_id)
    assert item is not None and project is not None
    _set_gold(session, item, project, gold, explanation)
    _settle(session, dispute, DisputeState.CORRECTED, actor=actor, note=note, now=now, whole_item=True)
    rescored = rescore_item(session, item=item, now=now)
    session.flush()
    return dispute, rescored


def correct_item(session: Session, *, project: Project, item_id: int, actor: Actor, gold: Any,
                 explanation: str | None, now: dt.datetime) -> tuple[Item, int]:
    """The requester fixes a gold item's known answer (the quality report's gold suspects, say): every answer to
    it is re-scored, its workers' figures recomputed and its open disputes settled as corrected."""
    item = session.scalar(select(Item).where(Item.id == item_id, Item.project_id == project.id).with_for_update())
    if item is None:
        raise NotFound(f"Item {item_id} not found.")
    if not item.is_gold:
        raise Conflict("Only a gold item has a known answer to correct.", errors={"gold": ["not a gold item"]})
    _set_gold(session, item, project, gold, explanation)
    session.execute(update(GoldDispute).where(GoldDispute.item_id == item.id, GoldDispute.state == DisputeState.OPEN)
                    .values(state=DisputeState.CORRECTED, resolved_by_id=actor.id, resolved_at=now,
                            resolution="The requester corrected the known answer."))
    rescored = rescore_item(session, item=item, now=now)
    session.flush()
    return item, rescored


def retire(session: Session, *, dispute_id: int, actor: Actor, note: str, now: dt.datetime) -> tuple[GoldDispute, int]:
    """Take the item out of gold: never served again, no answer to it counts toward anyone's accuracy."""
    dispute = get_dispute(session, dispute_id, lock=True)
    item = session.scalar(select(Item).where(Item.id == dispute.item_id).with_for_update())
    assert item is not None
    item.gold_retired_at = item.gold_retired_at or now
    retire_hit(session, item.hit_id)
    _settle(session, dispute, DisputeState.RETIRED, actor=actor, note=note, now=now, whole_item=True)
    rescored = rescore_item(session, item=item, now=now)
    session.flush()
    return dispute, rescored


def retire_hit(session: Session, hit_id: int | None) -> None:
    """Take a gold HIT out of its pool: no rank, so no claim takes it again (market/engine/claim.py), and no free slots
    left in the pool's queue. Live leases on it still land. A gold item filling a batch's last HIT stays served:
    only its scoring stops."""
    hit = session.get(Hit, hit_id) if hit_id is not None else None
    if hit is None or not hit.is_gold:
        return
    hit.gold_rank = None
    session.execute(delete(HitSlot).where(HitSlot.hit_id == hit.id, HitSlot.state == SlotState.FREE))


def reject(session: Session, *, dispute_id: int, actor: Actor, note: str, now: dt.datetime) -> GoldDispute:
    """The known answer stands."""
    dispute = get_dispute(session, dispute_id, lock=True)
    _settle(session, dispute, DisputeState.REJECTED, actor=actor, note=note, now=now, whole_item=False)
    session.flush()
    return dispute
