"""Alembic environment: migrations run from code (`badge-bridge init`) on the connection they are given."""

from alembic import context

from badge_bridge.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `badge-bridge init`, which passes the connection")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
