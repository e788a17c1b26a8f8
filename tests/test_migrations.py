"""Alembic: `upgrade head` on an empty database gives exactly the models' schema; `downgrade base` undoes it."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from market.cli import alembic_config
from market.db import Base, make_engine


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


def test_stored_runs_learn_why_dawid_skene_stopped(empty_database_url):
    """Runs stored before the revision that records stop reasons get one from their counts: fewer iterations
    than allowed is converged. (The revision is found by its description, whatever number merging gives it.)"""
    from alembic.script import ScriptDirectory

    from aggregation.models import AggregationRun, RunStatus
    from market.db import Database, utcnow
    from tests.factories import project
    from workers.models import Role
    from workers.service import create_account

    cfg = alembic_config(empty_database_url)
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")
    database = Database.from_url(empty_database_url)
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
