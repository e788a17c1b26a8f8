"""platforms: a platform's assignment (an MTurk assignmentId) tied to ours

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 17:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import base.db

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "platform_assignment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("external_task_id", sa.String(length=255), nullable=True),
        sa.Column("external_worker_id", sa.String(length=255), nullable=False),
        sa.Column("assignment_id", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.Integer(), nullable=False),
        sa.Column("created_at", base.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["assignment_id"], ["assignment.id"],
                                name=op.f("fk_platform_assignment_assignment_id_assignment"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["worker_id"], ["account.id"], name=op.f("fk_platform_assignment_worker_id_account"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_platform_assignment")),
        sa.UniqueConstraint("assignment_id", name=op.f("uq_platform_assignment_assignment_id")),
        sa.UniqueConstraint("platform", "external_id", name=op.f("uq_platform_assignment_platform_external_id")),
    )
    with op.batch_alter_table("platform_assignment") as batch:
        batch.create_index(batch.f("ix_platform_assignment_worker_id"), ["worker_id"], unique=False)


def downgrade() -> None:
    op.drop_table("platform_assignment")
