"""Helpers for the tests: throwaway PostGIS databases and an ASGI client (no mocks).

The server comes from TEST_DATABASE_URL or DATABASE_URL (default: local PostgreSQL); the tests
create ``tpa_test_<random>`` databases on it and drop them at the end. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
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


async def _fetch(database: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """Run one statement on ``database`` over its own connection (no pool, no ORM)."""
    conn = await asyncpg.connect(_dsn(database))
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def _create_db(name: str, template: str | None = None) -> None:
    await _fetch("postgres", f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    await _fetch(name, "CREATE EXTENSION IF NOT EXISTS postgis")


async def _drop_db(name: str) -> None:
    await _fetch("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def isolated(fn: Callable[..., T], *args: object) -> T:
    """Run ``fn`` in its own thread. ``asyncio.run`` (ours, or Alembic's env.py) must not touch the
    event loop that pytest-asyncio keeps for the session."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()


def run_async(coro: Coroutine[object, object, T]) -> T:
    return isolated(asyncio.run, coro)


def fetch(database: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """Synchronous ``_fetch`` for tests that read the database behind the API."""
    return run_async(_fetch(database, sql, *args))


class ThrowawayDatabase:
    """Create a uniquely named database with PostGIS; drop it on close (cf. tipg's DatabaseJanitor)."""

    def __init__(self, label: str = "", template: str | None = None) -> None:
        self.name = f"tpa_test_{label}{secrets.token_hex(4)}"
        self.url = sa_url(self.name)
        self.template = template  # a copy of this database (file copy: seconds, where a demo load takes ~30 s)

    def __enter__(self) -> ThrowawayDatabase:
        run_async(_create_db(self.name, self.template))
        return self

    def __exit__(self, *exc: object) -> None:
        run_async(_drop_db(self.name))

    def upgrade(self, revision: str = "head") -> None:
        self._alembic(command.upgrade, revision)

    def downgrade(self, revision: str) -> None:
        self._alembic(command.downgrade, revision)

    def _alembic(self, fn: Callable[..., None], revision: str) -> None:
        cfg = alembic_config(self.url)
        cfg.attributes["configure_logging"] = False
        isolated(fn, cfg, revision)


def settings_for(url: str, **db: object) -> Settings:
    return Settings(db=DatabaseSettings(url=url, **db))


@asynccontextmanager
async def client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(database_url: str, workers: int = 1, extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``tpa serve`` against ``database_url`` on a free loopback port; yield its base URL."""
    import subprocess
    import sys
    import time

    import httpx as _httpx

    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "TPA_LOG_LEVEL": "WARNING", **(extra_env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--host", "127.0.0.1", "--port",
         str(port), "--workers", str(workers), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except _httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"server did not start: {err[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
