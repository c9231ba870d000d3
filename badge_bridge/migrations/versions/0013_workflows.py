"""the data center's workflows: tenants, visits, access requests, interlocks

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenant")),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.UniqueConstraint("key", name="uq_tenant_key"),
    )
    with op.batch_alter_table("door") as batch:
        batch.add_column(sa.Column("interlock", sa.String(64), nullable=True))
    with op.batch_alter_table("person") as batch:
        batch.add_column(sa.Column("tenant_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="staff"))
        batch.add_column(sa.Column("may_escort", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.create_foreign_key("fk_person_tenant_id_tenant", "tenant", ["tenant_id"], ["id"])
        batch.create_index("ix_person_tenant_id", ["tenant_id"])
    with op.batch_alter_table("console_user") as batch:
        batch.add_column(sa.Column("tenant_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_console_user_tenant_id_tenant", "tenant", ["tenant_id"], ["id"])
    op.create_table(
        "visit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_visit")),
        sa.Column("person_id", sa.Integer(), sa.ForeignKey("person.id", name="fk_visit_person_id_person"),
                  nullable=False),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenant.id", name="fk_visit_tenant_id_tenant"),
                  nullable=True),
        sa.Column("host", sa.String(64), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("id_checked_by", sa.String(64), nullable=True),
        sa.Column("id_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id_document", sa.String(64), nullable=False),
        sa.Column("credential_id", sa.Integer(),
                  sa.ForeignKey("credential.id", name="fk_visit_credential_id_credential"), nullable=True),
        sa.Column("returned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("overdue_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_visit_person_id", "visit", ["person_id"])
    op.create_index("ix_visit_tenant_id", "visit", ["tenant_id"])
    op.create_index("ix_visit_ends_at", "visit", ["ends_at"])
    op.create_table(
        "access_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_request")),
        sa.Column("person_id", sa.Integer(),
                  sa.ForeignKey("person.id", name="fk_access_request_person_id_person"), nullable=False),
        sa.Column("level_id", sa.Integer(),
                  sa.ForeignKey("access_level.id", name="fk_access_request_level_id_access_level"), nullable=False),
        sa.Column("tenant_id", sa.Integer(),
                  sa.ForeignKey("tenant.id", name="fk_access_request_tenant_id_tenant"), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("ticket", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_approved_by", sa.String(64), nullable=True),
        sa.Column("decided_by", sa.String(64), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
    )
    op.create_index("ix_access_request_person_id", "access_request", ["person_id"])
    op.create_index("ix_access_request_tenant_id", "access_request", ["tenant_id"])
    op.create_index("ix_access_request_ends_at", "access_request", ["ends_at"])
    op.create_index("ix_access_request_state", "access_request", ["state"])


def downgrade() -> None:
    op.drop_table("access_request")
    op.drop_table("visit")
    with op.batch_alter_table("console_user") as batch:
        batch.drop_constraint("fk_console_user_tenant_id_tenant", type_="foreignkey")
        batch.drop_column("tenant_id")
    with op.batch_alter_table("person") as batch:
        batch.drop_index("ix_person_tenant_id")
        batch.drop_constraint("fk_person_tenant_id_tenant", type_="foreignkey")
        batch.drop_column("may_escort")
        batch.drop_column("kind")
        batch.drop_column("tenant_id")
    with op.batch_alter_table("door") as batch:
        batch.drop_column("interlock")
    op.drop_table("tenant")
