"""partitions: site state shared by the whole site (keyed by fact, not by chain) and each partition's lease

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "partition_lease",
        sa.Column("partition", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("partition", name=op.f("pk_partition_lease")),
    )
    op.create_table(
        "site_state_shared",
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("partition", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_site_state_shared"),
    )
    # One fact per key: where several chains kept one (bridges on a shared subscription), the newest wins.
    op.execute(
        "INSERT INTO site_state_shared (key, value, event_id, partition, updated_at) "
        "SELECT s.key, s.value, s.event_id, s.chain_id, s.updated_at FROM site_state s "
        "WHERE NOT EXISTS (SELECT 1 FROM site_state t WHERE t.key = s.key AND "
        "(t.updated_at > s.updated_at OR (t.updated_at = s.updated_at AND t.chain_id > s.chain_id)))"
    )
    op.drop_table("site_state")
    op.rename_table("site_state_shared", "site_state")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE site_state RENAME CONSTRAINT pk_site_state_shared TO pk_site_state")


def downgrade() -> None:
    op.drop_table("partition_lease")
    op.create_table(
        "site_state_chained",
        sa.Column("chain_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "key", name="pk_site_state_chained"),
    )
    op.execute("INSERT INTO site_state_chained (chain_id, key, value, event_id, updated_at) "
               "SELECT partition, key, value, event_id, updated_at FROM site_state")
    op.drop_table("site_state")
    op.rename_table("site_state_chained", "site_state")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE site_state RENAME CONSTRAINT pk_site_state_chained TO pk_site_state")
