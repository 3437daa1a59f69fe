"""trace ids: the id of the request that created a task, kept with it (telemetry/logs.py)

Revision ID: 0016_trace_id
Revises: 0013_audit
"""

import sqlalchemy as sa
from alembic import op

revision = "0016_trace_id"
down_revision = "0013_audit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as t:
        t.add_column(sa.Column("trace_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as t:
        t.drop_column("trace_id")
