"""SQL for whole regions: replace a region's rows in one transaction, fingerprint them, list them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import translated_errors
from app.models.orm import Region

# Tables holding a region's data, in load order; each is fingerprinted in primary-key order.
# These are fixed identifiers of our own schema, never user input.
REGION_TABLES: dict[str, str] = {
    "admin_unit": "code",
    "village": "code",
    "household": "hh_id",
    "person": "person_id",
    "project": "project_id",
    "project_beneficiary": "project_id, hh_id, year, benefit_type",
    "facility": "fac_id",
}
_REGION_FILTER = {
    "project_beneficiary": "project_id IN (SELECT project_id FROM project WHERE region_id = :region_id)",
}
_CHECKSUM_SQL = {
    name: text(
        "SELECT count(*) AS n, coalesce(md5(string_agg(t::text, E'\\n' ORDER BY " + pk + ")), '') AS md5 "
        "FROM " + name + " AS t WHERE " + _REGION_FILTER.get(name, "region_id = :region_id")
    )
    for name, pk in REGION_TABLES.items()
}


def _encode_geometry(g: BaseGeometry) -> bytes:
    return shapely.to_wkb(g, include_srid=True) if shapely.get_srid(g) else shapely.to_wkb(
        shapely.set_srid(g, 4326), include_srid=True
    )


async def _driver_connection(session: AsyncSession) -> Any:
    """The asyncpg connection behind the session, inside the session's open transaction."""
    conn = await session.connection()
    await conn.execute(text("SELECT 1"))  # make sure the adapter's transaction has begun
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    # PostGIS's binary input accepts EWKB, so COPY can send shapely geometries directly.
    await driver.set_type_codec(
        "geometry", schema="public", encoder=_encode_geometry, decoder=shapely.from_wkb, format="binary"
    )
    return driver


async def replace_region(session: AsyncSession, region: dict[str, Any]) -> None:
    """Delete the region (cascading to all its rows) and insert its row afresh."""
    async with translated_errors():
        await session.execute(delete(Region).where(Region.region_id == region["region_id"]))
        values = {("metadata_" if k == "metadata" else k): v for k, v in region.items()}
        await session.execute(insert(Region).values(**values))


async def copy_rows(
    session: AsyncSession, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """Bulk-load rows with COPY (binary). Dicts become JSON text; geometries become EWKB."""
    if table not in REGION_TABLES:
        raise ValueError(f"not a region table: {table}")
    driver = await _driver_connection(session)
    json_idx = [i for i, c in enumerate(columns) if c in ("properties", "budget_by_level", "metadata")]

    def prepared() -> Iterable[tuple[Any, ...]]:
        for row in rows:
            if json_idx:
                row = list(row)
                for i in json_idx:
                    row[i] = json.dumps(row[i], ensure_ascii=False, sort_keys=True)
            yield tuple(row)

    async with translated_errors():
        result = await driver.copy_records_to_table(table, records=prepared(), columns=list(columns))
    return int(result.split()[-1])


async def region_fingerprint(session: AsyncSession, region_id: str) -> dict[str, tuple[int, str]]:
    """Row count and MD5 of the text form of every row, per table, in primary-key order."""
    out = {}
    async with translated_errors():
        for name, stmt in _CHECKSUM_SQL.items():
            row = (await session.execute(stmt, {"region_id": region_id})).one()
            out[name] = (int(row.n), row.md5)
    return out


async def region_exists(session: AsyncSession, region_id: str) -> bool:
    async with translated_errors():
        return bool(await session.scalar(select(func.count()).where(Region.region_id == region_id)))


async def analysis_crs_of(conn: Any, region_ids: Sequence[str]) -> dict[str, int]:
    """The declared metric CRS (EPSG code) of each region named."""
    rows = await conn.execute(text("SELECT region_id, analysis_crs FROM region WHERE region_id = ANY(:ids)"),
                              {"ids": list(region_ids)})
    return {r[0]: int(r[1]) for r in rows}


async def regions_at(conn: Any, lon: float, lat: float) -> list[tuple[str, int]]:
    """(region, analysis CRS) of the regions whose administrative areas contain the point."""
    rows = await conn.execute(text(
        "SELECT DISTINCT r.region_id, r.analysis_crs FROM region r JOIN admin_unit a ON a.region_id = r.region_id "
        "WHERE a.geom && ST_SetSRID(ST_MakePoint(:lon, :lat), 4326) "
        "AND ST_Intersects(a.geom, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)) ORDER BY 1"),
        {"lon": lon, "lat": lat})
    return [(r[0], int(r[1])) for r in rows]
