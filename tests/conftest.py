"""Fixtures: a throwaway PostGIS database per run, migrated with Alembic; sessions; an ASGI client."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from tpa_testing import (
    ThrowawayDatabase,
    build_demo_template,
    client_for,
    drop_database,
    run_async,
    serve,
    settings_for,
)

from app.auth import create_key
from app.db import create_engine, create_sessionmaker
from app.models.codes import Role
from app.settings import DatabaseSettings, Settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))  # the load runner (bench/load.py)
# Tests compare numberMatched with their own counts: count within the request whatever the machine's load (on two
# busy cores a count of the demo can pass the default 250 ms budget). tests/test_counts.py sets budgets itself.
os.environ.setdefault("TPA_API_COUNT_BUDGET_MS", "0")
# Likewise the public figures: tests read them at the next request after an edit, however slow the machine
# (tests/test_portal_figures.py checks the background rebuild with its own setting).
os.environ.setdefault("TPA_API_FIGURES_WAIT_S", "120")


@pytest.fixture(scope="session")
def database() -> Iterator[ThrowawayDatabase]:
    """The run's main database, migrated to head."""
    with ThrowawayDatabase() as db:
        db.upgrade()
        yield db


@pytest.fixture
def throwaway_db() -> Iterator[ThrowawayDatabase]:
    """A fresh, empty (PostGIS only) database for one test."""
    with ThrowawayDatabase("x") as db:
        yield db


@pytest.fixture(scope="session")
def settings(database: ThrowawayDatabase) -> Settings:
    return settings_for(database.url)


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(settings.db)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session inside a transaction that is rolled back after the test."""
    async with engine.connect() as conn:
        trans = await conn.begin()
        sess = AsyncSession(bind=conn, expire_on_commit=False, join_transaction_mode="create_savepoint")
        try:
            yield sess
        finally:
            await sess.close()
            await trans.rollback()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(settings) as c:
        yield c


# --------------------------------------------------------------------------------------------- OGC API fixtures
@pytest.fixture(scope="session")
def demo_template() -> Iterator[str]:
    """The demo region (seed 42) loaded once; never connected to afterwards, so databases can be copied from it.
    ``make test`` builds it once for both of its pytest runs and all their workers (TPA_TEST_DEMO_TEMPLATE)."""
    shared = os.environ.get("TPA_TEST_DEMO_TEMPLATE")
    if shared:
        yield shared
        return
    name = build_demo_template()
    try:
        yield name
    finally:
        drop_database(name)


@pytest.fixture(scope="session")
def demo_database(demo_template: str) -> Iterator[ThrowawayDatabase]:
    """A database with the full demo region (seed 42), shared read-only by the API tests."""
    with ThrowawayDatabase("demo", template=demo_template) as db:
        yield db


@pytest.fixture(scope="session")
def demo_settings(demo_database: ThrowawayDatabase) -> Settings:
    return settings_for(demo_database.url)


def _make_keys(url: str) -> dict[Role, str]:
    async def make() -> dict[Role, str]:
        eng = create_engine(DatabaseSettings(url=url))
        try:
            out = {}
            for role in Role:
                async with create_sessionmaker(eng)() as s, s.begin():
                    out[role] = (await create_key(s, role, f"test {role.value}")).key
            return out
        finally:
            await eng.dispose()

    return run_async(make())


@pytest.fixture(scope="session")
def api_keys(demo_database: ThrowawayDatabase) -> dict[Role, str]:
    return _make_keys(demo_database.url)


@pytest.fixture(scope="module")
def edit_database(demo_template: str) -> Iterator[ThrowawayDatabase]:
    """A private copy of the demo for tests that write (the shared one stays read-only)."""
    with ThrowawayDatabase("edit", template=demo_template) as db:
        yield db


@pytest.fixture(scope="module")
def edit_keys(edit_database: ThrowawayDatabase) -> dict[Role, str]:
    return _make_keys(edit_database.url)


@pytest.fixture
async def editor(edit_database: ThrowawayDatabase) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(settings_for(edit_database.url)) as c:
        yield c


@pytest.fixture
async def api(demo_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(demo_settings) as c:
        yield c


@pytest.fixture(scope="session")
def live_server(demo_database: ThrowawayDatabase) -> Iterator[str]:
    """The service under uvicorn on a free loopback port (for GDAL, OWSLib and other real clients)."""
    with serve(demo_database.url) as url:
        yield url
