"""prices: pools' price books (append-only history) and binding quotes

Revision ID: 0006_prices
Revises: 0005_network
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006_prices"
down_revision = "0005_network"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "price_entries",
        sa.Column("id", _SEQ, autoincrement=True, nullable=False),
        sa.Column("pool_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("cpu_core_hour", sa.Float(), nullable=False),
        sa.Column("ram_gb_hour", sa.Float(), nullable=False),
        sa.Column("gpu_hour", sa.Float(), nullable=False),
        sa.Column("gpu_models", _JSON, nullable=False),
        sa.Column("scu_hour", _JSON, nullable=False),
        sa.Column("dynamic", _JSON, nullable=True),
        sa.Column("valid_from", sa.Float(), nullable=False),
        sa.Column("valid_until", sa.Float(), nullable=True),
        sa.Column("set_by", sa.String(length=64), nullable=False),
        sa.Column("set_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["pool_id"], ["pools.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("price_entries", schema=None) as batch_op:
        batch_op.create_index("ix_price_entries_pool_from", ["pool_id", "valid_from"], unique=False)
    op.create_table(
        "quotes",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("spec_hash", sa.String(length=64), nullable=False),
        sa.Column("spec", _JSON, nullable=False),
        sa.Column("objective", sa.String(length=16), nullable=False),
        sa.Column("options", _JSON, nullable=False),
        sa.Column("fee_bps", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("valid_until", sa.Float(), nullable=False),
        sa.Column("used_by_task", sa.String(length=64), nullable=True),
        sa.Column("used_option", sa.Integer(), nullable=True),
        sa.Column("used_at", sa.Float(), nullable=True),
        sa.Column("charge_cap", sa.Float(), nullable=True),
        sa.Column("overrun_rate", sa.Float(), nullable=True),
        sa.Column("overrun_unit", sa.String(length=16), nullable=True),
        sa.Column("currency", sa.String(length=8), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("used_by_task"),
    )
    with op.batch_alter_table("quotes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_quotes_org_id"), ["org_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("quotes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quotes_org_id"))
    op.drop_table("quotes")
    with op.batch_alter_table("price_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_price_entries_pool_from")
    op.drop_table("price_entries")
