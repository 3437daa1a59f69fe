"""blob grants: which organisations may read a blob of the hub's blob store

Revision ID: 0002_staging
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_staging"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blob_grants",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", "org_id"),
    )


def downgrade() -> None:
    op.drop_table("blob_grants")
