"""Async engine and session factory, plus translation of driver errors into domain errors."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.errors import (
    ConstraintViolation,
    DatabaseUnavailable,
    DomainError,
    InvalidData,
    NotFound,
    ServiceBusy,
    is_unavailable,
)
from app.settings import DatabaseSettings

log = logging.getLogger("tpa.db")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    server_settings = {"application_name": "tpa-gis", "timezone": "UTC"}
    if settings.statement_timeout_ms:
        server_settings["statement_timeout"] = str(settings.statement_timeout_ms)
    return create_async_engine(
        settings.url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout_s,
        pool_pre_ping=True,
        echo=settings.echo,
        connect_args={"timeout": settings.connect_timeout_s, "server_settings": server_settings},
    )


def libpq_dsn(url: str) -> str:
    """The SQLAlchemy URL as a plain libpq/asyncpg DSN."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class ReadPool:
    """The asyncpg pool of the read path with a bounded queue: a request waits at most ``queue_timeout`` for a
    connection, then gets 503 + Retry-After (:class:`ServiceBusy`) instead of waiting without bound behind the
    others. Other attributes (``close``, ``terminate``, ``get_size`` …) are the pool's own."""

    def __init__(self, pool: asyncpg.Pool, queue_timeout: float) -> None:
        self._pool = pool
        self.queue_timeout = queue_timeout
        self.waiting = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    @asynccontextmanager
    async def acquire(self, custom_plans: bool | str = False) -> AsyncIterator[asyncpg.Connection]:
        """A connection; ``custom_plans``: its statements are planned with their values until it goes back to the
        pool (see :data:`CUSTOM_PLANS`); a string: those session settings instead (e.g. :data:`TILE_SESSION`)."""
        pool = self._pool
        busy = pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size()
        self.waiting += busy
        try:
            conn = await pool.acquire(timeout=self.queue_timeout)
        except TimeoutError:
            if busy:
                raise ServiceBusy(f"No database connection became free within {self.queue_timeout:g} s; "
                                  "try again shortly.") from None
            raise DatabaseUnavailable("The database did not answer in time.") from None
        finally:
            self.waiting -= busy
        try:
            if custom_plans:  # undone by the pool's RESET ALL when the connection is released
                await conn.execute(custom_plans if isinstance(custom_plans, str) else CUSTOM_PLANS)
            yield conn
        except BaseException as exc:
            if is_unavailable(exc):  # broken mid-operation (server restart): never hand it out again
                conn.terminate()
            raise
        finally:
            await pool.release(conn)

    async def fetchrow(self, query: str, *args: Any, custom_plans: bool | str = False) -> Any:
        async with self.acquire(custom_plans) as conn:
            return await conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any, custom_plans: bool | str = False) -> Any:
        async with self.acquire(custom_plans) as conn:
            return await conn.fetchval(query, *args)

    async def fetch(self, query: str, *args: Any, custom_plans: bool | str = False) -> list[Any]:
        async with self.acquire(custom_plans) as conn:
            return await conn.fetch(query, *args)


# Statements whose rows depend on how selective their values are (a bbox, a filter, a time interval) are planned
# with their values. With the default "auto", PostgreSQL switches a prepared statement to a generic plan once
# custom plans stop looking cheaper: after a few small bboxes, a generic plan that assumes a few hundred rows for any
# box was reused for a whole-extent bbox, and took 1.7 s on 500,000 households instead of 1.4 ms (QGIS asks for the
# whole view when zoomed out). Lookups by id keep generic plans: planning them would triple their cost
# (0.15 → 0.50 ms). Set per use of a connection (one round trip); the pool's RESET ALL on release undoes it.
CUSTOM_PLANS = "SET plan_cache_mode = force_custom_plan"
# Tiles: custom plans, and no parallel workers. Under concurrent load on few cores the workers only compete with the
# other requests; even alone, a zoom-10 tile of 500,000 households took 55 ms serial against 74 ms with two workers.
TILE_SESSION = CUSTOM_PLANS + "; SET max_parallel_workers_per_gather = 0"


async def create_read_pool(settings: DatabaseSettings) -> ReadPool:
    """The asyncpg pool of the OGC read path (compiled SQL, prepared per connection; cf. tipg).

    ``min_size=0``: nothing connects until the first request, so an unreachable database does not stop
    the service from starting (``/readyz`` reports it).
    """
    # plan_cache_mode stays "auto" for the session; filtered statements ask for custom plans (CUSTOM_PLANS).
    # No JIT: its compilation (50-150 ms, measured on a zoom-10 tile of 500,000 households: 141 of 239 ms) is
    # triggered by cost estimates of statements that run in milliseconds; requests here are short by design.
    server_settings = {"application_name": "tpa-gis-read", "timezone": "UTC", "DateStyle": "ISO, YMD", "jit": "off"}
    if settings.statement_timeout_ms:
        server_settings["statement_timeout"] = str(settings.statement_timeout_ms)
    pool = await asyncpg.create_pool(
        libpq_dsn(settings.url), min_size=0, max_size=settings.pool_size, timeout=settings.connect_timeout_s,
        server_settings=server_settings, max_inactive_connection_lifetime=300,
    )
    return ReadPool(pool, settings.pool_timeout_s)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(database_url: str | None = None) -> Config:
    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if database_url:
        cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def migration_heads() -> set[str]:
    """The revision ids at the head of the migration scripts shipped with this code."""
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


async def current_revisions(engine: AsyncEngine) -> set[str]:
    """Revisions recorded in the database (empty when it was never migrated)."""
    async with engine.connect() as conn:
        exists = await conn.scalar(text("SELECT to_regclass('public.alembic_version') IS NOT NULL"))
        if not exists:
            return set()
        rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
        return {r[0] for r in rows}


DATA_RULE_HINT = "tpa-gis data rule"

# SQLSTATE classes -> domain errors. Messages come from the server's constraint names, never from data.
_INTEGRITY_TITLES = {
    "23503": "Reference to a row that does not exist",
    "23505": "Duplicate key",
    "23514": "Value violates a check constraint",
    "23502": "Missing required value",
    "23P01": "Overlapping rows",
}


def translate_db_error(exc: BaseException) -> DomainError:
    """Turn a SQLAlchemy/asyncpg error into a safe, user-facing domain error.

    Messages name the violated constraint; only our own triggers' messages (marked with the hint
    ``tpa-gis data rule``) and invalid-value messages are passed on verbatim.
    """
    orig = getattr(exc, "orig", None)
    cause = getattr(orig, "__cause__", None) or orig or exc
    sqlstate = getattr(cause, "sqlstate", None)
    constraint = getattr(cause, "constraint_name", None)
    message = getattr(cause, "message", None) or ""
    if sqlstate and sqlstate.startswith("23"):
        if getattr(cause, "hint", None) == DATA_RULE_HINT:
            detail = message
        else:
            title = _INTEGRITY_TITLES.get(sqlstate, "Integrity constraint violated")
            detail = f"{title} (constraint {constraint})." if constraint else f"{title}."
        return ConstraintViolation(detail, constraint=constraint, sqlstate=sqlstate)
    if sqlstate and sqlstate.startswith("22"):  # data exceptions: bad enum label, SRID mismatch, overflow …
        return InvalidData(f"Invalid value: {message}" if message else "Invalid value.", sqlstate=sqlstate)
    if sqlstate == "42P01" and '"results.' in message:
        # a result's table dropped by another process (expired, dismissed) after this one looked the layer up
        return NotFound("These results have been deleted: they expired or their job was dismissed.")
    if is_unavailable(exc):
        return DatabaseUnavailable("The database is not reachable.")
    log.error("database error %s: %s", sqlstate, message or type(exc).__name__)  # server log only
    return DatabaseUnavailable("The database failed to process the request.")


@asynccontextmanager
async def translated_errors() -> AsyncIterator[None]:
    """Context manager for the repository boundary: driver errors become DomainErrors."""
    try:
        yield
    except DomainError:
        raise
    except (DBAPIError, asyncpg.PostgresError, OSError, ConnectionError) as exc:
        raise translate_db_error(exc) from exc


def execute_sql_script(connection: Connection, sql: str) -> None:
    """Run a multi-statement SQL script on a (sync-facade) connection inside its current transaction.

    SQLAlchemy's asyncpg adapter prepares every statement, and a prepared statement holds only one
    command, so the script goes to asyncpg's simple-query ``execute`` directly. A trivial statement
    first makes the adapter open its transaction, so the script runs inside it (all or nothing).
    """
    connection.exec_driver_sql("SELECT 1")
    adapted = connection.connection.dbapi_connection
    adapted.await_(connection.connection.driver_connection.execute(sql))  # type: ignore[union-attr]
