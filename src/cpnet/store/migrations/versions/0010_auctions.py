"""auctions: capacity requests, sealed bids, pools' bid rules, leases; attempts.lease_id

Revision ID: 0010_auctions
Revises: 0012_site_certs
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010_auctions"
down_revision = "0012_site_certs"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "auctions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("request", _JSON, nullable=False),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
        sa.Column("max_price", sa.BigInteger(), nullable=False),
        sa.Column("closes_at", sa.Float(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("lease_id", sa.String(length=64), nullable=True),
        sa.Column("award", _JSON, nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("closed_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("auctions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_auctions_org_id"), ["org_id"], unique=False)
        batch_op.create_index("ix_auctions_state_closes", ["state", "closes_at"], unique=False)
    op.create_table(
        "auction_bids",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("auction_id", sa.String(length=64), nullable=False),
        sa.Column("pool_id", sa.String(length=128), nullable=False),
        sa.Column("provider_org", sa.String(length=64), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("placed_at", sa.Float(), nullable=False),
        sa.Column("rule", sa.Boolean(), nullable=False),
        sa.Column("placed_by", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["auction_id"], ["auctions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("auction_id", "pool_id"),
    )
    with op.batch_alter_table("auction_bids", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_auction_bids_auction_id"), ["auction_id"], unique=False
        )
    op.create_table(
        "bid_rules",
        sa.Column("pool_id", sa.String(length=128), nullable=False),
        sa.Column("factor", sa.Float(), nullable=False),
        sa.Column("min_price", sa.BigInteger(), nullable=True),
        sa.Column("max_price", sa.BigInteger(), nullable=True),
        sa.Column("set_by", sa.String(length=64), nullable=False),
        sa.Column("set_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["pool_id"], ["pools.id"]),
        sa.PrimaryKeyConstraint("pool_id"),
    )
    op.create_table(
        "leases",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("auction_id", sa.String(length=64), nullable=False),
        sa.Column("pool_id", sa.String(length=128), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("provider_org", sa.String(length=64), nullable=False),
        sa.Column("cpu_cores", sa.Float(), nullable=False),
        sa.Column("ram_gb", sa.Float(), nullable=False),
        sa.Column("disk_gb", sa.Float(), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("fee_bps", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("charged", sa.BigInteger(), nullable=False),
        sa.Column("paid_to", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"]),
        sa.ForeignKeyConstraint(["pool_id"], ["pools.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("auction_id"),
    )
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_leases_org_id"), ["org_id"], unique=False)
        batch_op.create_index("ix_leases_pool_state", ["pool_id", "state"], unique=False)
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_column("lease_id")
    op.drop_table("leases")
    op.drop_table("bid_rules")
    op.drop_table("auction_bids")
    op.drop_table("auctions")
