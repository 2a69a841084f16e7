"""Admin routes (the admin key, or a tenant key created with --admin): usage and keys from the database."""

from __future__ import annotations

import asyncio
import datetime as dt

from fastapi import FastAPI

from swiftkit.serve import db
from swiftkit.serve.state import ServerState


def install(app: FastAPI, state: ServerState) -> None:
    if state.tenancy is None:  # no database: no such routes (404), nothing in the OpenAPI document
        return

    def database():
        return state.tenancy.engine

    @app.get("/v1/admin/usage")
    async def usage(since: dt.date | None = None, until: dt.date | None = None, tenant: str | None = None) -> dict:
        """Usage per tenant, model and UTC day (what `swiftkit usage` prints); `until` is exclusive."""
        engine = database()
        await asyncio.to_thread(state.tenancy.log.flush)  # all this server has recorded, not only what the writer reached
        rows = await asyncio.to_thread(db.usage_report, engine, _day(since), _day(until), tenant)
        return {"object": "list", "data": rows}

    @app.get("/v1/admin/keys")
    async def keys(tenant: str | None = None) -> dict:
        """The keys (ids, tenants, limits, state; never the secrets)."""
        rows = await asyncio.to_thread(db.list_keys, database(), tenant)
        return {"object": "list", "data": [k.as_json() for k in rows]}


def _day(value: dt.date | None) -> dt.datetime | None:
    return dt.datetime(value.year, value.month, value.day) if value else None

