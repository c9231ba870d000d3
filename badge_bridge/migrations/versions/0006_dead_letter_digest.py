"""dead letters keep a bounded excerpt: the payload's full size and SHA-256 beside it

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dead_letter") as batch:
        batch.add_column(sa.Column("payload_size", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("payload_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dead_letter") as batch:
        batch.drop_column("payload_sha256")
        batch.drop_column("payload_size")
