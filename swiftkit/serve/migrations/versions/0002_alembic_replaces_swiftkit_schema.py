"""Alembic's own `alembic_version` table now records the layout: drop `swiftkit_schema`.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("swiftkit_schema")


def downgrade() -> None:
    op.create_table("swiftkit_schema", sa.Column("version", sa.Integer, nullable=False))
    op.execute("INSERT INTO swiftkit_schema (version) VALUES (1)")
