"""Alembic environment: runs on the connection ``otrt_core.jobs.db.migrate`` hands over."""

from alembic import context

from otrt_core.jobs.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("run migrations with `otrt migrate`, which supplies the database connection")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
