"""payments: the ledger (accounts, transactions, entries), escrow holds, assignment pay, payouts; review columns on
assignments; wage and fee terms on projects and batches

Ledger transactions and entries are immutable: triggers refuse UPDATE and DELETE on both (corrections are
reversing transactions).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 14:43:37
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import base.db

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ledger_account",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=120), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "requester_available",
                "requester_escrow",
                "worker_payable",
                "worker_paid_out",
                "platform_fees",
                "platform_funding",
                "external_platform",
                name="ledger_account_kind",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("platform", sa.String(length=40), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("nonnegative", sa.Boolean(), nullable=False),
        sa.Column("created_at", base.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("NOT nonnegative OR balance >= 0", name=op.f("ck_ledger_account_nonnegative_balance")),
        sa.ForeignKeyConstraint(["owner_id"], ["account.id"], name=op.f("fk_ledger_account_owner_id_account")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_account")),
        sa.UniqueConstraint("code", name=op.f("uq_ledger_account_code")),
    )
    with op.batch_alter_table("ledger_account", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_account_owner", ["owner_id", "kind"], unique=False)

    op.create_table(
        "payout_batch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("period_end", base.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("minimum_cents", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=40), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "draft",
                "approved",
                "paid",
                "cancelled",
                name="payout_batch_status",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("created_by_id", sa.Integer(), nullable=False),
        sa.Column("approved_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", base.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("approved_at", base.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("paid_at", base.db.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("minimum_cents >= 0", name=op.f("ck_payout_batch_payout_minimum_nonnegative")),
        sa.ForeignKeyConstraint(
            ["approved_by_id"], ["account.id"], name=op.f("fk_payout_batch_approved_by_id_account")
        ),
        sa.ForeignKeyConstraint(["created_by_id"], ["account.id"], name=op.f("fk_payout_batch_created_by_id_account")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payout_batch")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_payout_batch_idempotency_key")),
    )
    op.create_table(
        "hold",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("requester_id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column(
            "state",
            sa.Enum("open", "closed", name="hold_state", native_enum=False, create_constraint=True, length=20),
            nullable=False,
        ),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.Column("posted", sa.BigInteger(), nullable=False),
        sa.Column("released", sa.BigInteger(), nullable=False),
        sa.Column(
            "detail",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column("created_at", base.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("closed_at", base.db.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("held - posted - released >= 0", name=op.f("ck_hold_hold_not_overdrawn")),
        sa.CheckConstraint(
            "held >= 0 AND posted >= 0 AND released >= 0", name=op.f("ck_hold_hold_amounts_nonnegative")
        ),
        sa.ForeignKeyConstraint(["batch_id"], ["batch.id"], name=op.f("fk_hold_batch_id_batch")),
        sa.ForeignKeyConstraint(["requester_id"], ["account.id"], name=op.f("fk_hold_requester_id_account")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hold")),
        sa.UniqueConstraint("batch_id", name=op.f("uq_hold_batch_id")),
    )
    with op.batch_alter_table("hold", schema=None) as batch_op:
        batch_op.create_index("ix_hold_open", ["requester_id", "state"], unique=False)

    op.create_table(
        "ledger_transaction",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "funding",
                "hold",
                "release",
                "reward",
                "bonus",
                "payout",
                "reversal",
                name="ledger_transaction_kind",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reverses_id", sa.Integer(), nullable=True),
        sa.Column("requester_id", sa.Integer(), nullable=True),
        sa.Column("worker_id", sa.Integer(), nullable=True),
        sa.Column("project_id", sa.Integer(), nullable=True),
        sa.Column("batch_id", sa.Integer(), nullable=True),
        sa.Column("assignment_id", sa.Integer(), nullable=True),
        sa.Column("hold_id", sa.Integer(), nullable=True),
        sa.Column("payout_id", sa.Integer(), nullable=True),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "detail",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=True,
        ),
        sa.Column("created_at", base.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["actor_id"], ["account.id"], name=op.f("fk_ledger_transaction_actor_id_account")),
        sa.ForeignKeyConstraint(["hold_id"], ["hold.id"], name=op.f("fk_ledger_transaction_hold_id_hold")),
        sa.ForeignKeyConstraint(
            ["requester_id"], ["account.id"], name=op.f("fk_ledger_transaction_requester_id_account")
        ),
        sa.ForeignKeyConstraint(
            ["reverses_id"],
            ["ledger_transaction.id"],
            name=op.f("fk_ledger_transaction_reverses_id_ledger_transaction"),
        ),
        sa.ForeignKeyConstraint(["worker_id"], ["account.id"], name=op.f("fk_ledger_transaction_worker_id_account")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_transaction")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_ledger_transaction_idempotency_key")),
        sa.UniqueConstraint("reverses_id", name=op.f("uq_ledger_transaction_reverses_id")),
    )
    with op.batch_alter_table("ledger_transaction", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ledger_transaction_assignment_id"), ["assignment_id"], unique=False)
        batch_op.create_index("ix_ledger_transaction_batch", ["batch_id", "kind"], unique=False)
        batch_op.create_index("ix_ledger_transaction_requester", ["requester_id", "created_at"], unique=False)
        batch_op.create_index("ix_ledger_transaction_worker", ["worker_id", "created_at"], unique=False)

    op.create_table(
        "assignment_pay",
        sa.Column("assignment_id", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reward_cents", sa.Integer(), nullable=False),
        sa.Column("reward_transaction_id", sa.Integer(), nullable=True),
        sa.Column("top_up_cents", sa.Integer(), nullable=True),
        sa.Column("top_up_transaction_id", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("approved_at", base.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["assignment_id"], ["assignment.id"], name=op.f("fk_assignment_pay_assignment_id_assignment")
        ),
        sa.ForeignKeyConstraint(["batch_id"], ["batch.id"], name=op.f("fk_assignment_pay_batch_id_batch")),
        sa.ForeignKeyConstraint(
            ["reward_transaction_id"],
            ["ledger_transaction.id"],
            name=op.f("fk_assignment_pay_reward_transaction_id_ledger_transaction"),
        ),
        sa.ForeignKeyConstraint(
            ["top_up_transaction_id"],
            ["ledger_transaction.id"],
            name=op.f("fk_assignment_pay_top_up_transaction_id_ledger_transaction"),
        ),
        sa.ForeignKeyConstraint(["worker_id"], ["account.id"], name=op.f("fk_assignment_pay_worker_id_account")),
        sa.PrimaryKeyConstraint("assignment_id", name=op.f("pk_assignment_pay")),
    )
    with op.batch_alter_table("assignment_pay", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_assignment_pay_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_assignment_pay_worker_id"), ["worker_id"], unique=False)

    op.create_table(
        "ledger_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("transaction_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_ledger_entry_amount_nonzero")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["ledger_account.id"], name=op.f("fk_ledger_entry_account_id_ledger_account")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transaction.id"],
            name=op.f("fk_ledger_entry_transaction_id_ledger_transaction"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entry")),
    )
    with op.batch_alter_table("ledger_entry", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_entry_account", ["account_id", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_ledger_entry_transaction_id"), ["transaction_id"], unique=False)

    op.create_table(
        "payout_line",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("payout_batch_id", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "held",
                "approved",
                "paid",
                "failed",
                name="payout_line_status",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("hold_reason", sa.Text(), nullable=True),
        sa.Column("transaction_id", sa.Integer(), nullable=True),
        sa.Column("external_reference", sa.String(length=200), nullable=True),
        sa.Column("paid_at", base.db.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount_cents > 0", name=op.f("ck_payout_line_payout_amount_positive")),
        sa.ForeignKeyConstraint(
            ["payout_batch_id"], ["payout_batch.id"], name=op.f("fk_payout_line_payout_batch_id_payout_batch")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"], ["ledger_transaction.id"], name=op.f("fk_payout_line_transaction_id_ledger_transaction")
        ),
        sa.ForeignKeyConstraint(["worker_id"], ["account.id"], name=op.f("fk_payout_line_worker_id_account")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payout_line")),
        sa.UniqueConstraint("payout_batch_id", "worker_id", name=op.f("uq_payout_line_payout_batch_id_worker_id")),
    )
    with op.batch_alter_table("payout_line", schema=None) as batch_op:
        batch_op.create_index("ix_payout_line_worker", ["worker_id", "status"], unique=False)

    with op.batch_alter_table("assignment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reviewed_at", base.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("reviewed_by_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("review_feedback", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("rejection_reversed_at", base.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(
            "ix_assignment_awaiting_review",
            ["batch_id", "submitted_at"],
            unique=False,
            postgresql_where=sa.text("status = 'submitted'"),
            sqlite_where=sa.text("status = 'submitted'"),
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_assignment_reviewed_by_id_account"), "account", ["reviewed_by_id"], ["id"]
        )
        batch_op.create_check_constraint(
            "rejection_has_feedback", "status <> 'rejected' OR review_feedback IS NOT NULL"
        )

    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.add_column(sa.Column("estimated_seconds", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("measured_seconds", sa.Numeric(precision=10, scale=3), nullable=True))
        batch_op.add_column(
            sa.Column("target_wage_cents_per_hour", sa.Integer(), nullable=False, server_default="1500")
        )
        batch_op.add_column(sa.Column("wage_floor_cents_per_hour", sa.Integer(), nullable=False, server_default="800"))
        batch_op.add_column(sa.Column("auto_top_up", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column("fee_model", sa.String(length=20), nullable=False, server_default="platform"))
        batch_op.add_column(sa.Column("fee_rate", sa.Numeric(precision=5, scale=4), nullable=False, server_default="0"))

    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.add_column(sa.Column("estimated_seconds", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("target_wage_cents_per_hour", sa.Integer(), nullable=False, server_default="1500")
        )
        batch_op.add_column(sa.Column("auto_top_up", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column("reject_gold_misses", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_check_constraint("target_wage_nonnegative", "target_wage_cents_per_hour >= 0")
        batch_op.create_check_constraint("estimate_positive", "estimated_seconds IS NULL OR estimated_seconds > 0")

    _immutable("ledger_transaction")
    _immutable("ledger_entry")


def _immutable(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""
            CREATE OR REPLACE FUNCTION {table}_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION '{table} rows are immutable: post a reversing transaction'; END $$""")
        op.execute(
            f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {table}_immutable()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} BEGIN "
                f"SELECT RAISE(ABORT, '{table} rows are immutable: post a reversing transaction'); END"
            )


def _mutable(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {table}_immutable()")
    else:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")


def downgrade() -> None:
    _mutable("ledger_entry")
    _mutable("ledger_transaction")
    with op.batch_alter_table("project", schema=None) as batch_op:
        batch_op.drop_constraint("estimate_positive", type_="check")
        batch_op.drop_constraint("target_wage_nonnegative", type_="check")
        batch_op.drop_column("reject_gold_misses")
        batch_op.drop_column("auto_top_up")
        batch_op.drop_column("target_wage_cents_per_hour")
        batch_op.drop_column("estimated_seconds")

    with op.batch_alter_table("batch", schema=None) as batch_op:
        batch_op.drop_column("measured_seconds")
        batch_op.drop_column("fee_rate")
        batch_op.drop_column("fee_model")
        batch_op.drop_column("auto_top_up")
        batch_op.drop_column("wage_floor_cents_per_hour")
        batch_op.drop_column("target_wage_cents_per_hour")
        batch_op.drop_column("estimated_seconds")

    with op.batch_alter_table("assignment", schema=None) as batch_op:
        batch_op.drop_constraint("rejection_has_feedback", type_="check")
        batch_op.drop_constraint(batch_op.f("fk_assignment_reviewed_by_id_account"), type_="foreignkey")
        batch_op.drop_index(
            "ix_assignment_awaiting_review",
            postgresql_where=sa.text("status = 'submitted'"),
            sqlite_where=sa.text("status = 'submitted'"),
        )
        batch_op.drop_column("rejection_reversed_at")
        batch_op.drop_column("review_feedback")
        batch_op.drop_column("reviewed_by_id")
        batch_op.drop_column("reviewed_at")

    with op.batch_alter_table("payout_line", schema=None) as batch_op:
        batch_op.drop_index("ix_payout_line_worker")

    op.drop_table("payout_line")
    with op.batch_alter_table("ledger_entry", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_entry_transaction_id"))
        batch_op.drop_index("ix_ledger_entry_account")

    op.drop_table("ledger_entry")
    with op.batch_alter_table("assignment_pay", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_assignment_pay_worker_id"))
        batch_op.drop_index(batch_op.f("ix_assignment_pay_batch_id"))

    op.drop_table("assignment_pay")
    with op.batch_alter_table("ledger_transaction", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_transaction_worker")
        batch_op.drop_index("ix_ledger_transaction_requester")
        batch_op.drop_index("ix_ledger_transaction_batch")
        batch_op.drop_index(batch_op.f("ix_ledger_transaction_assignment_id"))

    op.drop_table("ledger_transaction")
    with op.batch_alter_table("hold", schema=None) as batch_op:
        batch_op.drop_index("ix_hold_open")

    op.drop_table("hold")
    op.drop_table("payout_batch")
    with op.batch_alter_table("ledger_account", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_account_owner")

    op.drop_table("ledger_account")
