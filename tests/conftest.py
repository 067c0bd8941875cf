"""Fixtures: a throwaway PostGIS database per run, migrated with Alembic; sessions; an ASGI client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from tpa_testing import ThrowawayDatabase, client_for, settings_for

from app.db import create_engine, create_sessionmaker
from app.settings import Settings


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
