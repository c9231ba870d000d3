"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 05:38:55.008939
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY = ("audit_entry", "checkpoint")


def _create_append_only_triggers() -> None:
    """The database itself refuses UPDATE and DELETE on the audit tables, whoever asks."""
    bind = op.get_bind()
    for table in APPEND_ONLY:
        if bind.dialect.name == "sqlite":
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {action} refused'); END"
                )
        else:
            op.execute(
                f"""CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN RAISE EXCEPTION '{table} is append-only: % refused', TG_OP; END $$"""
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_append_only()"
            )


def upgrade() -> None:
    op.create_table('access_level',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_access_level')),
    sa.UniqueConstraint('key', name=op.f('uq_access_level_key'))
    )
    op.create_table('alarm',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('door', sa.String(length=64), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('raised_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('assigned_to', sa.String(length=64), nullable=True),
    sa.Column('acknowledged_by', sa.String(length=64), nullable=True),
    sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alarm')),
    sa.UniqueConstraint('event_id', name=op.f('uq_alarm_event_id'))
    )
    op.create_table('area',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('anti_passback', sa.String(length=8), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_area')),
    sa.UniqueConstraint('key', name=op.f('uq_area_key'))
    )
    op.create_table('audit_entry',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('chain_id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('event_id', sa.String(length=128), nullable=False),
    sa.Column('ts_us', sa.BigInteger(), nullable=False),
    sa.Column('received_us', sa.BigInteger(), nullable=False),
    sa.Column('source', sa.String(length=128), nullable=False),
    sa.Column('door', sa.String(length=64), nullable=True),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_entry')),
    sa.UniqueConstraint('chain_id', 'seq', name=op.f('uq_audit_entry_chain_id')),
    sa.UniqueConstraint('event_id', name=op.f('uq_audit_entry_event_id'))
    )
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.create_index('ix_audit_entry_door_ts', ['door', 'ts_us'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_entry_kind'), ['kind'], unique=False)
        batch_op.create_index('ix_audit_entry_ts', ['ts_us'], unique=False)

    op.create_table('camera',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('url', sa.String(length=500), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_camera')),
    sa.UniqueConstraint('key', name=op.f('uq_camera_key'))
    )
    op.create_table('checkpoint',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('chain_id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('signed_us', sa.BigInteger(), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('signature', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_checkpoint')),
    sa.UniqueConstraint('chain_id', 'seq', name=op.f('uq_checkpoint_chain_id'))
    )
    op.create_table('console_user',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=256), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_login_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_console_user')),
    sa.UniqueConstraint('username', name=op.f('uq_console_user_username'))
    )
    op.create_table('controller',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('online', sa.Boolean(), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_controller')),
    sa.UniqueConstraint('key', name=op.f('uq_controller_key'))
    )
    op.create_table('dead_letter',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_letter'))
    )
    op.create_table('person',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('employee_no', sa.String(length=64), nullable=True),
    sa.Column('company', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('lockdown_exempt', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('left_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_person')),
    sa.UniqueConstraint('employee_no', name=op.f('uq_person_employee_no'))
    )
    op.create_table('schedule',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_schedule')),
    sa.UniqueConstraint('key', name=op.f('uq_schedule_key'))
    )
    op.create_table('signing_key',
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('public_key', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key_id', name=op.f('pk_signing_key'))
    )
    op.create_table('site',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_site'))
    )
    op.create_table('credential',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.Column('format', sa.String(length=16), nullable=False),
    sa.Column('number', sa.String(length=64), nullable=False),
    sa.Column('pin_hash', sa.String(length=128), nullable=True),
    sa.Column('biometric_ref', sa.String(length=128), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('valid_from', sa.DateTime(timezone=True), nullable=True),
    sa.Column('valid_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['person_id'], ['person.id'], name=op.f('fk_credential_person_id_person')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_credential')),
    sa.UniqueConstraint('format', 'number', name=op.f('uq_credential_format'))
    )
    op.create_table('door',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('area_in_id', sa.Integer(), nullable=True),
    sa.Column('area_out_id', sa.Integer(), nullable=True),
    sa.Column('open_time_s', sa.Float(), nullable=False),
    sa.Column('held_open_limit_s', sa.Float(), nullable=False),
    sa.Column('two_person', sa.Boolean(), nullable=False),
    sa.Column('two_person_window_s', sa.Float(), nullable=False),
    sa.Column('factors', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['area_in_id'], ['area.id'], name=op.f('fk_door_area_in_id_area')),
    sa.ForeignKeyConstraint(['area_out_id'], ['area.id'], name=op.f('fk_door_area_out_id_area')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_door')),
    sa.UniqueConstraint('key', name=op.f('uq_door_key'))
    )
    op.create_table('holiday',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('schedule_id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.ForeignKeyConstraint(['schedule_id'], ['schedule.id'], name=op.f('fk_holiday_schedule_id_schedule'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_holiday'))
    )
    op.create_table('person_level',
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.Column('level_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['level_id'], ['access_level.id'], name=op.f('fk_person_level_level_id_access_level'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['person_id'], ['person.id'], name=op.f('fk_person_level_person_id_person'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('person_id', 'level_id', name=op.f('pk_person_level'))
    )
    op.create_table('schedule_interval',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('schedule_id', sa.Integer(), nullable=False),
    sa.Column('weekday', sa.Integer(), nullable=False),
    sa.Column('start_minute', sa.Integer(), nullable=False),
    sa.Column('end_minute', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['schedule_id'], ['schedule.id'], name=op.f('fk_schedule_interval_schedule_id_schedule'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_schedule_interval'))
    )
    op.create_table('access_level_door',
    sa.Column('level_id', sa.Integer(), nullable=False),
    sa.Column('door_id', sa.Integer(), nullable=False),
    sa.Column('schedule_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['door_id'], ['door.id'], name=op.f('fk_access_level_door_door_id_door'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['level_id'], ['access_level.id'], name=op.f('fk_access_level_door_level_id_access_level'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['schedule_id'], ['schedule.id'], name=op.f('fk_access_level_door_schedule_id_schedule')),
    sa.PrimaryKeyConstraint('level_id', 'door_id', 'schedule_id', name=op.f('pk_access_level_door'))
    )
    op.create_table('camera_door',
    sa.Column('camera_id', sa.Integer(), nullable=False),
    sa.Column('door_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['camera_id'], ['camera.id'], name=op.f('fk_camera_door_camera_id_camera'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['door_id'], ['door.id'], name=op.f('fk_camera_door_door_id_door'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('camera_id', 'door_id', name=op.f('pk_camera_door'))
    )
    op.create_table('reader',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('controller_id', sa.Integer(), nullable=False),
    sa.Column('door_id', sa.Integer(), nullable=False),
    sa.Column('direction', sa.String(length=3), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('osdp_address', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['controller_id'], ['controller.id'], name=op.f('fk_reader_controller_id_controller')),
    sa.ForeignKeyConstraint(['door_id'], ['door.id'], name=op.f('fk_reader_door_id_door')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reader')),
    sa.UniqueConstraint('key', name=op.f('uq_reader_key'))
    )
    _create_append_only_triggers()


def downgrade() -> None:
    op.drop_table('reader')
    op.drop_table('camera_door')
    op.drop_table('access_level_door')
    op.drop_table('schedule_interval')
    op.drop_table('person_level')
    op.drop_table('holiday')
    op.drop_table('door')
    op.drop_table('credential')
    op.drop_table('site')
    op.drop_table('signing_key')
    op.drop_table('schedule')
    op.drop_table('person')
    op.drop_table('dead_letter')
    op.drop_table('controller')
    op.drop_table('console_user')
    op.drop_table('checkpoint')
    op.drop_table('camera')
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_entry_ts')
        batch_op.drop_index(batch_op.f('ix_audit_entry_kind'))
        batch_op.drop_index('ix_audit_entry_door_ts')

    op.drop_table('audit_entry')
    op.drop_table('area')
    op.drop_table('alarm')
    op.drop_table('access_level')
