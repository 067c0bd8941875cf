"""Helpers for the tests: throwaway PostGIS databases and an ASGI client (no mocks).

The server comes from TEST_DATABASE_URL or DATABASE_URL (default: local PostgreSQL); the tests
create ``tpa_test_<random>`` databases on it and drop them at the end. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TypeVar

import asyncpg
import httpx

# secrets come only from the environment (no built-in values): the suite and the benches have their own
os.environ.setdefault("TPA_JITTER_KEY", "jitter key of the test suite only")

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


@contextmanager
def published_tables(label: str, statements: Sequence[str],
                     publish: Sequence[tuple[str, str, str | None]]) -> Iterator[ThrowawayDatabase]:
    """A migrated throwaway database where ``statements`` ran (in one transaction) and the tables ``publish``
    names — (table, title, datetime column) — are published as collections of the same id."""
    from app.db import create_engine, create_sessionmaker
    from app.repositories.layers import publish_table

    with ThrowawayDatabase(label) as db:
        db.upgrade()

        async def build() -> None:
            eng = create_engine(DatabaseSettings(url=db.url))
            try:
                async with eng.begin() as conn:
                    for sql in statements:
                        await conn.exec_driver_sql(sql)
                async with create_sessionmaker(eng)() as s, s.begin():
                    for table, title, when in publish:
                        await publish_table(s, "public", table, table, title, None, when, None)
            finally:
                await eng.dispose()

        run_async(build())
        yield db


def build_demo_template() -> str:
    """A new database holding the demo region (seed 42), migrated; its name. The caller drops it."""
    from app.db import create_engine, create_sessionmaker
    from app.services.demo import load_demo

    db = ThrowawayDatabase("template").__enter__()

    async def load() -> None:
        eng = create_engine(DatabaseSettings(url=db.url))
        try:
            await load_demo(create_sessionmaker(eng), 42)
        finally:
            await eng.dispose()

    try:
        db.upgrade()
        run_async(load())
    except BaseException:
        db.__exit__()
        raise
    return db.name


def drop_database(name: str) -> None:
    """Drop a database made by :class:`ThrowawayDatabase` and kept beyond its block (a template shared by workers)."""
    run_async(_drop_db(name))


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


def tpa_cli(db: ThrowawayDatabase, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the ``tpa`` command against ``db`` (as a user would: a new process); asserts success unless told."""
    import sys

    env = {**os.environ, "DATABASE_URL": db.url, "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, cwd=Path(__file__).resolve().parent.parent,
                          capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


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
def serve(database_url: str, workers: int = 1, extra_env: dict[str, str] | None = None,
          log_path: str | None = None) -> Iterator[str]:
    """Run the service under uvicorn against ``database_url`` on a free loopback port; yield its base URL.
    Its log goes to ``log_path`` (else a temporary file), never to a pipe that could fill and stall it."""
    import subprocess
    import sys
    import tempfile
    import time

    import httpx as _httpx

    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "TPA_LOG_LEVEL": "WARNING", **(extra_env or {})}
    log = open(log_path, "w+b") if log_path else tempfile.TemporaryFile()  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--host", "127.0.0.1", "--port",
         str(port), "--workers", str(workers), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=log,
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
                log.seek(0)
                raise RuntimeError(f"server did not start: {log.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class PrivateCluster:
    """A PostgreSQL cluster of this test run alone (``initdb`` on a free loopback port), so a test can stop and
    restart the server under the service without touching the machine's own PostgreSQL. Runs as the
    ``postgres`` system user when the tests run as root (as in CI)."""

    def __init__(self, standby_of: PrivateCluster | None = None) -> None:
        import glob
        import tempfile

        self.standby_of = standby_of  # a streaming replica of that cluster, made by pg_basebackup

        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise RuntimeError("initdb not found (Debian's postgresql server package)")
        self.bin = Path(bins[-1]).parent
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tpa-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str, check: bool = True) -> None:
        import subprocess

        cmd = [str(a) for a in args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stdout}{done.stderr}")

    def __enter__(self) -> PrivateCluster:
        if self._as_postgres:
            import shutil

            shutil.chown(self.dir, "postgres", "postgres")
        if self.standby_of is None:
            self._run(self.bin / "initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        else:  # -R writes primary_conninfo and standby.signal; -X stream copies the WAL written meanwhile
            self._run(self.bin / "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.standby_of.port), "-U",
                      "postgres", "-D", self.data, "-R", "-X", "stream", "-c", "fast", "--no-sync")
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import shutil

        self._run(self.bin / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off")
        self._run(self.bin / "pg_ctl", "-D", self.data, "-l", self.log, "-o", opts, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(self.bin / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement with psql; its output, unaligned."""
        import subprocess

        done = subprocess.run([str(self.bin / "psql"), "-X", "-At", "-h", "127.0.0.1", "-p", str(self.port), "-U",
                               "postgres", "-d", database, "-c", statement], capture_output=True, text=True,
                              timeout=60, check=True)
        return done.stdout.strip()

    def copy_database(self, source_url: str, name: str, exclude_data: tuple[str, ...] = ()) -> str:
        """Copy a database of the machine's cluster into this one (pg_dump | pg_restore); returns its URL."""
        import subprocess

        subprocess.run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                        name], check=True, timeout=60)
        dump = subprocess.Popen([str(self.bin / "pg_dump"), "-Fc", "--no-owner",
                                 *[f"--exclude-table-data={t}" for t in exclude_data], source_url],
                                stdout=subprocess.PIPE)
        restore = subprocess.run([str(self.bin / "pg_restore"), "--no-owner", "-d", self.url(name)],
                                 stdin=dump.stdout, capture_output=True, text=True, timeout=600)
        dump.wait(60)
        if dump.returncode != 0 or restore.returncode != 0:
            raise RuntimeError(f"copy failed: {restore.stderr[-2000:]}")
        return self.url(name)


CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/ensure-test-tools.sh); Playwright only drives it
SCREENSHOTS = Path(os.environ.get("TPA_SCREENSHOT_DIR")
                   or Path(__file__).resolve().parent.parent / ".tpa" / "screenshots")


@contextmanager
def chromium() -> Iterator[object]:
    """Headless Chromium from Debian's packages under Playwright (its own browser download is not used)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # SwiftShader: WebGL without a GPU, so MapLibre maps draw in headless runs
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--use-angle=swiftshader",
                                                                    "--enable-unsafe-swiftshader"])
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: object, name: str) -> Path:
    """Keep what a person would have seen (``.tpa/screenshots/``, not in git)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    return path


if __name__ == "__main__":  # make test: one demo template for both pytest runs and all their workers
    import sys

    if sys.argv[1:] == ["demo-template"]:
        print(build_demo_template())
    elif len(sys.argv) == 3 and sys.argv[1] == "drop":
        drop_database(sys.argv[2])
    else:
        raise SystemExit("usage: tpa_testing.py demo-template | drop NAME")
