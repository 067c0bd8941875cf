"""SQL for OGC API - Features: GeoJSON is built by PostGIS, one text value per feature.

Pages are read by key (``id > last`` in id order), so a page deep in a large collection costs about
what the first page costs; ``offset`` is still honoured. ``numberMatched`` is exact: counts are cached
per query and invalidated by ``table_version``, which a statement trigger bumps on every write.

Statements are built with SQLAlchemy Core from the layer definition, with bound parameters only, and
compiled once per *query shape* (layer, role variant, which filters are present); the compiled SQL is
then run on the read pool (asyncpg), which keeps a prepared statement per connection. Building and
compiling a 30-column GeoJSON expression on every request would cost more than the database does.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from threading import Lock
from typing import Any

import asyncpg
import orjson
from sqlalchemy import (
    Date,
    DateTime,
    Float,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from app.db import translated_errors
from app.models.codes import Role
from app.models.orm import TableVersion
from app.ogc.catalog import Layer, Prop
from app.ogc.params import Cursor, Interval

STREAM_BATCH = 500
_DIALECT = asyncpg_dialect(paramstyle="numeric_dollar")


@dataclass(frozen=True)
class ItemsQuery:
    bbox: tuple[float, float, float, float] | None = None
    interval: Interval | None = None
    equals: tuple[tuple[Prop, Any], ...] = ()
    limit: int = 10
    offset: int = 0
    cursor: Cursor | None = None

    def count_key(self, layer: Layer, role: Role | None) -> tuple[Any, ...]:
        return (layer.id, variant(layer, role), self.bbox, self.interval, tuple((p.name, v) for p, v in self.equals))


@dataclass
class Page:
    body: str  # the features' GeoJSON, comma-separated, in key order
    returned: int
    first_key: tuple[Any, ...] | None
    last_key: tuple[Any, ...] | None
    more_after: bool
    more_before: bool
    version: int


def variant(layer: Layer, role: Role | None) -> str:
    """Which geometry a role sees: the true one, or the displaced one for restricted point layers."""
    return "true" if layer.geom_for_role is None or role == Role.admin else "displaced"


# --------------------------------------------------------------------------------------------- expressions
def _const(text: str) -> ColumnElement[str]:
    """A SQL string constant (our own JSON fragments and property names), inlined rather than bound so
    each execution sends only the request's values. Quotes are doubled; standard_conforming_strings is on
    (the PostgreSQL default), so backslashes are not special."""
    return literal_column("'" + text.replace("'", "''") + "'", Text)


def _json_value(prop: Prop) -> ColumnElement[str]:
    """JSON text of one property value, by its declared type.

    Hand-rolled on purpose: concatenating typed text is about 30 % cheaper for PostgreSQL than
    ``json_build_object`` (measured on the benchmark's households), and building GeoJSON is most of
    what a features request costs. Numbers that JSON cannot express (NaN, ±Infinity) become null;
    strings, enums, arrays, objects and date-times go through ``to_json`` for correct escaping; dates
    print as ISO (the read pool sets DateStyle to ISO).
    """
    e = prop.expr
    kind = prop.schema.get("type")
    fmt = prop.schema.get("format")
    if kind == "integer":
        text = cast(e, Text)
    elif kind == "number":
        text = case((func.abs(e) < literal_column("'Infinity'::float8"), cast(e, Text)), else_=None)
    elif kind == "boolean":
        text = cast(e, Text)
    elif kind == "string" and fmt == "date":
        text = _const('"') + cast(e, Text) + _const('"')
    else:
        text = cast(func.to_json(e), Text)
    return func.coalesce(text, _const("null"))


def _json_object(props: Sequence[Prop]) -> ColumnElement[str]:
    if not props:
        return _const("{}")
    out: ColumnElement[str] | None = None
    for i, p in enumerate(props):
        key = ("{" if i == 0 else ",") + orjson.dumps(p.name).decode() + ":"
        part = _const(key) + _json_value(p)
        out = part if out is None else out + part
    return out + _const("}")


def feature_text(layer: Layer, role: Role | None) -> ColumnElement[str]:
    """The GeoJSON text of a feature, assembled by concatenation so PostGIS's GeoJSON is not re-parsed."""
    geom = layer.geometry(role)
    geometry = (func.coalesce(func.ST_AsGeoJSON(geom, literal_column("7")), _const("null")) if geom is not None
                else _const("null"))
    properties = _json_object(layer.props)
    return (
        _const('{"type":"Feature","id":') + cast(func.to_json(layer.id_expr), Text)
        + _const(',"geometry":') + geometry
        + _const(',"properties":') + properties + _const("}")
    )


def _boxes(bbox: tuple[float, float, float, float]) -> list[tuple[float, float, float, float]]:
    minx, miny, maxx, maxy = bbox
    if minx <= maxx:
        return [bbox]
    return [(minx, miny, 180.0, maxy), (-180.0, miny, maxx, maxy)]  # crosses the antimeridian


def _grow(box: tuple[float, float, float, float], metres: float) -> tuple[float, float, float, float]:
    """Widen a lon/lat box by ``metres`` on every side (for displaced points)."""
    minx, miny, maxx, maxy = box
    dlat = metres / 110_574.0
    lat = min(89.0, max(abs(miny), abs(maxy)) + dlat)
    dlon = min(180.0, metres / (111_320.0 * math.cos(math.radians(lat))))
    return max(-180.0, minx - dlon), max(-90.0, miny - dlat), min(180.0, maxx + dlon), min(90.0, maxy + dlat)


def _param(name: str, type_: Any = None) -> Any:
    """A named bound parameter; its value is supplied when the compiled statement runs."""
    return bindparam(name, type_=type_, required=False)


def _env(name: str) -> ColumnElement[Any]:
    return func.ST_MakeEnvelope(*(_param(f"{name}_{i}", type_=Float) for i in range(4)), 4326)


@dataclass(frozen=True)
class Shape:
    """What a query looks like, without its values: the key of the compiled-statement cache."""

    layer: Layer
    variant: str
    boxes: int = 0
    t_end: bool = False  # an upper bound on the query interval
    t_start: bool = False  # a lower bound
    equals: tuple[str, ...] = ()
    cursor: str | None = None  # "after" (id > ck), "before" (id < ck), "between" (ks <= id < ck) or None
    offset: int = 0
    limit: int = 10


def shape_and_values(layer: Layer, role: Role | None, q: ItemsQuery) -> tuple[Shape, dict[str, Any]]:
    values: dict[str, Any] = {}
    boxes = _boxes(q.bbox) if q.bbox is not None else []
    for i, box in enumerate(boxes):
        values.update({f"b{i}_{j}": v for j, v in enumerate(box)})
        if layer.displacement_m:
            values.update({f"g{i}_{j}": v for j, v in enumerate(_grow(box, layer.displacement_m))})
    t_start = t_end = False
    if q.interval is not None and layer.temporal is not None:
        start, end = q.interval
        if end is not None:
            t_end = True
            values["t1"] = end
        if start is not None and layer.temporal.end is not None:
            t_start = True
            inclusive_date = not layer.temporal.end_exclusive and layer.temporal.is_date
            values["t0"] = start.date() if inclusive_date else start
    for i, (_, value) in enumerate(q.equals):
        values[f"eq{i}"] = value
    cursor = None
    if q.cursor is not None:
        cursor = "after" if q.cursor.forward else "before"
        values["ck"] = q.cursor.key[0]
    # Page size and offset are part of the statement, not parameters: the planner then knows them and
    # a generic (cached) plan is safe for everything else.
    shape = Shape(layer, variant(layer, role), len(boxes), t_end, t_start, tuple(p.name for p, _ in q.equals),
                  cursor, q.offset, q.limit)
    return shape, values


def _where(shape: Shape, role: Role | None) -> list[ColumnElement[bool]]:
    layer = shape.layer
    conds: list[ColumnElement[bool]] = []
    if shape.boxes:
        geom = layer.geometry(role)
        if geom is None:
            conds.append(literal(False))
        else:
            parts = []
            for i in range(shape.boxes):
                exact = func.ST_Intersects(geom, _env(f"b{i}"))
                if shape.variant == "displaced":
                    # filter on what the caller sees, with an index-friendly pre-filter on the true point
                    exact = and_(func.ST_Intersects(layer.geom, _env(f"g{i}")), exact)
                parts.append(exact)
            conds.append(or_(*parts) if len(parts) > 1 else parts[0])
    t = layer.temporal
    if t is not None and shape.t_end:
        conds.append(or_(t.start.is_(None), t.start <= _param("t1", type_=DateTime(timezone=True))))
    if t is not None and t.end is not None and shape.t_start:
        if t.end_exclusive:
            after = t.end > _param("t0", type_=DateTime(timezone=True))
        else:  # an inclusive end date covers its whole day
            after = t.end >= _param("t0", type_=Date if t.is_date else DateTime(timezone=True))
        conds.append(or_(t.end.is_(None), after))
    for i, name in enumerate(shape.equals):
        prop = layer.prop(name)
        assert prop is not None
        conds.append(prop.expr == _param(f"eq{i}", type_=prop.expr.type))
    if shape.cursor == "after":
        conds.append(layer.id_expr > _param("ck", type_=layer.id_expr.type))
    elif shape.cursor in ("before", "between"):
        conds.append(layer.id_expr < _param("ck", type_=layer.id_expr.type))
    if shape.cursor == "between":
        conds.append(layer.id_expr >= _param("ks", type_=layer.id_expr.type))
    return conds


def _versions(layer: Layer) -> ColumnElement[int]:
    tv = TableVersion.__table__
    return (
        select(func.coalesce(func.sum(tv.c.version), 0))
        .where(tv.c.table_name.in_([str(x) for x in layer.versioned]))
        .scalar_subquery()
    )


# --------------------------------------------------------------------------------------------- compiled statements
@dataclass(frozen=True)
class Compiled:
    sql: str
    names: tuple[str, ...]
    defaults: dict[str, Any]

    def args(self, values: dict[str, Any]) -> list[Any]:
        return [values[n] if n in values else self.defaults[n] for n in self.names]


def compile_stmt(stmt: Select[Any]) -> Compiled:
    c = stmt.compile(dialect=_DIALECT, compile_kwargs={"render_postcompile": True})
    names = tuple(c.positiontup or ())
    return Compiled(c.string, names, dict(c.params))


def _page_stmt(shape: Shape, role: Role | None, forward: bool) -> Select[Any]:
    layer = shape.layer
    key = layer.id_expr
    order = key.asc() if forward else key.desc()
    if not shape.offset:
        return (select(feature_text(layer, role).label("f"), key.label("k")).select_from(layer.source)
                .where(*_where(shape, role)).order_by(order).limit(shape.limit + 1))
    # With an offset, pick the page's keys first (an index-only walk), then build GeoJSON for those
    # rows alone: a Limit node still evaluates its input's projection for every skipped row.
    keys = (select(key.label("pk")).select_from(layer.source).where(*_where(shape, role)).order_by(order)
            .limit(shape.limit + 1).offset(shape.offset).subquery("keys"))
    return (select(feature_text(layer, role).label("f"), key.label("k"))
            .select_from(layer.source.join(keys, key == keys.c.pk)).order_by(order))


@lru_cache(maxsize=1024)
def page_sql(shape: Shape, role: Role | None, forward: bool) -> Compiled:
    """Rows of (feature text, key) in key order: for streaming."""
    return compile_stmt(_page_stmt(shape, role, forward))


@lru_cache(maxsize=1024)
def page_agg_sql(shape: Shape, role: Role | None, forward: bool) -> Compiled:
    """One row per page: the features joined by commas in key order, how many rows were read (up to
    ``limit + 1``, to tell whether more follow), the first and last key, and the tables' version.

    PostgreSQL joins the page, so Python handles one value instead of one record per feature.
    """
    inner = _page_stmt(shape, role, forward).subquery("page")
    rn = func.row_number().over(order_by=inner.c.k.asc() if forward else inner.c.k.desc())
    numbered = select(inner.c.f, inner.c.k, rn.label("rn")).subquery("numbered")
    within = numbered.c.rn <= shape.limit
    stmt = select(
        func.string_agg(numbered.c.f, aggregate_order_by(_const(","), numbered.c.k.asc())).filter(within)
        .label("body"),
        func.count().label("n"),
        func.min(numbered.c.k).filter(within).label("kmin"),
        func.max(numbered.c.k).filter(within).label("kmax"),
        _versions(shape.layer).label("v"),
    )
    return compile_stmt(stmt)


@lru_cache(maxsize=1024)
def count_sql(shape: Shape, role: Role | None) -> Compiled:
    layer = shape.layer
    return compile_stmt(select(func.count()).select_from(layer.source).where(*_where(shape, role)))


@lru_cache(maxsize=256)
def version_sql(layer: Layer) -> Compiled:
    return compile_stmt(select(_versions(layer)))


@lru_cache(maxsize=256)
def feature_sql(layer: Layer, role: Role | None) -> Compiled:
    return compile_stmt(select(feature_text(layer, role)).select_from(layer.source)
                        .where(layer.id_expr == _param("fid", type_=layer.id_expr.type)))


@lru_cache(maxsize=256)
def boundary_sql(shape: Shape, role: Role | None) -> Compiled:
    """The key ``limit`` rows before the cursor (where a ``prev`` page starts), and one more."""
    layer = shape.layer
    return compile_stmt(select(layer.id_expr).select_from(layer.source).where(*_where(shape, role))
                        .order_by(layer.id_expr.desc()).offset(shape.limit - 1).limit(2))


def _role_key(layer: Layer, role: Role | None) -> Role | None:
    """Roles that see the same SQL share compiled statements: only layers whose geometry depends on the
    role (displaced points) compile per role."""
    return None if layer.geom_for_role is None else role


# --------------------------------------------------------------------------------------------- queries
async def fetch_page(pool: asyncpg.Pool, layer: Layer, role: Role | None, q: ItemsQuery) -> Page:
    shape, values = shape_and_values(layer, role, q)
    forward = q.cursor is None or q.cursor.forward
    c = page_agg_sql(shape, _role_key(layer, role), forward)
    async with translated_errors():
        row = await pool.fetchrow(c.sql, *c.args(values))
    n = int(row["n"])
    more = n > q.limit
    first = (row["kmin"],) if n else None
    last = (row["kmax"],) if n else None
    if forward:
        more_after, more_before = more, q.cursor is not None or q.offset > 0
    else:
        more_after, more_before = True, more
    return Page(row["body"] or "", min(n, q.limit), first, last, more_after, more_before, int(row["v"]))


async def current_version(pool: asyncpg.Pool, layer: Layer) -> int:
    c = version_sql(layer)
    async with translated_errors():
        return int(await pool.fetchval(c.sql, *c.args({})))


async def count(pool: asyncpg.Pool, layer: Layer, role: Role | None, q: ItemsQuery) -> int:
    shape, values = shape_and_values(layer, role, ItemsQuery(q.bbox, q.interval, q.equals))
    c = count_sql(shape, _role_key(layer, role))
    async with translated_errors():
        return int(await pool.fetchval(c.sql, *c.args(values)))


async def fetch_feature(pool: asyncpg.Pool, layer: Layer, role: Role | None, feature_id: Any) -> str | None:
    c = feature_sql(layer, _role_key(layer, role))
    async with translated_errors():
        return await pool.fetchval(c.sql, *c.args({"fid": feature_id}))


@dataclass
class CountCache:
    """Exact counts by query, valid while the tables' version is unchanged (LRU)."""

    maxsize: int = 4096
    _data: OrderedDict[tuple[Any, ...], tuple[int, int]] = field(default_factory=OrderedDict)
    _lock: Lock = field(default_factory=Lock)

    def get(self, key: tuple[Any, ...], version: int) -> int | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None or hit[0] != version:
                return None
            self._data.move_to_end(key)
            return hit[1]

    def put(self, key: tuple[Any, ...], version: int, n: int) -> None:
        with self._lock:
            self._data[key] = (version, n)
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)


async def number_matched(
    pool: asyncpg.Pool, cache: CountCache, layer: Layer, role: Role | None, q: ItemsQuery, version: int
) -> int:
    key = q.count_key(layer, role)
    hit = cache.get(key, version)
    if hit is not None:
        return hit
    n = await count(pool, layer, role, q)
    cache.put(key, version, n)
    return n


async def stream_page(
    pool: asyncpg.Pool, layer: Layer, role: Role | None, q: ItemsQuery
) -> AsyncIterator[tuple[list[tuple[str, Any]], bool]]:
    """Yield ``(rows, more)`` batches of (feature text, key) from a server-side cursor, in key order.

    ``more`` (meaningful on the last batch) says whether rows remain beyond the page: after it when
    reading forward, before it for a ``prev`` cursor. A ``prev`` page is read forward too: its first
    key is found first, so no page is ever held whole in memory.
    """
    shape, values = shape_and_values(layer, role, q)
    rkey = _role_key(layer, role)
    forward = q.cursor is None or q.cursor.forward
    more_before = False
    async with pool.acquire() as conn:
        if not forward:
            b = boundary_sql(shape, rkey)
            async with translated_errors():
                starts = [r[0] for r in await conn.fetch(b.sql, *b.args(values))]
            more_before = len(starts) > 1
            if starts:  # read [start, cursor) forward
                shape, values = _between(layer, role, q, starts[0])
            else:  # fewer than a page before the cursor: read from the start
                shape, values = shape_and_values(layer, role, q)
        c = page_sql(shape, rkey, True)
        seen = 0
        more = False
        async with conn.transaction(readonly=True):
            async with translated_errors():
                cur = await conn.cursor(c.sql, *c.args(values))
                while True:
                    batch = await cur.fetch(STREAM_BATCH)
                    if not batch:
                        break
                    rows = [(r["f"], r["k"]) for r in batch]
                    if seen + len(rows) > q.limit:
                        rows = rows[: q.limit - seen]
                        more = True
                    seen += len(rows)
                    yield rows, (more if forward else more_before)
                    if more:
                        break
    if seen == 0:
        yield [], (False if forward else more_before)


def _between(layer: Layer, role: Role | None, q: ItemsQuery, start: Any) -> tuple[Shape, dict[str, Any]]:
    """Shape and values for keys in [start, cursor): a ``prev`` page read forward."""
    shape, values = shape_and_values(layer, role, q)
    return replace(shape, cursor="between"), {**values, "ks": start}
