"""Helpers for the tests: throwaway PostGIS databases and an ASGI client (no mocks).

The server comes from TEST_DATABASE_URL or DATABASE_URL (default: local PostgreSQL); the tests
create ``tpa_test_<random>`` databases on it and drop them at the end. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TypeVar

import asyncpg
import httpx
from alembic import command
from sqlalchemy.engine import make_url

from app.db import alembic_config
from app.main import create_app
from app.settings import DatabaseSettings, Settings, to_asyncpg_url

T = TypeVar("T")

SERVER_URL = to_asyncpg_url(
    os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _dsn(database: str) -> str:
    """libpq DSN for asyncpg (no SQLAlchemy driver suffix) on the test server."""
    url = make_url(SERVER_URL).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


def sa_url(database: str) -> str:
    return make_url(SERVER_URL).set(database=database).render_as_string(hide_password=False)


async def _create_db(name: str) -> None:
    conn = await asyncpg.connect(_dsn("postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(_dsn(name))
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    finally:
        await conn.close()


async def _drop_db(name: str) -> None:
    conn = await asyncpg.connect(_dsn("postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def isolated(fn: Callable[..., T], *args: object) -> T:
    """Run ``fn`` in its own thread. ``asyncio.run`` (ours, or Alembic's env.py) must not touch the
    event loop that pytest-asyncio keeps for the session."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()


def run_async(coro: Coroutine[object, object, T]) -> T:
    return isolated(asyncio.run, coro)


class ThrowawayDatabase:
    """Create a uniquely named database with PostGIS; drop it on close (cf. tipg's DatabaseJanitor)."""

    def __init__(self, label: str = "") -> None:
        self.name = f"tpa_test_{label}{secrets.token_hex(4)}"
        self.url = sa_url(self.name)

    def __enter__(self) -> ThrowawayDatabase:
        run_async(_create_db(self.name))
        return self

    def __exit__(self, *exc: object) -> None:
        run_async(_drop_db(self.name))

    def upgrade(self, revision: str = "head") -> None:
        cfg = alembic_config(self.url)
        cfg.attributes["configure_logging"] = False
        isolated(command.upgrade, cfg, revision)

    def downgrade(self, revision: str) -> None:
        cfg = alembic_config(self.url)
        cfg.attributes["configure_logging"] = False
        isolated(command.downgrade, cfg, revision)



def settings_for(url: str, **db: object) -> Settings:
    return Settings(db=DatabaseSettings(url=url, **db))


@asynccontextmanager
async def client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
