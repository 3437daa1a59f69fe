"""site certificates: the agents' mutual-TLS client certificates the hub's CA issued

Revision ID: 0012_site_certs
Revises: 0009_usage
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_site_certs"
down_revision = "0009_usage"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "site_certs",
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.String(length=128), nullable=False),
        sa.Column("issued_at", sa.Float(), nullable=False),
        sa.Column("not_after", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("serial"),
    )
    op.create_index("ix_site_certs_site_id", "site_certs", ["site_id"])


def downgrade() -> None:
    op.drop_index("ix_site_certs_site_id", table_name="site_certs")
    op.drop_table("site_certs")
