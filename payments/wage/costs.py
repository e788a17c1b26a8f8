"""What a batch may cost at most: the hold placed at publish, and what outstanding work still needs of it.

The maximum cost of one assignment is its reward, the reward's fee, a fair-wage top-up headroom and that
headroom's bonus fee. The headroom is the top-up to the batch's target wage (the floor when auto top-up is off)
for work that takes 1.5 times the requester's estimate: HITs that take longer than that are still topped up, the
excess drawn on the requester's available money (`ledger.draw` extends the hold, 402 when it cannot). Gold tasks
are served in place of real work and paid from the batch they were served from, so a project with gold adds
ceil(real x g / (1 - g)) assignments at gold rate g (a fraction g of all tasks served is gold).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from base.money import FeeModel, effective_target, top_up_cents
from market.catalogue.gold import has_gold
from market.catalogue.models import Batch, Hit, HitSlot, Project
from qualification.gold import gold_tasks_needed

# The working time the hold's top-up headroom covers, as a multiple of the requester's estimate.
HEADROOM_FACTOR = Decimal("1.5")


def fees_of(batch: Batch) -> FeeModel:
    """The fee terms the batch was published under (stored on it: terms change, published batches keep theirs)."""
    return FeeModel(batch.fee_model, rate=Decimal(batch.fee_rate), large_hit_rate=Decimal(batch.fee_large_hit_rate),
                    large_hit_assignments=batch.fee_large_hit_assignments, minimum_cents=batch.fee_minimum_cents)


def target_of(batch: Batch) -> int:
    """The hourly wage the batch's work is topped up to (never below the floor)."""
    return effective_target(target_cents_per_hour=batch.target_wage_cents_per_hour,
                            floor_cents_per_hour=batch.wage_floor_cents_per_hour, auto_top_up=batch.auto_top_up)


@dataclass(frozen=True, slots=True)
class AssignmentCost:
    """The most one assignment of a batch can cost: reward + fee (paid at approval) and top-up + fee (later)."""

    reward_cents: int
    reward_fee_cents: int
    top_up_headroom_cents: int
    bonus_fee_cents: int

    @property
    def reward_total(self) -> int:
        return self.reward_cents + self.reward_fee_cents

    @property
    def top_up_total(self) -> int:
        return self.top_up_headroom_cents + self.bonus_fee_cents

    @property
    def total(self) -> int:
        return self.reward_total + self.top_up_total


def assignment_cost(batch: Batch, assignments_per_hit: int | None = None) -> AssignmentCost:
    """The maximum cost of one assignment of the batch (on a HIT of `assignments_per_hit`, default the batch's)."""
    fees, reward = fees_of(batch), batch.reward_cents
    headroom = 0
    if reward and batch.estimated_seconds:
        headroom = top_up_cents(reward_cents=reward, target_cents_per_hour=target_of(batch),
                                seconds=HEADROOM_FACTOR * batch.estimated_seconds)
    return AssignmentCost(reward, fees.reward_fee(reward, assignments_per_hit or batch.assignments_per_item),
                          headroom, fees.bonus_fee(headroom))


def max_cost(session: Session, batch: Batch, project: Project) -> dict[str, Any]:
    """The batch's maximum cost and how it was reckoned (kept in Hold.detail for the requester's statement)."""
    if batch.parent_id is None:
        groups = dict(session.execute(select(Hit.max_assignments, func.sum(Hit.max_assignments))
                                      .where(Hit.batch_id == batch.id, Hit.is_gold.is_(False))
                                      .group_by(Hit.max_assignments)).all())
    else:  # a burst: the places moved to its queue, under the fee terms the burst resolved for its platform tasks
        groups = {batch.assignments_per_item: session.scalar(
            select(func.count()).select_from(HitSlot).where(HitSlot.batch_id == batch.id)) or 0}
    real = sum(int(n) for n in groups.values())
    rate = Decimal(project.gold_rate) if has_gold(session, project) else Decimal(0)
    gold = gold_tasks_needed(real, rate)
    cost = assignment_cost(batch)
    total = sum(int(n) * assignment_cost(batch, per_hit).total for per_hit, n in groups.items()) + gold * cost.total
    return {
        "real_assignments": real, "gold_assignments": gold, "gold_rate": str(rate),
        "per_assignment": {**asdict(cost), "total_cents": cost.total},
        "headroom_seconds": str(HEADROOM_FACTOR * batch.estimated_seconds) if batch.estimated_seconds else None,
        "target_wage_cents_per_hour": target_of(batch), "fee_model": batch.fee_model,
        "fee_rate": str(batch.fee_rate), "total_cents": total,
    }
