"""The serving database's Alembic migrations: a fresh database, one made before migrations existed (with
keys and usage rows that must survive), one migrated by a newer swiftkit; SQLite and a real PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from swiftkit.errors import SwiftkitError
from swiftkit.serve import db


def layout_differences(engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), db.metadata)


def revision(engine) -> str:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def usage_row(**values) -> dict:
    row = {"time": db.now(), "tenant": "t", "key_id": None, "model": "toy", "adapter": None, "endpoint": "/v1/completions",
           "prompt_tokens": 3, "completion_tokens": 5, "latency_s": 0.1, "ttft_s": 0.05, "status": 200,
           "error_type": None, "request": None, "response": None}
    return {**row, **values}


def pre_migration_database(url: str) -> tuple[sa.Engine, str, str]:
    """What swiftkit wrote before it had migrations: the 0001 layout with its `swiftkit_schema` row and no
    `alembic_version`, holding a key and a usage row."""
    engine = sa.create_engine(url)
    db.migrate(engine, "0001")
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE alembic_version"))
    secret, key = db.create_key(engine, "old-tenant", rpm=5)
    db.write_usage(engine, [usage_row(key_id=key.id, time=dt.datetime(2026, 11, 30, 12))])
    return engine, secret, key.id


def test_a_fresh_database_is_built_by_the_migrations_and_matches_the_code(tmp_path):
    engine = db.connect(str(tmp_path / "fresh.db"))
    assert revision(engine) == "0002"
    assert set(sa.inspect(engine).get_table_names()) == {"alembic_version", "api_keys", "usage"}
    assert layout_differences(engine) == []  # a change to db.metadata without its migration fails here
    db.connect(str(tmp_path / "fresh.db"))  # opening it again is a no-op
    assert revision(engine) == "0002"


def test_revision_0001_is_the_layout_before_migrations(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'v1.db'}")
    db.migrate(engine, "0001")
    # The layout of db.metadata plus the old version table, exactly: nothing else differs.
    assert [d[0] for d in layout_differences(engine)] == ["remove_table"]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version FROM swiftkit_schema")).scalar() == 1


def check_upgrade_keeps_the_data(url: str) -> None:
    engine, secret, key_id = pre_migration_database(url)
    engine = db.connect(url)
    assert revision(engine) == "0002"
    assert "swiftkit_schema" not in sa.inspect(engine).get_table_names()
    found = db.find_key(engine, secret.encode())
    assert found is not None and found.id == key_id and found.tenant == "old-tenant" and found.rpm == 5
    assert db.tokens_used(engine, key_id, dt.datetime(2026, 11, 1)) == 8
    report = db.usage_report(engine)
    assert [(r["tenant"], r["requests"]) for r in report] == [("t", 1)]
    assert layout_differences(engine) == []


def test_a_database_from_before_migrations_is_upgraded_with_its_data(tmp_path):
    check_upgrade_keeps_the_data(f"sqlite:///{tmp_path / 'old.db'}")


def test_a_database_migrated_by_a_newer_swiftkit_is_refused_in_one_line(tmp_path):
    path = tmp_path / "newer.db"
    engine = db.connect(str(path))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(SwiftkitError) as err:
        db.connect(str(path))
    assert "cannot migrate the database" in str(err.value) and "\n" not in str(err.value)
    assert "upgrade swiftkit" in err.value.hint


def test_postgresql_upgrade_keeps_the_data(postgres_url):
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("DROP DATABASE IF EXISTS swiftkit_migrations"))
        conn.execute(sa.text("CREATE DATABASE swiftkit_migrations"))
    url = postgres_url.rsplit("/", 1)[0] + "/swiftkit_migrations"
    check_upgrade_keeps_the_data(url)
    fresh = db.connect(url.rsplit("/", 1)[0] + "/postgres")  # the shared database the other tests use: at head
    assert revision(fresh) == "0002"
