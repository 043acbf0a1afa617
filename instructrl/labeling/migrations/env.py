"""Alembic environment: runs on the connection that `core.db.migrate` passes in (no alembic.ini needed)."""

from __future__ import annotations

from alembic import context

from instructrl.labeling.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through instructrl.labeling.core.db.migrate(engine)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
