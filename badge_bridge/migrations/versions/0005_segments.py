"""sealed segments (signed Merkle roots per chain and day) and retention pruning

The audit_entry DELETE guard is replaced by one that lets a delete through only inside a prune window that
names a whole sealed segment already marked pruned; segment rows themselves are append-only except that
one-way marking. Without a window (and its segment) a DELETE is refused exactly as before.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op


revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SEALED = ("chain_id", "day", "first_seq", "last_seq", "size", "root", "prev_segment_last_hash", "last_hash",
          "key_id", "signature", "sealed_us")
IN_WINDOW = (
    "EXISTS (SELECT 1 FROM prune_window w JOIN segment s ON s.chain_id = w.chain_id AND s.first_seq = w.first_seq "
    "AND s.last_seq = w.last_seq AND s.pruned WHERE w.chain_id = OLD.chain_id "
    "AND OLD.seq BETWEEN w.first_seq AND w.last_seq)"
)
SQLITE_REFUSE_DELETE = "SELECT RAISE(ABORT, 'audit_entry is append-only: DELETE refused')"


def upgrade() -> None:
    op.create_table(
        "segment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("chain_id", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.String(length=64), nullable=False),
        sa.Column("prev_segment_last_hash", sa.String(length=64), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.Column("sealed_us", sa.BigInteger(), nullable=False),
        sa.Column("pruned", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("pruned_us", sa.BigInteger(), nullable=True),
        sa.Column("prune_key_id", sa.String(length=64), nullable=True),
        sa.Column("prune_signature", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment")),
        sa.UniqueConstraint("chain_id", "first_seq", name="uq_segment_chain_id"),
        sa.UniqueConstraint("chain_id", "day", name="uq_segment_chain_id_day"),
    )
    op.create_table(
        "prune_window",
        sa.Column("chain_id", sa.String(length=64), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "first_seq", name=op.f("pk_prune_window")),
    )
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in SEALED)
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER audit_entry_no_delete")
        op.execute(f"CREATE TRIGGER audit_entry_no_delete BEFORE DELETE ON audit_entry WHEN NOT {IN_WINDOW} "
                   f"BEGIN {SQLITE_REFUSE_DELETE}; END")
        op.execute("CREATE TRIGGER segment_no_delete BEFORE DELETE ON segment "
                   "BEGIN SELECT RAISE(ABORT, 'segment is append-only: DELETE refused'); END")
        op.execute(f"CREATE TRIGGER segment_no_update BEFORE UPDATE ON segment WHEN OLD.pruned OR NOT NEW.pruned "
                   f"OR {changed} BEGIN SELECT RAISE(ABORT, 'segment is append-only: only pruning may mark it'); END")
    else:
        op.execute(
            f"""CREATE OR REPLACE FUNCTION audit_entry_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP = 'DELETE' THEN
                    IF {IN_WINDOW} THEN RETURN OLD; END IF;
                END IF;
                RAISE EXCEPTION 'audit_entry is append-only: % refused', TG_OP;
            END $$"""
        )
        pg_changed = changed.replace("IS NOT", "IS DISTINCT FROM")
        op.execute(
            f"""CREATE FUNCTION segment_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP = 'UPDATE' AND NOT OLD.pruned AND NEW.pruned AND NOT ({pg_changed}) THEN RETURN NEW; END IF;
                RAISE EXCEPTION 'segment is append-only: % refused (only pruning may mark it)', TG_OP;
            END $$"""
        )
        op.execute("CREATE TRIGGER segment_no_change BEFORE UPDATE OR DELETE ON segment "
                   "FOR EACH ROW EXECUTE FUNCTION segment_append_only()")
        op.execute("CREATE TRIGGER segment_no_truncate BEFORE TRUNCATE ON segment "
                   "FOR EACH STATEMENT EXECUTE FUNCTION segment_append_only()")


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("DROP TRIGGER audit_entry_no_delete")
        op.execute(f"CREATE TRIGGER audit_entry_no_delete BEFORE DELETE ON audit_entry BEGIN {SQLITE_REFUSE_DELETE}; END")
    else:
        op.execute(
            """CREATE OR REPLACE FUNCTION audit_entry_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'audit_entry is append-only: % refused', TG_OP; END $$"""
        )
    op.drop_table("prune_window")
    op.drop_table("segment")  # its triggers go with it
    if not sqlite:
        op.execute("DROP FUNCTION segment_append_only()")
