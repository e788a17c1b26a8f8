"""What a requester is told about a batch's pay: its times, its effective hourly rate against the target and the
floor, the top-ups paid so far and its hold. No flask here."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from base.money import hourly_rate, rate_warnings, round_cents
from market.catalogue.models import Batch
from payments import ledger
from payments.models import AssignmentPay, Hold
from payments.wage.costs import target_of
from payments.wage.topups import estimated_seconds

WARNINGS = {
    "below_target": "The measured rate is below the target wage: approved work is topped up to {target}/h.",
    "below_floor": "The rate is below the platform's wage floor of {floor}/h: top-ups to the floor are paid and "
                   "cannot be turned off.",
}


def _per_hour(cents: int, currency: str) -> str:
    return f"{cents // 100}.{cents % 100:02d} {currency}"


def batch_pay(session: Session, *, batch: Batch) -> dict[str, Any]:
    """A batch's pay statement (the caller has checked access)."""
    currency = batch.currency
    measured = estimated_seconds(session, batch.id)
    seconds, basis = (measured, "measured") if measured is not None else (batch.estimated_seconds, "estimated")
    rate = hourly_rate(batch.reward_cents, seconds) if seconds else None
    target, floor = target_of(batch), batch.wage_floor_cents_per_hour
    paid, paid_count = session.execute(select(func.coalesce(func.sum(AssignmentPay.top_up_cents), 0),
                                              func.count(AssignmentPay.top_up_transaction_id))
                                       .where(AssignmentPay.batch_id == batch.id)).one()
    hold = session.scalar(select(Hold).where(Hold.batch_id == batch.id))
    codes = [] if not batch.reward_cents else rate_warnings(rate, target_cents_per_hour=target,
                                                            floor_cents_per_hour=floor)
    texts = {"target": _per_hour(target, currency), "floor": _per_hour(floor, currency)}
    return {
        "batch_id": batch.id,
        "reward": {"cents": batch.reward_cents, "currency": currency},
        "estimated_seconds": batch.estimated_seconds,
        "measured_seconds": measured,
        "effective_hourly_rate": None if rate is None else
        {"cents": round_cents(rate), "currency": currency, "basis": basis},
        "target_wage": {"cents": target, "currency": currency},
        "requested_target_wage": {"cents": batch.target_wage_cents_per_hour, "currency": currency},
        "wage_floor": {"cents": floor, "currency": currency},
        "auto_top_up": batch.auto_top_up,
        "top_ups_paid": {"cents": int(paid), "currency": currency},
        "top_up_assignments": int(paid_count),
        "hold": None if hold is None else {
            "state": hold.state.value, "held": {"cents": hold.held, "currency": currency},
            "posted": {"cents": hold.posted, "currency": currency},
            "released": {"cents": hold.released, "currency": currency},
            "remaining": {"cents": ledger.remaining(hold), "currency": currency}, "detail": hold.detail},
        "warnings": [{"code": code, "message": WARNINGS[code].format(**texts)} for code in codes],
    }
