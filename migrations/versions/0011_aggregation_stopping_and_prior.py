"""Aggregation runs record why Dawid–Skene stopped and its objective then.

Runs stored before get their reason from their counts: a run that used fewer iterations than it was allowed
converged.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import base.db

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ITERATIVE = ("ds", "ds-gold", "onecoin")


def upgrade() -> None:
    # Plain ALTER TABLE, never batch mode: on SQLite that rebuilds the table, and dropping the old one would
    # cascade to every stored label.
    op.add_column("aggregation_run", sa.Column("stop_reason", sa.String(length=16), nullable=True))
    op.add_column("aggregation_run", sa.Column("log_likelihood", sa.Float(), nullable=True))
    runs = sa.table("aggregation_run", sa.column("id", sa.Integer), sa.column("method", sa.String),
                    sa.column("params", base.db.JSONDoc), sa.column("iterations", sa.Integer),
                    sa.column("stop_reason", sa.String))
    conn = op.get_bind()
    done = conn.execute(sa.select(runs.c.id, runs.c.params, runs.c.iterations).where(
        runs.c.method.in_(ITERATIVE), runs.c.iterations.is_not(None))).all()
    for run_id, params, iterations in done:
        reason = "converged" if iterations < int((params or {}).get("max_iter", 100)) else "max_iter"
        conn.execute(sa.update(runs).where(runs.c.id == run_id).values(stop_reason=reason))


def downgrade() -> None:
    op.drop_column("aggregation_run", "log_likelihood")  # SQLite 3.35+ drops columns in place
    op.drop_column("aggregation_run", "stop_reason")
