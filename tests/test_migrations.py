"""Alembic: `upgrade head` on an empty database gives exactly the models' schema; `downgrade base` undoes it."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from base.db import Base, make_engine
from shell.cli import alembic_config


def test_upgrade_head_matches_the_models_and_downgrade_undoes_it(empty_database_url):
    cfg = alembic_config(empty_database_url)
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")
    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
            assert diff == [], f"models and migrations disagree: {diff}"
            assert set(inspect(conn).get_table_names()) >= set(Base.metadata.tables)
        command.downgrade(cfg, "base")
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()


def _migrated(url: str) -> tuple[Any, Any]:
    """The database at `url` migrated to head: (its Alembic config, a Database on it)."""
    from base.db import Database

    cfg = alembic_config(url)
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")
    return cfg, Database.from_url(url)


def test_stored_runs_learn_why_dawid_skene_stopped(empty_database_url):
    """Runs stored before the revision that records stop reasons get one from their counts: fewer iterations
    than allowed is converged. (The revision is found by its description, whatever number merging gives it.)"""
    from alembic.script import ScriptDirectory

    from aggregation.models import AggregationRun, RunStatus
    from base.clock import utcnow
    from base.identity import Role
    from tests.factories import project
    from workers.service import create_account

    cfg, database = _migrated(empty_database_url)
    try:
        with database.session_scope() as session:
            owner = create_account(session, role=Role.REQUESTER, email="m@example.com", now=utcnow())
            proj = project(session, owner, now=utcnow())
            for method, iterations, max_iter in (("ds", 12, 100), ("onecoin", 50, 50), ("mv", 0, 100)):
                session.add(AggregationRun(project_id=proj.id, requested_by_id=owner.id, method=method,
                                           params={"max_iter": max_iter}, status=RunStatus.SUCCEEDED,
                                           iterations=iterations))
            session.commit()
        revision = next(r for r in ScriptDirectory.from_config(cfg).walk_revisions()
                        if (r.doc or "").startswith("Aggregation runs record why Dawid–Skene stopped"))
        command.downgrade(cfg, revision.down_revision)
        command.upgrade(cfg, revision.revision)
        with database.engine.connect() as conn:
            reasons = conn.execute(text("SELECT method, stop_reason FROM aggregation_run ORDER BY id")).all()
        assert [tuple(r) for r in reasons] == [("ds", "converged"), ("onecoin", "max_iter"), ("mv", None)]
    finally:
        database.dispose()


def test_existing_gold_hits_are_pooled_with_their_slots(empty_database_url):
    """The gold migration on a database with gold: its HITs are pooled by shape and get their slots, those its
    live or done assignments hold marked so, the rest free; rows elsewhere survive the tables it rebuilds."""
    import io
    from decimal import Decimal

    from alembic.script import ScriptDirectory
    from sqlalchemy import func, select

    from base.clock import utcnow
    from base.identity import Role
    from market.catalogue.batches import publish_batch
    from market.catalogue.imports import import_items
    from market.catalogue.models import Assignment, GoldPool, HitSlot, Item, SlotState
    from market.engine import next_task
    from market.engine.next_task import next_assignment
    from market.engine.submit import submit
    from tests.factories import TEST_GOLD_KEY, jsonl, project
    from workers.service import create_account

    cfg, database = _migrated(empty_database_url)
    try:
        with database.session_scope() as session:
            now = utcnow()
            owner = create_account(session, role=Role.REQUESTER, email="g@example.com", now=now)
            proj = project(session, owner, now=now, items_per_hit=1, assignments_per_item=2, gold_rate=Decimal("0.1"))
            records = [{"external_id": f"r{i}", "data": {}} for i in range(6)]
            records += [{"external_id": f"g{i}", "data": {}, "gold": "pos"} for i in range(3)]
            import_items(session, project=proj, stream=io.BytesIO(jsonl(records)), fmt="jsonl", now=now)
            publish_batch(session, project_id=proj.id, account=owner, now=now)
            worker = create_account(session, role=Role.WORKER, username="wm", now=now)
            session.commit()
            next_task.is_gold_turn, real_turn = (lambda *a, **k: True), next_task.is_gold_turn
            try:
                done = next_assignment(session, gold_key=TEST_GOLD_KEY, worker=worker, now=now)
                submit(session, worker=worker, assignment_id=done.id, now=now,
                            answers=[{"item_id": i["id"], "answer": "pos"} for i in done.items])
                held = next_assignment(session, gold_key=TEST_GOLD_KEY, worker=worker, now=now)
                session.commit()  # the test is the unit of work here: what the migration reads must be stored
            finally:
                next_task.is_gold_turn = real_turn
            assert session.get(Assignment, held.id).is_gold
            before = session.execute(select(HitSlot.hit_id, HitSlot.state, HitSlot.assignment_id).where(
                HitSlot.gold_pool_id.is_not(None)).order_by(HitSlot.hit_id, HitSlot.slot_no)).all()
            items = session.scalar(select(func.count()).select_from(Item))
        revision = next(r for r in ScriptDirectory.from_config(cfg).walk_revisions()
                        if (r.doc or "").startswith("gold pools with slots"))
        command.downgrade(cfg, revision.down_revision)
        command.upgrade(cfg, "head")
        with database.session_scope() as session:
            [pool] = session.scalars(select(GoldPool)).all()
            assert (pool.items_per_hit, pool.assignments_per_item) == (1, 2)
            after = session.execute(select(HitSlot.hit_id, HitSlot.state, HitSlot.assignment_id).where(
                HitSlot.gold_pool_id == pool.id).order_by(HitSlot.hit_id, HitSlot.slot_no)).all()
            assert after == before and len(after) == 6
            assert {s for _, s, _ in after} == {SlotState.DONE, SlotState.LEASED, SlotState.FREE}
            assert session.scalar(select(func.count()).select_from(Item)) == items  # nothing cascaded away
    finally:
        database.dispose()
