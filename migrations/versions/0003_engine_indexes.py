"""engine indexes: free and leased slots apart, slot by assignment, one leased assignment per worker, open batches

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 22:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HAS_LEASE = sa.text("assignment_id IS NOT NULL")
_LEASED = sa.text("status = 'leased'")
_FREE_SLOT = sa.text("state = 'free'")
_LEASED_SLOT = sa.text("lease_expires_at IS NOT NULL")
_NOT_DONE = sa.text("state <> 'done'")
_OPEN = sa.text("status = 'open'")


def upgrade() -> None:
    with op.batch_alter_table("hit_slot", schema=None) as batch_op:
        batch_op.drop_index("ix_hit_slot_claim", postgresql_where=_NOT_DONE, sqlite_where=_NOT_DONE)
        batch_op.create_index("ix_hit_slot_free", ["batch_id", "neg_priority", "slot_no", "id"], unique=False,
                              postgresql_where=_FREE_SLOT, sqlite_where=_FREE_SLOT)
        batch_op.create_index("ix_hit_slot_lease_end", ["batch_id", "lease_expires_at"], unique=False,
                              postgresql_where=_LEASED_SLOT, sqlite_where=_LEASED_SLOT)
        batch_op.create_index("ix_hit_slot_assignment_id", ["assignment_id"], unique=False,
                              postgresql_where=_HAS_LEASE, sqlite_where=_HAS_LEASE)
    with op.batch_alter_table("assignment", schema=None) as batch_op:
        batch_op.create_index("uq_assignment_worker_leased", ["worker_id"], unique=True,
                              postgresql_where=_LEASED, sqlite_where=_LEASED)
    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.create_index("ix_batch_open", ["expires_at"], unique=False, postgresql_where=_OPEN,
                              sqlite_where=_OPEN)


def downgrade() -> None:
    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.drop_index("ix_batch_open", postgresql_where=_OPEN, sqlite_where=_OPEN)
    with op.batch_alter_table("assignment", schema=None) as batch_op:
        batch_op.drop_index("uq_assignment_worker_leased", postgresql_where=_LEASED, sqlite_where=_LEASED)
    with op.batch_alter_table("hit_slot", schema=None) as batch_op:
        batch_op.drop_index("ix_hit_slot_assignment_id", postgresql_where=_HAS_LEASE, sqlite_where=_HAS_LEASE)
        batch_op.drop_index("ix_hit_slot_lease_end", postgresql_where=_LEASED_SLOT, sqlite_where=_LEASED_SLOT)
        batch_op.drop_index("ix_hit_slot_free", postgresql_where=_FREE_SLOT, sqlite_where=_FREE_SLOT)
        batch_op.create_index("ix_hit_slot_claim", ["batch_id", "neg_priority", "slot_no", "id"], unique=False,
                              postgresql_where=_NOT_DONE, sqlite_where=_NOT_DONE)
