"""Mapbox Vector Tiles built by PostGIS (``ST_AsMVTGeom`` and ``ST_AsMVT``), one statement per collection and tile.

A tile reads the same rows the features API reads: the collection's source, its role-dependent geometry (households
at their displaced points for analysts), and the items query's filters (CQL2, ``datetime``, equality) with the tile's
lon/lat bounds, widened by the tile buffer, as the bbox. So no zoom level can show a feature, a property or a
position that ``/items`` hides, and a tile's ids are the ids ``items?bbox=`` returns for that box (up to
``max_features``, as in tipg and pg_tileserv).

Statements are compiled once per query shape and tile settings, like the items pages; the tile bounds, the
simplification tolerance and the filter values are parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import BigInteger, Float, Text, cast, func, literal_column, select, true
from sqlalchemy.sql.elements import ColumnElement

from app.db import TILE_SESSION, ReadPool, translated_errors
from app.layers.catalog import Layer, Prop
from app.layers.cql2 import ID_NAME
from app.layers.query import ItemsQuery
from app.layers.tms import TileGrid
from app.models.codes import Role
from app.repositories.features import (
    Compiled,
    Shape,
    compile_stmt,
    const_text,
    role_key,
    selected_props,
    shape_and_values,
    versions_expr,
    where_clauses,
)
from app.repositories.features import (
    _param as param,
)

GEOM_COLUMN = "mvt_geom"
FID_COLUMN = "mvt_fid"
_POINTS = ("Point", "MultiPoint")


@dataclass(frozen=True)
class TileSpec:
    """What a tile statement depends on besides the query: the grid's CRS and the MVT settings."""

    srid: int
    extent: int
    buffer: int
    simplify: bool  # lines and polygons: simplified to one grid unit of the zoom (Douglas-Peucker)


@dataclass(frozen=True)
class Tile:
    grid: TileGrid
    z: int
    row: int
    col: int


def _mvt_value(prop: Prop) -> ColumnElement[Any]:
    """A property as an MVT value: integers, doubles and booleans keep their type; the rest is text (arrays and
    objects as JSON), since MVT has no other types."""
    kind = prop.schema.get("type")
    if kind == "integer":
        return cast(prop.expr, BigInteger)
    if kind == "number":
        return cast(prop.expr, Float)
    if kind == "boolean":
        return prop.expr
    if kind in ("array", "object"):
        return cast(func.to_json(prop.expr), Text)
    return cast(prop.expr, Text)


def integer_id(layer: Layer) -> bool:
    """Whether the collection's ids are the tile's feature ids (integers); otherwise they are the property ``id``."""
    return layer.id_schema.get("type") == "integer"


def mvt_type(prop_schema: dict[str, Any]) -> str:
    """The TileJSON ``fields`` type of a property (Number, Boolean or String)."""
    kind = prop_schema.get("type")
    return {"integer": "Number", "number": "Number", "boolean": "Boolean"}.get(str(kind), "String")


@lru_cache(maxsize=1024)
def tile_sql(shape: Shape, role: Role | None, spec: TileSpec) -> Compiled:
    """One row: the collection's MVT layer for the tile (an empty bytea when nothing falls in it) and the version of
    the tables it reads."""
    layer = shape.layer
    geom = layer.geometry(role)
    assert geom is not None
    if spec.simplify:
        geom = func.ST_Simplify(geom, param("tol", Float))
    if spec.srid != 4326:
        geom = func.ST_Transform(geom, spec.srid)
    env = func.ST_MakeEnvelope(*(param(f"t_{i}", Float) for i in range(4)), spec.srid)
    mvt_geom = func.ST_AsMVTGeom(geom, func.Box2D(env), literal_column(str(spec.extent)),
                                 literal_column(str(spec.buffer)), true())
    cols: list[ColumnElement[Any]] = []
    integer_ids = integer_id(layer)
    if integer_ids:  # MVT feature ids are unsigned integers: the collection's own ids where they are integers
        cols.append(cast(layer.id_expr, BigInteger).label(FID_COLUMN))
    elif layer.prop(ID_NAME) is None:  # text ids travel as the property "id"
        cols.append(cast(layer.id_expr, Text).label(ID_NAME))
    cols += [_mvt_value(p).label(p.name) for p in selected_props(layer, shape.props)]
    # in id order: a tile denser than the limit holds the same features every time (its ETag stays honest), and a
    # dense tile stops reading after ``limit`` rows of the id index
    rows = (select(*cols, mvt_geom.label(GEOM_COLUMN)).select_from(layer.source)
            .where(*where_clauses(shape, role)).order_by(layer.id_expr).limit(shape.limit).subquery("t"))
    args = [literal_column("t"), const_text(layer.id), literal_column(str(spec.extent)), const_text(GEOM_COLUMN)]
    if integer_ids:
        args.append(const_text(FID_COLUMN))
    mvt = select(func.ST_AsMVT(*args)).select_from(rows).where(rows.c[GEOM_COLUMN].isnot(None)).scalar_subquery()
    return compile_stmt(select(mvt.label("tile"), versions_expr(layer).label("v")))


def tile_query(q: ItemsQuery, tile: Tile, buffer: int, extent: int, max_features: int) -> ItemsQuery:
    """The items query of a tile: the request's filters, the tile's lon/lat bounds with the buffer as the bbox."""
    box = tile.grid.lonlat_bounds(tile.z, tile.row, tile.col, buffer / extent)
    return ItemsQuery(bbox=box, interval=q.interval, equals=q.equals, filter=q.filter, properties=q.properties,
                      limit=max_features)


async def fetch_tile(pool: ReadPool, layer: Layer, role: Role | None, q: ItemsQuery, tile: Tile, extent: int,
                     buffer: int, max_features: int) -> tuple[bytes, int]:
    """The MVT layer of ``layer`` in ``tile`` (b"" when empty) and the tables' version."""
    tq = tile_query(q, tile, buffer, extent, max_features)
    shape, values = shape_and_values(layer, role, tq)
    spec = TileSpec(tile.grid.srid, extent, buffer, layer.geometry_type not in _POINTS)
    values.update({f"t_{i}": v for i, v in enumerate(tile.grid.bounds(tile.z, tile.row, tile.col))})
    if spec.simplify:
        values["tol"] = tile.grid.degrees_per_unit(tile.z, tile.row, tile.col, extent)
    c = tile_sql(shape, role_key(layer, role), spec)
    async with translated_errors():
        row = await pool.fetchrow(c.sql, *c.args(values), custom_plans=TILE_SESSION)
    return bytes(row["tile"] or b""), int(row["v"])


@lru_cache(maxsize=256)
def versions_sql(layers: tuple[Layer, ...]) -> Compiled:
    """The versions of the tables each layer reads, in one row (a dataset tile's validator in one round trip)."""
    return compile_stmt(select(*(versions_expr(lyr).label(f"v{i}") for i, lyr in enumerate(layers))))


async def current_versions(pool: ReadPool, layers: Sequence[Layer]) -> tuple[int, ...]:
    c = versions_sql(tuple(layers))
    async with translated_errors():
        row = await pool.fetchrow(c.sql, *c.args({}))
    return tuple(int(v) for v in row.values())
