"""SQL for the results of executions: their tables (written by COPY), registering them as collections (through
:func:`app.repositories.layers.register_layer`, like ``tpa layers publish``), listing them, keeping them longer,
publishing and unpublishing them, and deleting them when they expire."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import orjson
import shapely
from sqlalchemy import text

from app.errors import InvalidData, NotFound

_LIST = text("""
SELECT r.run_id, substring(r.kind FROM 9) AS process, r.owner, r.params->>'owner_name' AS owner_name, r.created,
  r.expires, r.pruned, count(p.layer_id) AS layers, count(p.layer_id) FILTER (WHERE p.listed) AS listed,
  coalesce(array_agg(p.layer_id ORDER BY p.layer_id) FILTER (WHERE p.layer_id IS NOT NULL), '{}') AS layer_ids
FROM analysis_run r LEFT JOIN published_layer p ON p.run_id = r.run_id
WHERE r.kind LIKE 'process:%' AND r.status = 'successful' AND (:pruned OR r.pruned IS NULL)
GROUP BY r.run_id ORDER BY r.created DESC LIMIT :limit
""")


async def list_results(conn: Any, include_pruned: bool = False, limit: int = 200) -> list[dict[str, Any]]:
    return [dict(r) for r in (await conn.execute(_LIST, {"pruned": include_pruned, "limit": limit})).mappings()]


async def keep_results(conn: Any, job: str, until: dt.datetime | None) -> dt.datetime | None:
    """Set when a job's results expire (None: kept until deleted); refused for results already deleted."""
    try:
        run_id = uuid.UUID(job)
    except ValueError:
        raise NotFound(f"There is no job '{job}'.") from None
    row = (await conn.execute(text("SELECT pruned FROM analysis_run WHERE run_id = :id AND kind LIKE 'process:%'"),
                              {"id": run_id})).first()
    if row is None:
        raise NotFound(f"There is no job '{job}'.")
    if row.pruned is not None:
        raise InvalidData(f"The results of the job '{job}' were deleted on {row.pruned:%Y-%m-%d %H:%M}.")
    await conn.execute(text("UPDATE analysis_run SET expires = :until, updated = now() WHERE run_id = :id"),
                       {"until": until, "id": run_id})
    return until


async def set_listed(conn: Any, layer_id: str, listed: bool, keep_for: dt.timedelta) -> uuid.UUID:
    """Publish (list in /collections, keep until unpublished) or unpublish a job's result collection; unpublished,
    the job's results expire ``keep_for`` from now unless another of its collections is still published."""
    run_id = await conn.scalar(text("UPDATE published_layer SET listed = :listed WHERE layer_id = :id "
                                    "AND run_id IS NOT NULL RETURNING run_id"), {"listed": listed, "id": layer_id})
    if run_id is None:
        raise NotFound(f"There is no result collection '{layer_id}' (see `tpa results list`).")
    if listed:
        await conn.execute(text("UPDATE analysis_run SET expires = NULL, updated = now() WHERE run_id = :id"),
                           {"id": run_id})
    else:
        await conn.execute(text(
            "UPDATE analysis_run SET expires = now() + :keep, updated = now() WHERE run_id = :id AND NOT EXISTS "
            "(SELECT 1 FROM published_layer WHERE run_id = :id AND listed)"), {"id": run_id, "keep": keep_for})
    return run_id


async def is_result(conn: Any, layer_id: str) -> bool:
    return bool(await conn.scalar(text("SELECT 1 FROM published_layer WHERE layer_id = :id AND run_id IS NOT NULL"),
                                  {"id": layer_id}))


# --------------------------------------------------------------------------------------------- result tables
class ResultRows(Protocol):
    """What a result table is written from (a process's ``LayerOut``): ids, typed columns, geometries."""

    ids: Sequence[Any]
    columns: Mapping[str, tuple[str, Any]]  # name → (PostgreSQL type, values)
    geoms: np.ndarray | None


def _column_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9_]", "_", name.lower())[:50] or "value"
    if not re.match(r"[a-z_]", base):
        base = "_" + base
    out, i = base, 1
    while out in taken or out in ("fid", "geom"):
        i += 1
        out = f"{base}_{i}"
    taken.add(out)
    return out


def _geometry_type(geoms: np.ndarray) -> str:
    names = {shapely.get_type_id(g) for g in geoms}
    kinds = {0: "Point", 1: "LineString", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString", 6: "MultiPolygon"}
    if len(names) == 1 and next(iter(names)) in kinds:
        return kinds[next(iter(names))]
    return "Geometry"


async def write_table(conn: Any, table: str, layer: ResultRows) -> None:
    taken: set[str] = set()
    cols = [(_column_name(name, taken), pg, values) for name, (pg, values) in layer.columns.items()]
    ddl = ", ".join(f'"{c}" {pg}' for c, pg, _ in cols)
    geom_sql = ""
    if layer.geoms is not None:
        geom_sql = f", geom geometry({_geometry_type(layer.geoms)}, 4326)"
    await conn.execute(text(f'CREATE TABLE results."{table}" (fid text PRIMARY KEY{", " + ddl if ddl else ""}'
                            f"{geom_sql})"))
    cols = [(c, pg, _values(pg, values)) for c, pg, values in cols]
    if layer.ids:
        await _copy_rows(conn, table, layer, cols)
    if layer.geoms is not None:
        await conn.execute(text(f'CREATE INDEX ON results."{table}" USING gist (geom)'))


def _values(pg: str, values: Any) -> list[Any]:
    """A column as Python values for COPY: arrays to lists (NaN and ±inf → null), JSON text for json(b)."""
    if isinstance(values, np.ndarray):
        out = values.tolist()
        if values.dtype.kind == "f":
            for i in np.flatnonzero(~np.isfinite(values)):
                out[i] = None
        return out
    if pg in ("json", "jsonb"):
        return [v if v is None or isinstance(v, str) else orjson.dumps(v).decode() for v in values]
    return list(values)


async def _copy_rows(conn: Any, table: str, layer: ResultRows, cols: list[tuple[str, str, list[Any]]]) -> None:
    """Rows by COPY (asyncpg, binary): ten times faster than INSERTs for the large Stage 2 layers. asyncpg has
    no codec for PostGIS types, so one passing EWKB through as bytes is set for the COPY and removed after
    (the connection goes back to the pool as it was)."""
    names = ["fid"] + [c for c, _, _ in cols]
    columns = [list(layer.ids)] + [values for _, _, values in cols]
    geom = layer.geoms is not None
    if geom:
        names.append("geom")
        columns.append(list(shapely.to_wkb(shapely.set_srid(layer.geoms, 4326), include_srid=True)))
    raw = (await conn.get_raw_connection()).driver_connection
    if geom:
        await raw.set_type_codec("geometry", schema="public", format="binary", encoder=bytes, decoder=bytes)
    try:
        await raw.copy_records_to_table(table, schema_name="results", records=zip(*columns, strict=True),
                                        columns=names)
    finally:
        if geom:
            await raw.reset_type_codec("geometry", schema="public")


async def drop_results(conn: Any, run_ids: list[uuid.UUID]) -> int:
    """Delete the result collections of these jobs and their tables (in the caller's transaction)."""
    tables = (await conn.execute(text(
        "DELETE FROM published_layer WHERE run_id = ANY(:ids) RETURNING schema_name, table_name"),
        {"ids": run_ids})).all()
    for schema, table in tables:
        await conn.execute(text(f'DROP TABLE IF EXISTS "{schema}"."{table}"'))
    return len(tables)


async def prune_expired(engine: Any, now: dt.datetime | None = None, limit: int = 500) -> tuple[int, int]:
    """Delete the results of jobs whose expiry has passed (as of ``now``): their tables and collections. The job
    stays, marked ``pruned`` (its results answer 404 "expired"). Returns (jobs, tables)."""
    jobs_done = tables_done = 0
    while True:
        async with engine.begin() as conn:
            ids = list((await conn.execute(text(
                "SELECT run_id FROM analysis_run WHERE pruned IS NULL AND expires <= coalesce(:now, now()) "
                "ORDER BY expires LIMIT :limit FOR UPDATE SKIP LOCKED"), {"now": now, "limit": limit})).scalars())
            if not ids:
                return jobs_done, tables_done
            tables_done += await drop_results(conn, ids)
            await conn.execute(text("UPDATE analysis_run SET pruned = now(), updated = now() WHERE run_id = ANY(:ids)"),
                               {"ids": ids})
            jobs_done += len(ids)
