"""Alembic: `upgrade head` on an empty database gives exactly the models' schema; `downgrade base` undoes it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from market.cli import alembic_config
from market.db import Base, make_engine

DATABASE_URL = os.environ.get("CROWDMARKET_DATABASE_URL")


@pytest.fixture
def empty_database_url(tmp_path) -> Iterator[str]:
    """A brand-new database on the backend under test."""
    if not DATABASE_URL:
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    name = f"cm_migrate_{uuid.uuid4().hex[:8]}"
    admin = create_engine(DATABASE_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


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
