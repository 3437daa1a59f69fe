"""task events by time: the dashboard's flow chart reads the last 30 minutes of moves

Revision ID: 0017_event_time
Revises: 0016_trace_id
"""

from alembic import op

revision = "0017_event_time"
down_revision = "0016_trace_id"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # (at, to_state, from_state): the flow chart's query is answered from the index alone.
    op.create_index("ix_task_events_at", "task_events", ["at", "to_state", "from_state"])


def downgrade() -> None:
    op.drop_index("ix_task_events_at", table_name="task_events")
