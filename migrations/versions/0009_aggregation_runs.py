"""Aggregation runs: method, parameters, status, and per-item labels and per-worker estimates.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 06:37:02.534989
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import base.db

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "aggregation_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("requested_by_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("params", base.db.JSONDoc, nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "running",
                "succeeded",
                "failed",
                name="run_status",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", base.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", base.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", base.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("classes", base.db.JSONDoc, nullable=True),
        sa.Column("answers", sa.Integer(), nullable=True),
        sa.Column("items", sa.Integer(), nullable=True),
        sa.Column("workers", sa.Integer(), nullable=True),
        sa.Column("gold_items", sa.Integer(), nullable=True),
        sa.Column("gold_accuracy", sa.Float(), nullable=True),
        sa.Column("iterations", sa.Integer(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("priors", base.db.JSONDoc, nullable=True),
        sa.CheckConstraint(
            "method IN ('mv', 'wmv', 'ds', 'ds-gold', 'onecoin')", name=op.f("ck_aggregation_run_method_known")
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_aggregation_run_project_id_project"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["requested_by_id"], ["account.id"], name=op.f("fk_aggregation_run_requested_by_id_account")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aggregation_run")),
        sa.UniqueConstraint(
            "project_id", "idempotency_key", name=op.f("uq_aggregation_run_project_id_idempotency_key")
        ),
    )
    with op.batch_alter_table("aggregation_run", schema=None) as batch_op:
        batch_op.create_index("ix_aggregation_run_project", ["project_id", "id"], unique=False)

    op.create_table(
        "aggregation_worker",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.Integer(), nullable=False),
        sa.Column("answers", sa.Integer(), nullable=False),
        sa.Column("accuracy", sa.Float(), nullable=False),
        sa.Column("confusion", base.db.JSONDoc, nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["aggregation_run.id"],
            name=op.f("fk_aggregation_worker_run_id_aggregation_run"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["worker_id"], ["account.id"], name=op.f("fk_aggregation_worker_worker_id_account")),
        sa.PrimaryKeyConstraint("run_id", "worker_id", name=op.f("pk_aggregation_worker")),
    )
    op.create_table(
        "aggregated_label",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.Integer(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("answers", sa.Integer(), nullable=False),
        sa.Column("is_gold", sa.Boolean(), nullable=False),
        sa.Column("tie", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["item.id"], name=op.f("fk_aggregated_label_item_id_item"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["aggregation_run.id"],
            name=op.f("fk_aggregated_label_run_id_aggregation_run"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "item_id", name=op.f("pk_aggregated_label")),
    )


def downgrade() -> None:
    op.drop_table("aggregated_label")
    op.drop_table("aggregation_worker")
    with op.batch_alter_table("aggregation_run", schema=None) as batch_op:
        batch_op.drop_index("ix_aggregation_run_project")

    op.drop_table("aggregation_run")
