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
    "household_history": "hh_id, valid_from",
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


async def driver_connection(session: AsyncSession) -> Any:
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
    driver = await driver_connection(session)
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


async def region_exists(conn: AsyncSession | Any, region_id: str) -> bool:
    """Whether the region exists (a session or a connection: both answer ``scalar``)."""
    async with translated_errors():
        return bool(await conn.scalar(select(func.count()).where(Region.region_id == region_id)))


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


# Names of the administrative levels as result columns (a region's own names of them are in its metadata).
LEVEL_COLUMNS = {0: "country", 1: "province", 2: "prefecture", 3: "county", 4: "township", 5: "village"}

_ANCESTRY = text("""
WITH RECURSIVE up AS (
  SELECT a.code AS unit, a.name, a.level, a.parent_code, 0 AS depth FROM admin_unit a WHERE a.code = ANY(:codes)
  UNION ALL
  SELECT up.unit, p.name, p.level, p.parent_code, up.depth + 1 FROM up JOIN admin_unit p ON p.code = up.parent_code
  WHERE up.depth < 6
) SELECT unit, name, level, depth FROM up
""")


async def admin_ancestry(conn: Any, codes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """For each code of an administrative unit: its ``name``, ``level`` and the names of its ancestors by level
    (``{"county": …, "township": …}``)."""
    out: dict[str, dict[str, Any]] = {}
    if not codes:
        return out
    for unit, name, level, depth in await conn.execute(_ANCESTRY, {"codes": list(codes)}):
        entry = out.setdefault(unit, {"ancestors": {}})
        if depth == 0:
            entry["name"], entry["level"] = name, level
        else:
            entry["ancestors"][LEVEL_COLUMNS.get(level, f"level_{level}")] = name
    return out


# ------------------------------------------------------------------------------------------ regions as a resource
_REGION_ROWS = text(
    "SELECT r.region_id, r.name, r.country, r.code_system, r.analysis_crs, r.poverty_line::float8 AS poverty_line, "
    "r.currency, r.poverty_line_note, r.default_year, r.description, r.attribution, r.metadata, r.created_at, "
    "r.monitoring_line_factor::float8 AS monitoring_line_factor "
    "FROM region r WHERE (CAST(:id AS text) IS NULL OR r.region_id = :id) ORDER BY r.region_id")
_REGION_COUNTS = text("""
SELECT r.region_id,
  (SELECT count(*) FROM village v WHERE v.region_id = r.region_id) AS villages,
  (SELECT count(*) FROM household h, (SELECT max(valid_from) AS at FROM household WHERE region_id = r.region_id) s
     WHERE h.region_id = r.region_id AND h.valid_from <= s.at AND (h.valid_to IS NULL OR h.valid_to > s.at))
     AS households,  -- in the latest registry snapshot, as the village-poverty layer counts them
  (SELECT count(*) FROM project p WHERE p.region_id = r.region_id) AS projects,
  (SELECT count(*) FROM facility f WHERE f.region_id = r.region_id) AS facilities,
  (SELECT jsonb_object_agg(level, n) FROM (SELECT level, count(*) AS n FROM admin_unit a
     WHERE a.region_id = r.region_id GROUP BY level) l) AS admin_units,
  (SELECT ARRAY[ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)] FROM (SELECT ST_Extent(coalesce(a.geom, v.geom_point))
     AS e FROM admin_unit a LEFT JOIN village v ON v.code = a.code WHERE a.region_id = r.region_id) x) AS bbox
FROM region r WHERE (CAST(:id AS text) IS NULL OR r.region_id = :id)
""")
_REGION_PERIODS = text("""
SELECT
  (SELECT array_agg(DISTINCT y ORDER BY y) FROM (
     SELECT extract(year FROM valid_from)::int AS y FROM household WHERE region_id = :id
     UNION SELECT extract(year FROM valid_from)::int FROM household_history WHERE region_id = :id) ys) AS registry,
  (SELECT array_agg(m ORDER BY m) FROM (
     SELECT DISTINCT to_char(lower(period), 'YYYY-MM') AS m FROM telecom_agg WHERE region_id = :id
     UNION SELECT to_char(lower(period), 'YYYY-MM') FROM telecom_od WHERE region_id = :id) ms) AS telecom,
  n.needs_runs, n.needs_latest
FROM (SELECT count(*) AS needs_runs, max(finished) AS needs_latest FROM analysis_run
      WHERE kind = 'process:needs-assessment' AND status = 'successful'
        AND params->'inputs'->'households'->>'region' = :id) n
""")


async def regions(conn: Any, region_id: str | None = None) -> list[dict[str, Any]]:
    """Every region (or one) with its counts and extent."""
    rows = [dict(r) for r in (await conn.execute(_REGION_ROWS, {"id": region_id})).mappings()]
    counts = {r["region_id"]: dict(r) for r in (await conn.execute(_REGION_COUNTS, {"id": region_id})).mappings()}
    for r in rows:
        r["metadata"] = r["metadata"] if isinstance(r["metadata"], dict) else json.loads(r["metadata"] or "{}")
        r["counts"] = counts.get(r["region_id"], {})
    return rows


async def region_periods(conn: Any, region_id: str) -> dict[str, Any]:
    """The periods present for each kind of data: registry years, telecom months, needs-assessment runs."""
    row = (await conn.execute(_REGION_PERIODS, {"id": region_id})).mappings().one()
    return {"registry_years": list(row["registry"] or []), "telecom_months": list(row["telecom"] or []),
            "needs_runs": {"count": int(row["needs_runs"] or 0),
                           "latest": row["needs_latest"].isoformat() if row["needs_latest"] else None}}


async def find_region(conn: Any, given: str) -> str | None:
    """The id of the region named ``given``: its id, or (exactly, any case) its display name when only one region
    bears it."""
    if await region_exists(conn, given):
        return given
    ids = list((await conn.execute(text("SELECT region_id FROM region WHERE lower(name) = lower(:n)"),
                                   {"n": given.strip()})).scalars())
    return ids[0] if len(ids) == 1 else None


async def known_regions(conn: Any) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in await conn.execute(text("SELECT region_id, name FROM region ORDER BY region_id"))]
