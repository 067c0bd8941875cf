"""Alembic environment: async engine on the URL from app.settings (or the config's sqlalchemy.url)."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.models.orm import Base
from app.settings import DatabaseSettings, to_asyncpg_url

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    return to_asyncpg_url(url) if url else DatabaseSettings().url


def _include_object(obj, name, type_, reflected, compare_to):  # noqa: ANN001
    # PostGIS owns these.
    return not (type_ == "table" and name in {"spatial_ref_sys"})


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=_include_object,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        # one migration at a time: replicas of the service started together each run `tpa db upgrade`; the others
        # wait here, then find the database at head (the version is read after the lock) and do nothing
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7210411)")
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_async_engine(_url(), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(run_async_migrations())
