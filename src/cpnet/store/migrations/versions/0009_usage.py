"""usage: sites' usage keys and every usage record received, as evidence (signed metering)

Revision ID: 0009_usage
Revises: 0008_attempt_price
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009_usage"
down_revision = "0008_attempt_price"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_ACCEPTED = sa.text("verdict = 'accepted'")


def upgrade() -> None:
    op.create_table(
        "site_keys",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("site_id", sa.String(length=128), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_seen_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"]),
        sa.PrimaryKeyConstraint("key_id"),
    )
    with op.batch_alter_table("site_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_site_keys_site_id"), ["site_id"], unique=False)
    op.create_table(
        "usage_records",
        sa.Column("id", _SEQ, autoincrement=True, nullable=False),
        sa.Column("site_id", sa.String(length=128), nullable=False),
        sa.Column("record_id", sa.String(length=160), nullable=True),
        sa.Column("attempt_id", sa.String(length=160), nullable=True),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("key_id", sa.String(length=160), nullable=True),
        sa.Column("verdict", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("field", sa.String(length=64), nullable=True),
        sa.Column("wall_s", sa.Float(), nullable=True),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("envelope", _JSON, nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.create_index(
            "ux_usage_records_accepted_record",
            ["record_id"],
            unique=True,
            sqlite_where=_ACCEPTED,
            postgresql_where=_ACCEPTED,
        )
        batch_op.create_index(
            "ux_usage_records_accepted_attempt",
            ["attempt_id"],
            unique=True,
            sqlite_where=_ACCEPTED,
            postgresql_where=_ACCEPTED,
        )
        batch_op.create_index("ix_usage_records_task", ["task_id"], unique=False)
        batch_op.create_index("ix_usage_records_site_at", ["site_id", "received_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_usage_records_digest"), ["digest"], unique=False)


def downgrade() -> None:
    op.drop_table("usage_records")
    op.drop_table("site_keys")
