"""areas can be marked restricted: the monthly review lists every entry into them by person

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("area") as batch:
        batch.add_column(sa.Column("restricted", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("area") as batch:
        batch.drop_column("restricted")
