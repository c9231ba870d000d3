"""audit entries: person column and search indexes for the console

Revision ID: 0003
Revises: 0002

``person_id`` is copied by the writer from the subject (it is not hashed: the subject is, and verify checks
the two agree), so the console can find a person's entries through an index. Entries written before this
migration have none; the console falls back to matching the subject text for those.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_entry", sa.Column("person_id", sa.Integer(), nullable=True))
    op.create_index("ix_audit_entry_person_ts", "audit_entry", ["person_id", "ts_us"])
    op.create_index("ix_audit_entry_kind_ts", "audit_entry", ["kind", "ts_us"])
    op.create_index("ix_audit_entry_ts_id", "audit_entry", ["ts_us", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_entry_ts_id", "audit_entry")
    op.drop_index("ix_audit_entry_kind_ts", "audit_entry")
    op.drop_index("ix_audit_entry_person_ts", "audit_entry")
    op.drop_column("audit_entry", "person_id")
