"""task secrets: a task's secret env values, sealed with the hub's secrets key

Revision ID: 0015_task_secrets
Revises: 0010_auctions
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_task_secrets"
down_revision = "0010_auctions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_secrets",
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"]),
        sa.PrimaryKeyConstraint("task_id"),
    )


def downgrade() -> None:
    op.drop_table("task_secrets")
