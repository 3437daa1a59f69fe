"""attempt price: the price each attempt is charged at, fixed when it is placed (cpnet/market)

Revision ID: 0008_attempt_price
Revises: 0007_ledger
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008_attempt_price"
down_revision = "0007_ledger"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # NULL on attempts placed before this revision: they are charged the pool's declared price.
    op.add_column("attempts", sa.Column("price", _JSON, nullable=True))


def downgrade() -> None:
    op.drop_column("attempts", "price")
