"""gold pools with slots, stream positions, the accuracy judgement's settings and figures, new flag reasons

Gold HITs move into pools of one shape (items per HIT, assignments per item) and get slots like real HITs, so a
gold item is never seen by more workers than a real one. Existing gold HITs are pooled by their shape; each gets
its `max_assignments` slots, those its live or done assignments hold marked so (more slots where more workers had
it before this change: the past is kept, the cap applies from now on).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 09:29:27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import base.db

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_REASONS = ("GOLD_BELOW_THRESHOLD", "FAST_ANSWERS", "LOW_AGREEMENT", "GOLD_CONTESTED", "MANUAL")
_NEW_REASONS = ("GOLD_BELOW_THRESHOLD", "LOW_AGREEMENT", "FAST_ANSWERS", "SAME_LABEL", "FREQUENT_RETURNS",
                "GOLD_CONTESTED", "MANUAL")


def _reasons(values: tuple[str, ...]) -> str:
    return "reason IN (" + ", ".join(f"'{v}'" for v in values) + ")"


# Existing gold HITs: one pool per (project, size, redundancy), then their slots. A gold HIT's active assignments
# (leased, submitted, approved, rejected) take its first slots in assignment order; the rest are free.
_POOLS = """
    INSERT INTO gold_pool (project_id, items_per_hit, assignments_per_item, created_at)
    SELECT DISTINCT project_id, item_count, max_assignments, CURRENT_TIMESTAMP FROM hit WHERE is_gold"""
_POOL_HITS = """
    UPDATE hit SET gold_pool_id = (
        SELECT p.id FROM gold_pool p WHERE p.project_id = hit.project_id AND p.items_per_hit = hit.item_count
        AND p.assignments_per_item = hit.max_assignments)
    WHERE is_gold"""
_TAKEN_SLOTS = """
    INSERT INTO hit_slot (hit_id, gold_pool_id, slot_no, neg_priority, state, assignment_id, lease_expires_at)
    SELECT a.hit_id, h.gold_pool_id, a.n - 1, 0, CASE WHEN a.status = 'leased' THEN 'leased' ELSE 'done' END, a.id,
           CASE WHEN a.status = 'leased' THEN a.expires_at END
    FROM (SELECT id, hit_id, status, expires_at, row_number() OVER (PARTITION BY hit_id ORDER BY id) AS n
          FROM assignment WHERE is_gold AND status IN ('leased', 'submitted', 'approved', 'rejected')) AS a
    JOIN hit AS h ON h.id = a.hit_id"""
_FREE_SLOTS = """
    WITH RECURSIVE n(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM n WHERE k + 1 < 50)
    INSERT INTO hit_slot (hit_id, gold_pool_id, slot_no, neg_priority, state)
    SELECT h.id, h.gold_pool_id, n.k, 0, 'free' FROM hit AS h JOIN n ON n.k < h.max_assignments
    WHERE h.is_gold AND n.k >= (SELECT count(*) FROM hit_slot AS s WHERE s.hit_id = h.id)"""


def upgrade() -> None:
    op.create_table(
        "gold_pool",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("items_per_hit", sa.Integer(), nullable=False),
        sa.Column("assignments_per_item", sa.Integer(), nullable=False),
        sa.Column("created_at", base.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"], name=op.f("fk_gold_pool_project_id_project"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gold_pool")),
        sa.UniqueConstraint("project_id", "items_per_hit", "assignments_per_item",
                            name=op.f("uq_gold_pool_project_id_items_per_hit_assignments_per_item")),
    )
    with op.batch_alter_table("assignment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stream_position", sa.Integer(), nullable=True))
        batch_op.drop_index("uq_assignment_gold_worker", postgresql_where=sa.text("is_gold"),
                            sqlite_where=sa.text("is_gold"))
        batch_op.create_index("ix_assignment_hit_worker", ["hit_id", "worker_id"], unique=False)

    with op.batch_alter_table("hit", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gold_pool_id", sa.Integer(), nullable=True))
        batch_op.drop_index("ix_hit_gold", postgresql_where=sa.text("is_gold"), sqlite_where=sa.text("is_gold"))
        batch_op.create_index("ix_hit_gold_pool", ["gold_pool_id", "gold_rank"], unique=False,
                              postgresql_where=sa.text("is_gold"), sqlite_where=sa.text("is_gold"))
        batch_op.create_foreign_key(batch_op.f("fk_hit_gold_pool_id_gold_pool"), "gold_pool", ["gold_pool_id"],
                                    ["id"], ondelete="CASCADE")

    with op.batch_alter_table("hit_slot", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gold_pool_id", sa.Integer(), nullable=True))
        batch_op.alter_column("batch_id", existing_type=sa.INTEGER(), nullable=True)
        batch_op.create_index("ix_hit_slot_gold_free", ["gold_pool_id", "neg_priority", "slot_no", "id"],
                              unique=False, postgresql_where=sa.text("state = 'free'"),
                              sqlite_where=sa.text("state = 'free'"))
        batch_op.create_index("ix_hit_slot_gold_lease_end", ["gold_pool_id", "lease_expires_at"], unique=False,
                              postgresql_where=sa.text("lease_expires_at IS NOT NULL"),
                              sqlite_where=sa.text("lease_expires_at IS NOT NULL"))
        batch_op.create_foreign_key(batch_op.f("fk_hit_slot_gold_pool_id_gold_pool"), "gold_pool",
                                    ["gold_pool_id"], ["id"], ondelete="CASCADE")

    op.execute(_POOLS)
    op.execute(_POOL_HITS)
    op.execute(_TAKEN_SLOTS)
    op.execute(_FREE_SLOTS)
    with op.batch_alter_table("hit_slot", schema=None) as batch_op:
        batch_op.create_check_constraint(op.f("ck_hit_slot_one_queue"), "(batch_id IS NULL) <> (gold_pool_id IS NULL)")

    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_project_min_gold_answers_positive"), type_="check")
        batch_op.alter_column("min_gold_answers", new_column_name="min_judged_answers", existing_type=sa.Integer(),
                              existing_nullable=False, existing_server_default="10")
        batch_op.add_column(sa.Column("flag_confidence", sa.Numeric(precision=4, scale=3), nullable=False,
                                      server_default="0.90"))
        batch_op.create_check_constraint(op.f("ck_project_min_judged_answers_positive"), "min_judged_answers >= 1")
        batch_op.create_check_constraint(op.f("ck_project_flag_confidence_range"),
                                         "flag_confidence >= 0.5 AND flag_confidence <= action_confidence")

    with op.batch_alter_table("worker_stats", schema=None) as batch_op:
        for name in ("model_accuracy", "model_low", "model_high", "p_below"):
            batch_op.add_column(sa.Column(name, sa.Float(), nullable=True))
        for name in ("judged_answers", "leases", "given_back"):
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))

    with op.batch_alter_table("worker_flag", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_worker_flag_flag_reason"), type_="check")
        batch_op.create_check_constraint(op.f("ck_worker_flag_flag_reason"), _reasons(_NEW_REASONS))


def downgrade() -> None:
    with op.batch_alter_table("worker_flag", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_worker_flag_flag_reason"), type_="check")
        batch_op.create_check_constraint(op.f("ck_worker_flag_flag_reason"), _reasons(_OLD_REASONS))

    with op.batch_alter_table("worker_stats", schema=None) as batch_op:
        for name in ("given_back", "leases", "judged_answers", "p_below", "model_high", "model_low",
                     "model_accuracy"):
            batch_op.drop_column(name)

    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_project_flag_confidence_range"), type_="check")
        batch_op.drop_constraint(op.f("ck_project_min_judged_answers_positive"), type_="check")
        batch_op.drop_column("flag_confidence")
        batch_op.alter_column("min_judged_answers", new_column_name="min_gold_answers", existing_type=sa.Integer(),
                              existing_nullable=False, existing_server_default="10")
        batch_op.create_check_constraint(op.f("ck_project_min_gold_answers_positive"), "min_gold_answers >= 1")

    op.execute("DELETE FROM hit_slot WHERE gold_pool_id IS NOT NULL")
    with op.batch_alter_table("hit_slot", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_hit_slot_one_queue"), type_="check")
        batch_op.drop_constraint(batch_op.f("fk_hit_slot_gold_pool_id_gold_pool"), type_="foreignkey")
        batch_op.drop_index("ix_hit_slot_gold_lease_end", postgresql_where=sa.text("lease_expires_at IS NOT NULL"),
                            sqlite_where=sa.text("lease_expires_at IS NOT NULL"))
        batch_op.drop_index("ix_hit_slot_gold_free", postgresql_where=sa.text("state = 'free'"),
                            sqlite_where=sa.text("state = 'free'"))
        batch_op.alter_column("batch_id", existing_type=sa.INTEGER(), nullable=False)
        batch_op.drop_column("gold_pool_id")

    with op.batch_alter_table("hit", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_hit_gold_pool_id_gold_pool"), type_="foreignkey")
        batch_op.drop_index("ix_hit_gold_pool", postgresql_where=sa.text("is_gold"), sqlite_where=sa.text("is_gold"))
        batch_op.create_index("ix_hit_gold", ["project_id", "item_count", "gold_rank"], unique=False,
                              postgresql_where=sa.text("is_gold"), sqlite_where=sa.text("is_gold"))
        batch_op.drop_column("gold_pool_id")

    with op.batch_alter_table("assignment", schema=None) as batch_op:
        batch_op.drop_index("ix_assignment_hit_worker")
        batch_op.create_index("uq_assignment_gold_worker", ["hit_id", "worker_id"], unique=True,
                              postgresql_where=sa.text("is_gold"), sqlite_where=sa.text("is_gold"))
        batch_op.drop_column("stream_position")

    op.drop_table("gold_pool")
