"""The serving database: tenant API keys (hashed) and the usage/audit log, through SQLAlchemy Core.

SQLite by default (one file beside the deployment, nothing to set up), PostgreSQL (or any SQLAlchemy
URL) by `--database URL`. The layout is Alembic's: `connect` migrates a database to this swiftkit's
revision (migrations/versions/, one file per change), creating it on first use.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, OperationalError

from swiftkit.errors import SwiftkitError

KEY_CACHE_S = 1.0  # a server re-reads a key after this long: revocation and expiry take effect within it
KEY_PREFIX = "sk-swk-"
PERIODS = ("day", "month")

MIGRATIONS = Path(__file__).parent / "migrations"
# What the migrations build (migrations/versions/ must end in exactly this layout; tests/serve/test_migrations.py checks).
metadata = MetaData()

api_keys = Table(
    "api_keys", metadata,
    Column("id", String(32), primary_key=True),  # public: shown in lists, logs and usage rows
    Column("key_hash", String(64), nullable=False, unique=True, index=True),  # sha256 of the whole key
    Column("hint", String(16), nullable=False),  # the key's last 4 characters, to tell keys apart
    Column("tenant", String(200), nullable=False, index=True),
    Column("models", Text),  # JSON list of allowed model names; NULL: every model
    Column("rpm", Integer),  # requests per minute; NULL: unlimited
    Column("tpm", Integer),  # tokens (prompt + completion) per minute
    Column("quota_tokens", Integer),  # tokens per quota period
    Column("quota_period", String(8)),  # "day" | "month" (UTC calendar)
    Column("admin", Boolean, nullable=False, default=False),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime),
    Column("revoked_at", DateTime),
)

usage = Table(
    "usage", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", DateTime, nullable=False, index=True),
    Column("tenant", String(200), index=True),
    Column("key_id", String(32), index=True),
    Column("model", String(400)),
    Column("adapter", String(400)),
    Column("endpoint", String(200), nullable=False),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("latency_s", Float),
    Column("ttft_s", Float),
    Column("status", Integer, nullable=False),
    Column("error_type", String(64)),
    Column("request", Text),  # --audit-content: the request's messages / prompt / input (JSON)
    Column("response", Text),  # --audit-content: the generated text
)


def now() -> dt.datetime:
    """UTC, naive: stored the same way in SQLite (no time zones) and PostgreSQL."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def database_url(value: str) -> str:
    """A SQLAlchemy URL; a plain path means a SQLite file there."""
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def connect(value: str) -> Engine:
    """The database at `value`, its tables created if missing; one clear line when it cannot be reached."""
    url = database_url(value)
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, ImportError) as exc:
        raise SwiftkitError(f"cannot use --database {value}: {exc}",
                            "give a path (SQLite) or a URL such as postgresql+psycopg://user@host/db") from None
    if engine.dialect.name == "sqlite":
        Path(engine.url.database or ".").parent.mkdir(parents=True, exist_ok=True)
        from sqlalchemy import event

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _):  # readers (swiftkit usage) never block the server's writes
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=5000")
    try:
        migrate(engine)
    except OperationalError as exc:
        raise SwiftkitError(f"cannot open the database {engine.url.render_as_string(hide_password=True)}: "
                            f"{' '.join(str(exc.orig).split())}", "check --database") from None
    return engine


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the database to `revision` (Alembic), in one transaction. A database made before swiftkit had
    migrations (its `swiftkit_schema` table says version 1) is that layout: revision 0001."""
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError
    from sqlalchemy import inspect

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        tables = inspect(conn).get_table_names()
        if "alembic_version" not in tables and "swiftkit_schema" in tables:
            command.stamp(config, "0001")
        try:
            command.upgrade(config, revision)
        except CommandError as exc:  # e.g. a revision this swiftkit does not know: a newer swiftkit migrated it
            raise SwiftkitError(f"cannot migrate the database {engine.url.render_as_string(hide_password=True)}: {exc}",
                                "a newer swiftkit has migrated it: upgrade swiftkit (pip install -U swiftkit)") from None


def hash_key(key: str | bytes) -> str:
    # Keys are 32 random bytes: a plain SHA-256 cannot be reversed or guessed, and it is a lookup index.
    return hashlib.sha256(key.encode("utf-8") if isinstance(key, str) else key).hexdigest()


@dataclass
class Key:
    id: str
    tenant: str
    models: list[str] | None
    rpm: int | None
    tpm: int | None
    quota_tokens: int | None
    quota_period: str | None
    admin: bool
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @classmethod
    def from_row(cls, row) -> Key:
        return cls(row.id, row.tenant, json.loads(row.models) if row.models else None, row.rpm, row.tpm,
                   row.quota_tokens, row.quota_period, bool(row.admin), row.created_at, row.expires_at, row.revoked_at)

    def as_json(self) -> dict:
        """Everything but the secret (which is never stored)."""
        iso = lambda t: t.isoformat() + "Z" if t else None  # noqa: E731
        return {"id": self.id, "tenant": self.tenant, "models": self.models, "rpm": self.rpm, "tpm": self.tpm,
                "quota_tokens": self.quota_tokens, "quota_period": self.quota_period, "admin": self.admin,
                "state": self.state(), "created_at": iso(self.created_at), "expires_at": iso(self.expires_at),
                "revoked_at": iso(self.revoked_at)}

    def state(self, at: dt.datetime | None = None) -> str:
        at = at or now()
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= at:
            return "expired"
        return "active"


def create_key(engine: Engine, tenant: str, models: list[str] | None = None, rpm: int | None = None,
               tpm: int | None = None, quota_tokens: int | None = None, quota_period: str | None = None,
               expires_at: dt.datetime | None = None, admin: bool = False) -> tuple[str, Key]:
    """A new key: (the secret, shown once and never stored, and its record)."""
    if quota_tokens is not None and quota_period not in PERIODS:
        raise SwiftkitError(f"a token quota needs --quota-period ({' or '.join(PERIODS)})")
    key_id = "key_" + secrets.token_hex(6)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = {"id": key_id, "key_hash": hash_key(secret), "hint": secret[-4:], "tenant": tenant,
           "models": json.dumps(models) if models else None, "rpm": rpm, "tpm": tpm, "quota_tokens": quota_tokens,
           "quota_period": quota_period if quota_tokens is not None else None, "admin": admin,
           "created_at": now(), "expires_at": expires_at, "revoked_at": None}
    with engine.begin() as conn:
        conn.execute(insert(api_keys).values(**row))
    return secret, Key.from_row(_Row(row))


class _Row:
    def __init__(self, values: dict):
        self.__dict__.update(values)


def find_key(engine: Engine, secret: bytes) -> Key | None:
    with engine.connect() as conn:
        row = conn.execute(select(api_keys).where(api_keys.c.key_hash == hash_key(secret))).first()
    return Key.from_row(row) if row is not None else None


def list_keys(engine: Engine, tenant: str | None = None) -> list[Key]:
    query = select(api_keys).order_by(api_keys.c.created_at)
    if tenant:
        query = query.where(api_keys.c.tenant == tenant)
    with engine.connect() as conn:
        return [Key.from_row(r) for r in conn.execute(query)]


def revoke_key(engine: Engine, key_id: str) -> Key:
    with engine.begin() as conn:
        done = conn.execute(update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                            .values(revoked_at=now())).rowcount
        row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
    if row is None:
        raise SwiftkitError(f"no key with id {key_id}", "`swiftkit keys list` shows the ids")
    if not done:
        raise SwiftkitError(f"key {key_id} was already revoked at {row.revoked_at:%Y-%m-%d %H:%M:%S} UTC")
    return Key.from_row(row)


def period_start(period: str, at: dt.datetime | None = None) -> dt.datetime:
    at = at or now()
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period == "day" else day.replace(day=1)


def period_end(period: str, at: dt.datetime | None = None) -> dt.datetime:
    start = period_start(period, at)
    if period == "day":
        return start + dt.timedelta(days=1)
    return (start + dt.timedelta(days=32)).replace(day=1)


def tokens_used(engine: Engine, key_id: str, since: dt.datetime) -> int:
    query = (select(func.coalesce(func.sum(usage.c.prompt_tokens + usage.c.completion_tokens), 0))
             .where(usage.c.key_id == key_id, usage.c.time >= since))
    with engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


def write_usage(engine: Engine, rows: list[dict]) -> None:
    """One transaction, one multi-row INSERT per batch (executemany)."""
    if rows:
        with engine.begin() as conn:
            conn.execute(insert(usage), rows)


def usage_report(engine: Engine, since: dt.datetime | None = None, until: dt.datetime | None = None,
                 tenant: str | None = None) -> list[dict]:
    """Usage per tenant, model and UTC day: requests, errors, tokens, mean latency."""
    day = func.date(usage.c.time) if engine.dialect.name == "sqlite" else func.to_char(usage.c.time, "YYYY-MM-DD")
    query = select(
        day.label("day"), usage.c.tenant, usage.c.model,
        func.count().label("requests"),
        func.sum(func.cast(usage.c.status >= 400, Integer)).label("errors"),
        func.sum(usage.c.prompt_tokens).label("prompt_tokens"),
        func.sum(usage.c.completion_tokens).label("completion_tokens"),
        func.avg(usage.c.latency_s).label("mean_latency_s"),
    ).group_by(day, usage.c.tenant, usage.c.model).order_by(day, usage.c.tenant, usage.c.model)
    if since is not None:
        query = query.where(usage.c.time >= since)
    if until is not None:
        query = query.where(usage.c.time < until)
    if tenant is not None:
        query = query.where(usage.c.tenant == tenant)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
    for r in rows:
        r["day"] = str(r["day"])
        r["total_tokens"] = int(r["prompt_tokens"] or 0) + int(r["completion_tokens"] or 0)
        r["errors"] = int(r["errors"] or 0)
        r["mean_latency_s"] = round(float(r["mean_latency_s"]), 4) if r["mean_latency_s"] is not None else None
    return rows
