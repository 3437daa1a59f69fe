"""quotas: organisations' quotas (queued tasks, cores, GPUs) and what each task asks

Revision ID: 0014_quotas
Revises: 0011_sla
"""

import sqlalchemy as sa
from alembic import op

revision = "0014_quotas"
down_revision = "0011_sla"
branch_labels = None
depends_on = None

_TERMINAL = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")


def upgrade() -> None:
    op.create_table(
        "org_quotas",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("max_queued", sa.Integer(), nullable=True),
        sa.Column("max_cores", sa.Float(), nullable=True),
        sa.Column("max_gpus", sa.Integer(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"]),
        sa.PrimaryKeyConstraint("org_id"),
    )
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("cpu_cores", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("gpus", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_tasks_org_state", "tasks", ["org_id", "state"])
    # Unfinished tasks count against quotas: copy what they ask from their specs (finished ones
    # never count, so they keep 0).
    conn = op.get_bind()
    tasks = sa.table(
        "tasks",
        sa.column("id", sa.String),
        sa.column("state", sa.String),
        sa.column("spec", sa.JSON),
        sa.column("cpu_cores", sa.Float),
        sa.column("gpus", sa.Integer),
    )
    rows = conn.execute(
        sa.select(tasks.c.id, tasks.c.spec).where(tasks.c.state.notin_(_TERMINAL))
    ).all()
    for task_id, spec in rows:
        resources = (spec or {}).get("resources") or {}
        conn.execute(
            tasks.update()
            .where(tasks.c.id == task_id)
            .values(
                cpu_cores=float(resources.get("cpu_cores", 1.0)),
                gpus=int(resources.get("gpus", 0)),
            )
        )


def downgrade() -> None:
    op.drop_index("ix_tasks_org_state", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("gpus")
        batch.drop_column("cpu_cores")
    op.drop_table("org_quotas")
