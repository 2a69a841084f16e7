"""`swiftkit keys create|list|revoke` and `swiftkit usage`: the serving database from the terminal.

The secret of a new key is printed once, on stdout (so `KEY=$(swiftkit keys create ...)` works); only
its SHA-256 is stored. Tables go to stdout too; notes go to stderr.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re

from rich.table import Table

from swiftkit.console import console, out
from swiftkit.errors import SwiftkitError
from swiftkit.serve import db
from swiftkit.serve.config import KeysCreateConfig, KeysListConfig, KeysRevokeConfig, UsageConfig

_DURATION = re.compile(r"^(\d+)([dhm])$")


def expiry(value: str, at: dt.datetime | None = None) -> dt.datetime:
    """`30d` / `12h` / `15m` from now, or an ISO date or time (UTC)."""
    at = at or db.now()
    match = _DURATION.match(value.strip())
    if match:
        n, unit = int(match.group(1)), match.group(2)
        unit_name = {"d": "days", "h": "hours", "m": "minutes"}[unit]
        return at + dt.timedelta(**{unit_name: n})
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SwiftkitError(f"--expires {value!r} is neither a date/time nor a duration",
                            "e.g. --expires 2027-01-31, --expires 2027-01-31T12:00, --expires 30d") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return parsed


def _day(value: str | None, flag: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return dt.datetime.combine(dt.date.fromisoformat(value), dt.time())
    except ValueError:
        raise SwiftkitError(f"{flag} {value!r} is not a date", f"e.g. {flag} 2026-12-01") from None


def create(cfg: KeysCreateConfig) -> str:
    expires = expiry(cfg.expires) if cfg.expires else None
    engine = db.connect(cfg.database)
    secret, key = db.create_key(engine, cfg.tenant, cfg.allow_model or None, cfg.rpm, cfg.tpm, cfg.quota_tokens,
                                cfg.quota_period, expires, cfg.admin)
    console.print(f"created [bold]{key.id}[/] for tenant [bold]{key.tenant}[/]; the key is shown once:")
    out.print(secret, highlight=False, soft_wrap=True)
    return secret


def _text(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def _csv(value):
    if value is None:
        return ""
    return " ".join(value) if isinstance(value, list) else value


def _emit(rows: list[dict], columns: list[str], fmt: str, title: str) -> None:
    if fmt == "json":
        out.print_json(json.dumps(rows, default=str))
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _csv(r.get(k)) for k in columns} for r in rows)
        out.print(buf.getvalue(), end="", highlight=False, soft_wrap=True)
    else:
        table = Table(title=title)
        for c in columns:
            table.add_column(c, overflow="fold",
                             justify="right" if rows and isinstance(rows[0].get(c), (int, float)) else "left")
        for r in rows:
            table.add_row(*(_text(r.get(c)) for c in columns))
        out.print(table)


def list_keys(cfg: KeysListConfig) -> list[dict]:
    rows = [k.as_json() for k in db.list_keys(db.connect(cfg.database), cfg.tenant)]
    columns = ["id", "tenant", "models", "rpm", "tpm", "quota_tokens", "quota_period", "admin", "state",
               "created_at", "expires_at"]
    _emit(rows, columns, cfg.format, "keys")
    return rows


def revoke(cfg: KeysRevokeConfig) -> None:
    key = db.revoke_key(db.connect(cfg.database), cfg.key_id)
    console.print(f"revoked [bold]{key.id}[/] (tenant {key.tenant}); servers refuse it within {db.KEY_CACHE_S:g} s")


def usage(cfg: UsageConfig) -> list[dict]:
    since = _day(cfg.since, "--since")
    until = _day(cfg.until, "--until")
    rows = db.usage_report(db.connect(cfg.database), since, until + dt.timedelta(days=1) if until else None, cfg.tenant)
    for r in rows:
        r["tenant"] = r["tenant"] if r["tenant"] is not None else "(shared key)"
    columns = ["day", "tenant", "model", "requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens",
               "mean_latency_s"]
    _emit(rows, columns, cfg.format, "usage per tenant, model and UTC day")
    return rows
