"""SQL for API keys. Only SHA-256 hashes of keys are stored."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db import translated_errors
from app.models.orm import ApiKey


async def insert_key(
    session: AsyncSession, prefix: str, key_hash: str, role: str, name: str, expires: dt.datetime | None
) -> uuid.UUID:
    key_id = uuid.uuid4()
    async with translated_errors():
        session.add(ApiKey(key_id=key_id, prefix=prefix, key_hash=key_hash, role=role, name=name, expires=expires,
                           created=dt.datetime.now(dt.UTC)))
        await session.flush()
    return key_id


async def key_by_prefix(conn: AsyncConnection, prefix: str) -> ApiKey | None:
    stmt = select(ApiKey.key_hash, ApiKey.role, ApiKey.expires, ApiKey.revoked, ApiKey.name).where(
        ApiKey.prefix == prefix)
    async with translated_errors():
        row = (await conn.execute(stmt)).one_or_none()
    if row is None:
        return None
    return ApiKey(key_hash=row.key_hash, role=row.role, expires=row.expires, revoked=row.revoked, prefix=prefix,
                  name=row.name)


async def list_keys(session: AsyncSession) -> list[ApiKey]:
    async with translated_errors():
        return list((await session.scalars(select(ApiKey).order_by(ApiKey.created))).all())


async def revoke_key(session: AsyncSession, prefix: str) -> bool:
    stmt = (
        update(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked.is_(None))
        .values(revoked=dt.datetime.now(dt.UTC))
    )
    async with translated_errors():
        result = await session.execute(stmt)
    return bool(result.rowcount)
