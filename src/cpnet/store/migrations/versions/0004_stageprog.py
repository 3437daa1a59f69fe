"""stageprog: attempts' latest staging progress, and per-transfer records of finished attempts

Revision ID: 0004_stageprog
Revises: 0003_measure
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_stageprog"
down_revision = "0003_measure"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("progress", _JSON, nullable=True))
        batch_op.add_column(sa.Column("transfers_omitted", sa.Integer(), nullable=True))
    op.create_table(
        "attempt_transfers",
        sa.Column("id", _SEQ, autoincrement=True, nullable=False),
        sa.Column("attempt_id", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.String(length=128), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("sha256_verified", sa.Boolean(), nullable=False),
        sa.Column("resumed_from", sa.BigInteger(), nullable=False),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["attempt_id"], ["attempts.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("attempt_id", "n"),
    )
    with op.batch_alter_table("attempt_transfers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_attempt_transfers_attempt_id"), ["attempt_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_attempt_transfers_task_id"), ["task_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_attempt_transfers_site_id"), ["site_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("attempt_transfers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attempt_transfers_site_id"))
        batch_op.drop_index(batch_op.f("ix_attempt_transfers_task_id"))
        batch_op.drop_index(batch_op.f("ix_attempt_transfers_attempt_id"))
    op.drop_table("attempt_transfers")
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_column("transfers_omitted")
        batch_op.drop_column("progress")
