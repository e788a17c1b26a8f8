"""Random sequences of everything that moves money keep the books right (hypothesis' rule-based state machine).

fund / publish (a hold, or 402) / work / approve / reject / reverse a rejection / reverse a reward (ops) / top up /
cancel / settle / expire (time passes) / payout (create, approve, a line failed): after every step each balance
equals the sum of its entries, every transaction balances, no limited account is negative, escrow equals the
holds, reconciliation agrees, and no assignment is paid twice. Each step is one unit of work, as the edge runs
it: a refusal (402, 409) changes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from sqlalchemy import func, select

from base.db import Database
from base.errors import DomainError
from base.identity import Role
from market.catalogue.batches import change_batch_status, publish_batch
from market.catalogue.models import Assignment, AssignmentStatus, Batch, Hit, Item, Project
from payments import cycle as payments_cycle
from payments import ledger
from payments.books import balances, payouts
from payments.books.reconcile import reconcile
from payments.models import AssignmentPay, LedgerTransaction, PayoutLine, PayoutLineStatus, TransactionKind
from payments.review.approve import approve, reject, reverse_rejection
from payments.wage.settle import settle_holds
from payments.wage.topups import pay_top_ups
from shell.app import subscribe
from tests import factories
from tests.conftest import START

WORKERS = 4


def test_random_money_operations_keep_the_books(engine):
    class Books(RuleBasedStateMachine):
        @initialize()
        def open_books(self) -> None:
            self.conn = engine.connect()
            self.outer = self.conn.begin()
            self.db = Database(engine, bind=self.conn)
            subscribe(self.db.events)
            self.now = START
            with self.db.unit_of_work() as s:
                self.requester, _ = factories.account(s, Role.REQUESTER, now=self.now, funded=False)
                self.ops, _ = factories.account(s, Role.OPS, now=self.now)
                self.workers = [factories.account(s, Role.WORKER, now=self.now)[0].id for _ in range(WORKERS)]
                project = factories.project(s, self.requester, now=self.now, reward_cents=10, items_per_hit=1,
                                            assignments_per_item=2, gold_rate=0, estimated_seconds=30,
                                            lifetime_seconds=3 * 86400)
                factories.items(s, project, 40, now=self.now)
                self.project_id = project.id
            # A funded requester with one batch out: the sequences start where money moves.
            self.funds = 0
            self.fund(2000)
            self.publish(8)
            for k in range(12):
                self._submit(self.workers[k % WORKERS], 40 + 7 * k, k)

        def teardown(self) -> None:
            if hasattr(self, "outer"):
                self.outer.rollback()
                self.conn.close()

        def step(self, fn, *args, **kwargs):
            """One unit of work; a domain refusal leaves nothing behind."""
            try:
                with self.db.unit_of_work() as s:
                    return fn(s, *args, **kwargs)
            except DomainError as exc:
                assert exc.status in (402, 404, 409, 422), exc
                return None

        @rule(cents=st.integers(1, 3000))
        def fund(self, cents: int) -> None:
            def go(s):
                ledger.fund(s, requester_id=self.requester.id, cents=cents, currency="USD", now=self.now,
                            key=f"sm:{self.funds}", actor_id=self.ops.id)
            self.step(go)
            self.funds += 1

        @rule(items=st.integers(1, 8))
        def publish(self, items: int) -> None:
            def go(s):
                free = list(s.scalars(select(Item.id).where(Item.project_id == self.project_id,
                                                            Item.hit_id.is_(None)).order_by(Item.id).limit(items)))
                if free:
                    publish_batch(s, project_id=self.project_id, account=self.requester, now=self.now,
                                  item_ids=free)
            self.step(go)

        @rule(worker=st.integers(0, WORKERS - 1), seconds=st.integers(5, 400), pick=st.integers(0, 1000),
              n=st.integers(1, 4))
        def work(self, worker: int, seconds: int, pick: int, n: int) -> None:
            """A worker submits HITs of open batches (written as the engine leaves them)."""
            for k in range(n):
                self._submit(self.workers[(worker + k) % WORKERS], seconds, pick + k)

        def _submit(self, wid: int, seconds: int, pick: int) -> None:
            def go(s):
                taken = select(Assignment.hit_id).where(Assignment.worker_id == wid)
                full = (select(Assignment.hit_id).where(Assignment.status != AssignmentStatus.RETURNED)
                        .group_by(Assignment.hit_id).having(func.count() >= 2))
                hits = s.execute(select(Hit.id, Hit.batch_id).join(Batch, Batch.id == Hit.batch_id).where(
                    Hit.project_id == self.project_id, Batch.status == "open", Batch.expires_at > self.now,
                    Hit.id.not_in(taken), Hit.id.not_in(full)).order_by(Hit.id)).all()
                if not hits:
                    return
                hit_id, batch_id = hits[pick % len(hits)]
                s.add(Assignment(hit_id=hit_id, batch_id=batch_id, project_id=self.project_id, worker_id=wid,
                                 is_gold=False, status=AssignmentStatus.SUBMITTED, guideline_version=1,
                                 leased_at=self.now - dt.timedelta(seconds=seconds), expires_at=self.now,
                                 submitted_at=self.now, duration_ms=seconds * 1000))
            self.step(go)

        def _pick(self, status: AssignmentStatus, picks: list[int]) -> list[int]:
            with self.db.session_scope() as s:
                ids = list(s.scalars(select(Assignment.id).where(Assignment.status == status)
                                     .order_by(Assignment.id)))
            return sorted({ids[p % len(ids)] for p in picks}) if ids else []

        @rule(how=st.sampled_from(["approve ids", "approve batch", "reject", "reverse rejection",
                                   "reverse reward"]),
              picks=st.lists(st.integers(0, 1000), min_size=1, max_size=4))
        def review(self, how: str, picks: list[int]) -> None:
            """A requester approves or rejects work, reverses a rejection; ops reverse a reward or a top-up."""
            if how == "approve ids" and (ids := self._pick(AssignmentStatus.SUBMITTED, picks)):
                self.step(lambda s: approve(s, actor=self.requester, now=self.now, assignment_ids=ids))
            elif how == "approve batch":
                with self.db.session_scope() as s:
                    batch = s.scalar(select(func.max(Assignment.batch_id)))
                if batch is not None:
                    self.step(lambda s: approve(s, actor=self.requester, now=self.now, batch_id=batch))
            elif how == "reject" and (ids := self._pick(AssignmentStatus.SUBMITTED, picks[:2])):
                self.step(lambda s: reject(s, actor=self.requester, now=self.now, assignment_ids=ids,
                                           feedback="Answers do not follow the guidelines."))
            elif how == "reverse rejection" and (ids := self._pick(AssignmentStatus.REJECTED, picks[:1])):
                self.step(lambda s: reverse_rejection(s, actor=self.requester, now=self.now, assignment_id=ids[0]))
            elif how == "reverse reward":
                with self.db.session_scope() as s:
                    txns = list(s.scalars(select(LedgerTransaction.id).where(
                        LedgerTransaction.kind.in_((TransactionKind.REWARD, TransactionKind.BONUS)))
                        .order_by(LedgerTransaction.id)))
                if txns:
                    self.step(lambda s: balances.reverse(s, transaction_id=txns[picks[0] % len(txns)], now=self.now,
                                                         reason="approved by mistake", actor_id=self.ops.id))

        @rule(what=st.sampled_from(["cycle", "top-ups", "settle"]))
        def jobs(self, what: str) -> None:
            """The payments cycle (auto-approval, top-ups, hold settlement), or one of its steps alone."""
            run = {"cycle": payments_cycle.run, "top-ups": pay_top_ups, "settle": settle_holds}[what]
            self.step(lambda s: run(s, now=self.now))

        @rule(pick=st.integers(0, 1000))
        def cancel(self, pick: int) -> None:
            with self.db.session_scope() as s:
                ids = list(s.scalars(select(Batch.id).where(Batch.project_id == self.project_id).order_by(Batch.id)))
            if ids:
                def go(s):
                    project = s.get(Project, self.project_id)
                    change_batch_status(s, project=project, batch_id=ids[pick % len(ids)], action="cancel",
                                        now=self.now)
                self.step(go)

        @rule(hours=st.sampled_from([1, 25, 80]))
        def time_passes(self, hours: int) -> None:
            self.now += dt.timedelta(hours=hours)

        @rule(minimum=st.integers(0, 40), fail=st.booleans())
        def payout(self, minimum: int, fail: bool) -> None:
            def go(s):
                batch, _ = payouts.create_batch(s, actor_id=self.ops.id, currency="USD", period_end=self.now,
                                                minimum_cents=minimum, now=self.now)
                payouts.approve(s, batch_id=batch.id, actor_id=self.ops.id, now=self.now)
                return batch.id
            batch_id = self.step(go)
            if batch_id is not None and fail:
                with self.db.session_scope() as s:
                    line = s.scalar(select(PayoutLine.id).where(PayoutLine.payout_batch_id == batch_id,
                                                                PayoutLine.status == PayoutLineStatus.APPROVED))
                if line is not None:
                    self.step(lambda s: payouts.mark_failed(s, batch_id=batch_id, line_id=line, reason="bounced",
                                                            now=self.now, actor_id=self.ops.id))

        @invariant()
        def books_balance(self) -> None:
            if not hasattr(self, "db"):
                return
            with self.db.session_scope() as s:
                assert ledger.check_books(s) == []
                report = reconcile(s)
                assert report["ok"], report["problems"]
                rewards = Counter(s.scalars(select(LedgerTransaction.assignment_id).where(
                    LedgerTransaction.kind == TransactionKind.REWARD)))
                assert not [a for a, n in rewards.items() if n > 1], "an assignment paid twice"
                approved = s.scalar(select(func.count()).select_from(Assignment)
                                    .where(Assignment.status == AssignmentStatus.APPROVED))
                assert s.scalar(select(func.count()).select_from(AssignmentPay)) == approved

    run_state_machine_as_test(Books, settings=settings(
        max_examples=30, stateful_step_count=40, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]))
