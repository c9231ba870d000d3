"""alarms keep the acknowledgement comment and the resolution apart, with who resolved

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alarm") as batch:
        batch.add_column(sa.Column("resolution", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("resolved_by", sa.String(64), nullable=True))
        batch.create_index("ix_alarm_state", ["state"])


def downgrade() -> None:
    with op.batch_alter_table("alarm") as batch:
        batch.drop_index("ix_alarm_state")
        batch.drop_column("resolved_by")
        batch.drop_column("resolution")
