"""Tenant keys and the usage log: the layout swiftkit created before it had migrations (schema version 1).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("swiftkit_schema", sa.Column("version", sa.Integer, nullable=False))
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("hint", sa.String(16), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("models", sa.Text),
        sa.Column("rpm", sa.Integer),
        sa.Column("tpm", sa.Integer),
        sa.Column("quota_tokens", sa.Integer),
        sa.Column("quota_period", sa.String(8)),
        sa.Column("admin", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime),
        sa.Column("revoked_at", sa.DateTime),
    )
    op.create_index("ix_api_keys_key_hash", "api_keys", ["key_hash"], unique=True)
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant"])
    op.create_table(
        "usage",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime, nullable=False),
        sa.Column("tenant", sa.String(200)),
        sa.Column("key_id", sa.String(32)),
        sa.Column("model", sa.String(400)),
        sa.Column("adapter", sa.String(400)),
        sa.Column("endpoint", sa.String(200), nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("latency_s", sa.Float),
        sa.Column("ttft_s", sa.Float),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("error_type", sa.String(64)),
        sa.Column("request", sa.Text),
        sa.Column("response", sa.Text),
    )
    for column in ("time", "tenant", "key_id"):
        op.create_index(f"ix_usage_{column}", "usage", [column])
    op.execute("INSERT INTO swiftkit_schema (version) VALUES (1)")


def downgrade() -> None:
    op.drop_table("usage")
    op.drop_table("api_keys")
    op.drop_table("swiftkit_schema")
