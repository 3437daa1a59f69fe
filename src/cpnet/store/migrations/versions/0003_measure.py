"""measure: a pool's last probe report, its capacity vector and SCU rates

Revision ID: 0003_measure
Revises: 0002_staging
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_measure"
down_revision = "0002_staging"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("pools", schema=None) as batch_op:
        batch_op.add_column(sa.Column("probe", _JSON, nullable=True))
        batch_op.add_column(sa.Column("capacity", _JSON, nullable=True))
        batch_op.add_column(sa.Column("scu", _JSON, nullable=True))
        batch_op.add_column(sa.Column("measure_requested", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pools", schema=None) as batch_op:
        batch_op.drop_column("measure_requested")
        batch_op.drop_column("scu")
        batch_op.drop_column("capacity")
        batch_op.drop_column("probe")
