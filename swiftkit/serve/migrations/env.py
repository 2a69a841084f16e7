"""Alembic's entry point for swiftkit's serving database: migrations run on the connection that
`db.connect` hands over (no alembic.ini, no logging set-up: swiftkit has its own output)."""

from alembic import context

from swiftkit.serve.db import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
