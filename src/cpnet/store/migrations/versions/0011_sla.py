"""sla: pools' liveness transitions, SLA terms (append-only), evaluations, reputation

Revision ID: 0011_sla
Revises: 0015_task_secrets
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011_sla"
down_revision = "0015_task_secrets"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "pool_liveness",
        sa.Column("id", _SEQ, autoincrement=True, nullable=False),
        sa.Column("pool_id", sa.String(length=128), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_pool_liveness_pool_at", "pool_liveness", ["pool_id", "at"])
    op.create_table(
        "sla_terms",
        sa.Column("id", _SEQ, autoincrement=True, nullable=False),
        sa.Column("pool_id", sa.String(length=128), nullable=False),
        sa.Column("window_s", sa.Float(), nullable=False),
        sa.Column("credit_bps", sa.Integer(), nullable=False),
        sa.Column("availability", sa.Float(), nullable=True),
        sa.Column("max_queue_wait_s", sa.Float(), nullable=True),
        sa.Column("success_rate", sa.Float(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("set_by", sa.String(length=64), nullable=False),
        sa.Column("set_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["pool_id"], ["pools.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_sla_terms_pool", "sla_terms", ["pool_id", "id"])
    op.create_table(
        "sla_evaluations",
        sa.Column("id", _SEQ, autoincrement=True, nullable=False),
        sa.Column("pool_id", sa.String(length=128), nullable=False),
        sa.Column("terms_id", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.Float(), nullable=False),
        sa.Column("window_end", sa.Float(), nullable=False),
        sa.Column("breached", sa.Boolean(), nullable=False),
        sa.Column("evidence", _JSON, nullable=False),
        sa.Column("credits", _JSON, nullable=False),
        sa.Column("evaluated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("pool_id", "window_start"),
    )
    op.create_index("ix_sla_evaluations_pool_id", "sla_evaluations", ["pool_id"])
    op.create_table(
        "pool_reputation",
        sa.Column("pool_id", sa.String(length=128), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("evidence", _JSON, nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("pool_id"),
    )


def downgrade() -> None:
    op.drop_table("pool_reputation")
    op.drop_index("ix_sla_evaluations_pool_id", table_name="sla_evaluations")
    op.drop_table("sla_evaluations")
    op.drop_index("ix_sla_terms_pool", table_name="sla_terms")
    op.drop_table("sla_terms")
    op.drop_index("ix_pool_liveness_pool_at", table_name="pool_liveness")
    op.drop_table("pool_liveness")
