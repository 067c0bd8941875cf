"""Async engine and session factory, plus translation of driver errors into domain errors."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
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


# The primary's WAL position now, and what a standby has replayed, as byte counts (comparable numbers)
PRIMARY_LSN = "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"
STANDBY_LSN = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() - '0/0'::pg_lsn"


@dataclass
class Replica:
    """A streaming replica of the read path and what the last check saw of it."""

    name: str  # host:port, for logs and metrics (never the password)
    pool: asyncpg.Pool
    up: bool = False
    replayed: int = -1  # WAL position replayed at the last check
    reads: int = 0


class ReadPool:
    """The asyncpg pools of the read path with a bounded queue: a request waits at most ``queue_timeout`` for a
    connection, then gets 503 + Retry-After (:class:`ServiceBusy`) instead of waiting without bound behind the
    others. Other attributes (``close``, ``terminate``, ``get_size`` …) are the primary pool's own.

    With streaming replicas (``TPA_DB_READ_URLS``) reads go to them in turn, and to the primary when none is fit:
    a replica serves only when it is up and has replayed (1) everything this process's catalogue has seen change
    (``required_lsn``, raised by the catalogue when a table version moves), so no answer is older than the
    catalogue it is read under, and (2) what the primary had written ``max_lag_s`` ago. :func:`watch_replicas`
    checks them every second; a replica that fails is left out until a check finds it again."""

    def __init__(self, pool: asyncpg.Pool, queue_timeout: float, replicas: list[Replica] | None = None,
                 max_lag_s: float = 30.0) -> None:
        self._pool = pool
        self.queue_timeout = queue_timeout
        self.waiting = 0
        self.replicas = replicas or []
        self.max_lag_s = max_lag_s
        self.required_lsn = 0
        self.primary_reads = 0
        self._history: deque[tuple[float, int]] = deque()  # (monotonic time, primary LSN) of recent checks
        self._turn = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    @property
    def primary(self) -> ReadPool:
        """The same pool without the replicas: for a read that must see what was just written."""
        return ReadPool(self._pool, self.queue_timeout) if self.replicas else self

    @property
    def primary_position(self) -> int:
        """The primary's WAL position at the last check of the replicas (0 before the first)."""
        return self._history[-1][1] if self._history else 0

    def _lag_floor(self) -> int:
        """The primary's position ``max_lag_s`` ago (0 before the checks have seen that far back)."""
        cutoff = time.monotonic() - self.max_lag_s
        floor = 0
        for t, lsn in self._history:
            if t > cutoff:
                break
            floor = lsn
        return floor

    def _pick(self) -> Replica | None:
        if not self.replicas:
            return None
        need = max(self.required_lsn, self._lag_floor())
        n = len(self.replicas)
        for i in range(n):
            r = self.replicas[(self._turn + i) % n]
            if r.up and r.replayed >= need:
                self._turn = (self._turn + i + 1) % n
                return r
        return None

    async def require_current(self) -> None:
        """Reads from now on need what the primary has written so far (after a change this process saw)."""
        if self.replicas:
            self.required_lsn = max(self.required_lsn, int(await self._pool.fetchval(PRIMARY_LSN)))

    async def check_replicas(self) -> None:
        now = time.monotonic()
        self._history.append((now, int(await self._pool.fetchval(PRIMARY_LSN))))
        while len(self._history) > 2 and self._history[1][0] <= now - self.max_lag_s:
            self._history.popleft()
        for r in self.replicas:
            try:
                async with asyncio.timeout(2.0):
                    standby, replayed = await r.pool.fetchrow(STANDBY_LSN)
            except Exception as exc:  # down, or not answering: reads go elsewhere until a check finds it again
                if r.up:
                    log.warning("read replica %s left out: %s", r.name, type(exc).__name__)
                r.up = False
                continue
            if not standby:  # promoted: no longer a copy of this primary
                if r.up:
                    log.warning("read replica %s is not in recovery (promoted?); left out", r.name)
                r.up = False
                continue
            if not r.up:
                log.info("read replica %s in use (replayed %s)", r.name, replayed)
            r.up, r.replayed = True, int(replayed)

    @asynccontextmanager
    async def acquire(self, custom_plans: bool | str = False, primary: bool = False) -> AsyncIterator[
            asyncpg.Connection]:
        """A connection; ``custom_plans``: its statements are planned with their values until it goes back to the
        pool (see :data:`CUSTOM_PLANS`); a string: those session settings instead (e.g. :data:`TILE_SESSION`);
        ``primary``: never a replica (a read that must see this request's own writes)."""
        replica = None if primary else self._pick()
        conn = None
        if replica is not None:
            try:
                conn = await replica.pool.acquire(timeout=min(self.queue_timeout, 2.0))
                pool = replica.pool
                replica.reads += 1
            except Exception as exc:  # noqa: BLE001 (any failure to connect: the primary answers instead)
                log.warning("read replica %s unavailable (%s); reading from the primary", replica.name,
                            type(exc).__name__)
                replica.up, replica = False, None
        if conn is None:
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
            self.primary_reads += 1
        try:
            if custom_plans:  # undone by the pool's RESET ALL when the connection is released
                await conn.execute(custom_plans if isinstance(custom_plans, str) else CUSTOM_PLANS)
            yield conn
        except BaseException as exc:
            if is_unavailable(exc):  # broken mid-operation (server restart): never hand it out again
                conn.terminate()
                if replica is not None:  # the connection was the replica's
                    replica.up = False
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

    async def close(self) -> None:
        await asyncio.gather(self._pool.close(), *(r.pool.close() for r in self.replicas))

    def terminate(self) -> None:
        self._pool.terminate()
        for r in self.replicas:
            r.pool.terminate()


async def watch_replicas(read_pool: ReadPool, every_s: float = 1.0) -> None:
    """Check the read replicas' state and lag every ``every_s`` (a background task of each API process)."""
    while True:
        try:
            await read_pool.check_replicas()
        except Exception as exc:  # the primary away: replicas keep their last state; try again
            log.warning("checking read replicas failed: %s", type(exc).__name__)
        await asyncio.sleep(every_s)


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
    """The asyncpg pools of the OGC read path (compiled SQL, prepared per connection; cf. tipg): the primary's and
    one per read replica (``TPA_DB_READ_URLS``).

    ``min_size=0``: nothing connects until the first request, so an unreachable database does not stop
    the service from starting (``/readyz`` reports it).
    """
    # plan_cache_mode stays "auto" for the session; filtered statements ask for custom plans (CUSTOM_PLANS).
    # No JIT: its compilation (50-150 ms, measured on a zoom-10 tile of 500,000 households: 141 of 239 ms) is
    # triggered by cost estimates of statements that run in milliseconds; requests here are short by design.
    server_settings = {"application_name": "tpa-gis-read", "timezone": "UTC", "DateStyle": "ISO, YMD", "jit": "off"}
    if settings.statement_timeout_ms:
        server_settings["statement_timeout"] = str(settings.statement_timeout_ms)

    async def pool(url: str) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            libpq_dsn(url), min_size=0, max_size=settings.pool_size, timeout=settings.connect_timeout_s,
            server_settings=server_settings, max_inactive_connection_lifetime=300)

    replicas = []
    for url in settings.read_urls:
        u = make_url(url)
        replicas.append(Replica(f"{u.host}:{u.port or 5432}", await pool(url)))
    return ReadPool(await pool(settings.url), settings.pool_timeout_s, replicas, settings.read_max_lag_s)


async def create_limits_pool(settings: DatabaseSettings) -> asyncpg.Pool:
    """A small pool of the primary for the shared rate limits (``app.middleware.SharedLimits``): one short
    statement per request, kept apart from the requests' pools. Nothing connects before the first request."""
    return await asyncpg.create_pool(
        libpq_dsn(settings.url), min_size=0, max_size=4, timeout=settings.connect_timeout_s,
        server_settings={"application_name": "tpa-gis-limits", "synchronous_commit": "off"},
        max_inactive_connection_lifetime=300)


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
