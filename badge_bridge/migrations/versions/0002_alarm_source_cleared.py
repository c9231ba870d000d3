"""alarms: source and cleared_at

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alarm") as batch:
        batch.add_column(sa.Column("source", sa.String(length=128), nullable=False, server_default=""))
        batch.add_column(sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alarm") as batch:
        batch.drop_column("cleared_at")
        batch.drop_column("source")
