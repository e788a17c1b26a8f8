"""What a platform charges for an approved submission, in our books. No flask here.

Approvals pay each of our tasks at the batch's reward to the platform's account (`external:<platform>`). A
platform pays its worker per submission: MTurk one task of ours at that same reward, so nothing is left to settle;
Prolific a session's reward per place, whatever number of our tasks the participant did (fewer, when others took
the places; more, when gold came up often; rejected ones included, since the session as a whole is approved).
When a submission is mirrored as approved, the difference between its platform task's reward and what our
approvals paid for it is posted, with the platform's fee on it: drawn on the burst's hold (or the requester's
available money) when the platform charges more, given back to available money when it charges less. One
transaction per submission (its idempotency key), so the books say what the platform's invoice will.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from market.catalogue.models import Assignment, AssignmentStatus, Batch, Project
from payments import ledger
from payments.ledger import Posting
from payments.models import HoldState, TransactionKind
from payments.wage.costs import fees_of
from platforms.models import PlatformAssignment, PlatformBatch, PlatformSubmission, PlatformTask


def settle_submission(session: Session, burst: PlatformBatch, row: PlatformSubmission, *, now: dt.datetime) -> int:
    """Post the difference for an approved submission (once); returns it in cents, fee excluded (0: none)."""
    key = f"platform-charge:{row.platform}:{row.external_id}"
    if ledger.find(session, key) is not None:
        return 0
    charged = session.scalar(select(PlatformTask.reward_cents).where(
        PlatformTask.platform == row.platform, PlatformTask.external_id == row.external_task_id))
    batch = session.get(Batch, burst.batch_id)
    assert batch is not None
    if charged is None:
        return 0
    approved = session.scalar(
        select(func.count(Assignment.id)).join(PlatformAssignment, PlatformAssignment.assignment_id == Assignment.id)
        .where(PlatformAssignment.platform == row.platform, PlatformAssignment.external_id == row.external_id,
               Assignment.status == AssignmentStatus.APPROVED)) or 0
    diff = charged - approved * batch.reward_cents
    if diff == 0:
        return 0
    owner = session.scalar(select(Project.owner_id).where(Project.id == batch.project_id))
    assert owner is not None
    fees, currency = fees_of(batch), batch.currency
    fee = fees.reward_fee(abs(diff), 1)
    hold = ledger.lock_hold(session, batch.id)  # holds before accounts (payments' lock order)
    from_hold = diff > 0 and hold is not None and hold.state == HoldState.OPEN
    source = (ledger.escrow if from_hold else ledger.available)(owner, currency)
    payee, fee_account = ledger.external(batch.platform or row.platform, currency), ledger.fees(currency, fees.name)
    ids = ledger.account_ids(session, [source, payee, fee_account])
    sign = 1 if diff > 0 else -1
    if from_hold:
        assert hold is not None
        ledger.draw(session, hold, diff + fee, now=now, key=f"hold:{batch.id}:{key}")
    ledger.post(session, [Posting(key, TransactionKind.REWARD, currency,
                                  ((ids[source], -sign * (abs(diff) + fee)), (ids[payee], diff),
                                   (ids[fee_account], sign * fee)),
                                  {"requester_id": owner, "project_id": batch.project_id, "batch_id": batch.id,
                                   "hold_id": hold.id if from_hold and hold is not None else None,
                                   "reason": f"{row.platform} charges {charged} cents for submission "
                                             f"{row.external_id}; approvals paid {approved} of our tasks"})],
                now=now)
    return diff
