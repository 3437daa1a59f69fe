"""network: probe samples agents report, and links operators declare

Revision ID: 0005_network
Revises: 0004_stageprog
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_network"
down_revision = "0004_stageprog"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "net_samples",
        sa.Column("id", _SEQ, autoincrement=True, nullable=False),
        sa.Column("src", sa.String(length=320), nullable=False),
        sa.Column("dst", sa.String(length=320), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("rtt_ms", sa.Float(), nullable=True),
        sa.Column("mbps", sa.Float(), nullable=True),
        sa.Column("site_id", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("net_samples", schema=None) as batch_op:
        batch_op.create_index("ix_net_samples_pair_at", ["src", "dst", "at"], unique=False)
        batch_op.create_index(batch_op.f("ix_net_samples_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_net_samples_site_id"), ["site_id"], unique=False)
    op.create_table(
        "net_links",
        sa.Column("a", sa.String(length=320), nullable=False),
        sa.Column("b", sa.String(length=320), nullable=False),
        sa.Column("rtt_ms", sa.Float(), nullable=True),
        sa.Column("mbps", sa.Float(), nullable=True),
        sa.Column("egress_per_gb", sa.Float(), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("set_by", sa.String(length=64), nullable=False),
        sa.Column("set_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("a", "b"),
    )


def downgrade() -> None:
    op.drop_table("net_links")
    with op.batch_alter_table("net_samples", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_net_samples_site_id"))
        batch_op.drop_index(batch_op.f("ix_net_samples_at"))
        batch_op.drop_index("ix_net_samples_pair_at")
    op.drop_table("net_samples")
