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

import datetime as dt
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import lru_cache
from typing import Any

import asyncpg
import orjson
from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    Float,
    Integer,
    Numeric,
    Text,
    and_,
    bindparam,
    case,
    cast,
    false,
    func,
    literal_column,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from app.db import ReadPool, translated_errors
from app.errors import InvalidParameter
from app.layers.catalog import Layer, Prop
from app.layers.cql2 import ID_NAME, Filter, expand_metres, to_sql
from app.layers.crs import CRS84_DEF, Crs, epsg
from app.layers.query import ItemsQuery, variant
from app.models.codes import Role
from app.models.orm import TableVersion
from app.repositories.cache import CountCache

STREAM_BATCH = 500
_DIALECT = asyncpg_dialect(paramstyle="numeric_dollar")


@dataclass
class Page:
    body: str  # the features' GeoJSON, comma-separated, in key order
    returned: int
    first_key: list[Any] | None  # sort key (sort values…, id) of the first and last feature
    last_key: list[Any] | None
    more_after: bool
    more_before: bool
    version: int


# --------------------------------------------------------------------------------------------- expressions
def const_text(text: str) -> ColumnElement[str]:
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
        # always with a decimal point (0 → 0.0): clients that type a field from the first values they see (GDAL's
        # OAPIF driver reads one page) made rates that start at 0 integer fields and truncated every later rate
        t = cast(e, Text)
        decimal = case((func.strpos(t, ".") + func.strpos(t, "e") > 0, t), else_=t + const_text(".0"))
        text = case((func.abs(e) < literal_column("'Infinity'::float8"), decimal), else_=None)
    elif kind == "boolean":
        text = cast(e, Text)
    elif kind == "string" and fmt == "date":
        text = const_text('"') + cast(e, Text) + const_text('"')
    else:
        text = cast(func.to_json(e), Text)
    return func.coalesce(text, const_text("null"))


def _json_object(props: Sequence[Prop]) -> ColumnElement[str]:
    if not props:
        return const_text("{}")
    out: ColumnElement[str] | None = None
    for i, p in enumerate(props):
        key = ("{" if i == 0 else ",") + orjson.dumps(p.name).decode() + ":"
        part = const_text(key) + _json_value(p)
        out = part if out is None else out + part
    return out + const_text("}")


def output_geometry(layer: Layer, role: Role | None, crs: Crs) -> ColumnElement[Any] | None:
    """The geometry a role sees, reprojected by PostGIS and axis-swapped for latitude-first CRSs."""
    geom = layer.geometry(role)
    if geom is None or crs.is_storage:
        return geom
    if crs.srid != 4326:
        geom = func.ST_Transform(geom, crs.srid)
    if crs.lat_first:
        geom = func.ST_FlipCoordinates(geom)
    return geom


def selected_props(layer: Layer, names: tuple[str, ...] | None) -> tuple[Prop, ...]:
    if names is None:
        return layer.props
    wanted = set(names)
    return tuple(p for p in layer.props if p.name in wanted)


def feature_text(layer: Layer, role: Role | None, crs: Crs = CRS84_DEF, props: tuple[str, ...] | None = None,
                 skip_geometry: bool = False) -> ColumnElement[str]:
    """The GeoJSON text of a feature, assembled by concatenation so PostGIS's GeoJSON is not re-parsed."""
    geom = None if skip_geometry else output_geometry(layer, role, crs)
    # options 0: no "crs" member (the CRS is stated by the Content-Crs header, as Part 2 requires)
    geometry = (func.coalesce(func.ST_AsGeoJSON(geom, literal_column(str(crs.precision)), literal_column("0")),
                              const_text("null")) if geom is not None else const_text("null"))
    properties = _json_object(selected_props(layer, props))
    return (
        const_text('{"type":"Feature","id":') + cast(func.to_json(layer.id_expr), Text)
        + const_text(',"geometry":') + geometry
        + const_text(',"properties":') + properties + const_text("}")
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


def _env(name: str, srid: int = 4326) -> ColumnElement[Any]:
    return func.ST_MakeEnvelope(*(_param(f"{name}_{i}", type_=Float) for i in range(4)), srid)


def _env_in_storage(name: str, crs: Crs) -> ColumnElement[Any]:
    """A bbox given in another CRS, as a lon/lat polygon. Projected boxes are densified first so their
    edges stay straight in their own CRS (64 segments a side)."""
    env = _env(name, crs.srid)
    if not crs.geographic:
        x0, y0, x1, y1 = (_param(f"{name}_{i}", type_=Float) for i in range(4))
        env = func.ST_Segmentize(env, func.greatest(x1 - x0, y1 - y0) / literal_column("64.0"))
    return func.ST_Transform(env, 4326)


@dataclass(frozen=True)
class Shape:
    """What a query looks like, without its values: the key of the compiled-statement cache."""

    layer: Layer
    variant: str
    boxes: int = 0
    bbox_srid: int = 4326
    t_end: bool = False  # an upper bound on the query interval
    t_start: bool = False  # a lower bound
    equals: tuple[str, ...] = ()
    filter: Filter | None = None  # its literal values are part of the compiled statement
    sort: tuple[tuple[str, bool], ...] = ()
    props: tuple[str, ...] | None = None
    skip_geometry: bool = False
    crs: Crs = CRS84_DEF
    output: str = "geojson"
    # "after" (key > ck), "before" (key < ck), "between" (ks <= key < ck) or None; then which key values are null
    cursor: str | None = None
    cursor_nulls: tuple[bool, ...] = ()
    start_nulls: tuple[bool, ...] = ()
    offset: int = 0
    limit: int = 10

    @property
    def filtered(self) -> bool:
        """Whether the rows depend on values whose selectivity a generic plan cannot know (:data:`CUSTOM_PLANS`)."""
        return bool(self.boxes or self.t_start or self.t_end or self.equals or self.filter is not None)


def order_keys(layer: Layer, sort: tuple[tuple[str, bool], ...]) -> list[tuple[ColumnElement[Any], bool, bool]]:
    """(expression, descending, nullable) for each sort key, ending with the feature id (the tie-breaker
    that makes the order total, so key paging never skips or repeats a feature)."""
    keys: list[tuple[ColumnElement[Any], bool, bool]] = []
    for name, desc in sort:
        if name == ID_NAME and layer.prop(ID_NAME) is None:
            keys.append((layer.id_expr, desc, False))
            return keys
        prop = layer.prop(name)
        assert prop is not None
        expr = cast(prop.expr, Text) if "enum" in prop.schema else prop.expr
        keys.append((expr, desc, True))
    keys.append((layer.id_expr, False, False))
    return keys


def key_types(layer: Layer, sort: tuple[tuple[str, bool], ...]) -> list[Any]:
    return [k[0].type for k in order_keys(layer, sort)]


def _beyond(e: ColumnElement[Any], desc: bool, nullable: bool, p: Any, p_null: bool,
            inclusive: bool) -> ColumnElement[bool] | None:
    """Rows after value ``p`` in this key's order. PostgreSQL puts NULLs last ascending and first
    descending (NULL is the largest value); None when no row can follow."""
    if not desc:
        if p_null:
            return e.is_(None) if inclusive else None
        cmp = e >= p if inclusive else e > p
        return or_(cmp, e.is_(None)) if nullable else cmp
    if p_null:
        return true() if inclusive else e.isnot(None)
    return e <= p if inclusive else e < p


def keyset(keys: list[tuple[ColumnElement[Any], bool, bool]], prefix: str, nulls: tuple[bool, ...],
           reverse: bool = False, inclusive: bool = False) -> ColumnElement[bool]:
    """Rows after (or, reversed, before) the key tuple in parameters ``{prefix}0…``: the classic
    lexicographic expansion (k0 > v0) OR (k0 = v0 AND k1 > v1) OR …, NULL-aware."""
    ors = []
    params = [_param(f"{prefix}{i}", type_=k[0].type) for i, k in enumerate(keys)]
    for i, (e, desc, nullable) in enumerate(keys):
        eqs = [keys[j][0].is_(None) if nulls[j] else keys[j][0] == params[j] for j in range(i)]
        last = i == len(keys) - 1
        cmp = _beyond(e, desc != reverse, nullable, params[i], nulls[i], inclusive and last)
        if cmp is not None:
            ors.append(and_(*eqs, cmp))
    if not ors:
        return false()
    return or_(*ors) if len(ors) > 1 else ors[0]


def shape_and_values(layer: Layer, role: Role | None, q: ItemsQuery) -> tuple[Shape, dict[str, Any]]:
    values: dict[str, Any] = {}
    geographic_storage = q.bbox_crs.srid == 4326
    boxes = (_boxes(q.bbox) if geographic_storage else [q.bbox]) if q.bbox is not None else []
    for i, box in enumerate(boxes):
        values.update({f"b{i}_{j}": v for j, v in enumerate(box)})
        if layer.displacement_m and geographic_storage:
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
    nulls: tuple[bool, ...] = ()
    if q.cursor is not None:
        cursor = "after" if q.cursor.forward else "before"
        key = cursor_values(layer, q.sortby, q.cursor.key)
        values.update({f"ck{i}": v for i, v in enumerate(key)})
        nulls = tuple(v is None for v in key)
    # Page size and offset are part of the statement, not parameters: the planner then knows them and
    # a generic (cached) plan is safe for everything else.
    shape = Shape(layer, variant(layer, role), len(boxes), q.bbox_crs.srid if q.bbox is not None else 4326,
                  t_end, t_start, tuple(p.name for p, _ in q.equals), q.filter, q.sortby, q.properties,
                  q.skip_geometry, q.crs, q.output, cursor, nulls, (), q.offset, q.limit)
    return shape, values


def cursor_values(layer: Layer, sort: tuple[tuple[str, bool], ...], key: tuple[Any, ...]) -> list[Any]:
    """Typed values of a cursor's key for the query's sort keys (a 400 if the cursor belongs to another
    order)."""
    keys = order_keys(layer, sort)
    if len(key) != len(keys):
        raise InvalidParameter("cursor does not belong to this sort order; start again without it.")
    out: list[Any] = []
    for (expr, _, _), value in zip(keys, key, strict=True):
        t = expr.type
        try:
            if value is None:
                out.append(None)
            elif isinstance(t, DateTime):
                out.append(dt.datetime.fromisoformat(value))
            elif isinstance(t, Date):
                out.append(dt.date.fromisoformat(value))
            elif isinstance(t, Numeric) and not isinstance(t, Float):
                out.append(Decimal(repr(value)) if isinstance(value, float) else Decimal(value))
            elif isinstance(t, Float):
                out.append(float(value))
            elif isinstance(t, Integer):  # SmallInteger and BigInteger too
                out.append(int(value))
            elif isinstance(t, Boolean):
                out.append(bool(value))
            else:
                out.append(value if isinstance(value, str) else str(value))
        except (ValueError, TypeError, ArithmeticError):
            raise InvalidParameter("cursor is not a token this server issued.") from None
    return out


def where_clauses(shape: Shape, role: Role | None) -> list[ColumnElement[bool]]:
    layer = shape.layer
    conds: list[ColumnElement[bool]] = []
    if shape.boxes:
        geom = layer.geometry(role)
        if geom is not None:  # a collection without geometries: every feature matches (fc-bbox-response)
            parts = []
            for i in range(shape.boxes):
                if shape.bbox_srid == 4326:
                    box = _env(f"b{i}")
                    exact = func.ST_Intersects(geom, box)
                    if shape.variant == "displaced":
                        # filter on what the caller sees, with an index-friendly pre-filter on the true point
                        exact = and_(func.ST_Intersects(layer.geom, _env(f"g{i}")), exact)
                else:
                    box = _env_in_storage(f"b{i}", shape_crs(shape.bbox_srid))
                    exact = func.ST_Intersects(geom, box)
                    if shape.variant == "displaced":
                        exact = and_(layer.geom.op("&&")(expand_metres(box, layer.displacement_m)), exact)
                parts.append(exact)
            if layer.geom_nullable:  # /req/core/fc-bbox-response: features without a geometry match any bbox
                parts.append(layer.geom.is_(None))
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
    if shape.filter is not None:
        conds.append(to_sql(shape.filter, layer, role))
    keys = order_keys(layer, shape.sort)
    if shape.cursor == "after":
        conds.append(keyset(keys, "ck", shape.cursor_nulls))
    elif shape.cursor in ("before", "between"):
        conds.append(keyset(keys, "ck", shape.cursor_nulls, reverse=True))
    if shape.cursor == "between":
        conds.append(keyset(keys, "ks", shape.start_nulls, inclusive=True))
    return conds


def shape_crs(srid: int) -> Crs:
    return epsg(srid)


def versions_expr(layer: Layer) -> ColumnElement[int]:
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


def _row_columns(shape: Shape, role: Role | None) -> list[ColumnElement[Any]]:
    """What one row carries: the feature's GeoJSON text, or for CSV the id, the properties and WKT."""
    layer = shape.layer
    if shape.output in ("csv", "wkb"):
        cols: list[ColumnElement[Any]] = [layer.id_expr.label("c_id")]
        cols += [p.expr.label(f"c_{i}") for i, p in enumerate(selected_props(layer, shape.props))]
        geom = None if shape.skip_geometry else output_geometry(layer, role, shape.crs)
        if geom is not None and shape.output == "csv":
            cols.append(func.ST_AsText(geom, shape.crs.precision + 8).label("c_wkt"))
        elif geom is not None:  # bulk formats (FlatGeobuf, GeoParquet): WKB, always x/y (easting/lon first)
            cols.append(func.ST_AsBinary(geom).label("c_wkb"))
        return cols
    return [feature_text(layer, role, shape.crs, shape.props, shape.skip_geometry).label("f")]


def _order(keys: list[tuple[ColumnElement[Any], bool, bool]], forward: bool) -> list[Any]:
    return [e.desc() if (desc == forward) else e.asc() for e, desc, _ in keys]


def _page_stmt(shape: Shape, role: Role | None, forward: bool) -> Select[Any]:
    layer = shape.layer
    keys = order_keys(layer, shape.sort)
    order = _order(keys, forward)
    key_cols = [k[0].label(f"k{i}") for i, k in enumerate(keys)]
    if not shape.offset:
        return (select(*_row_columns(shape, role), *key_cols).select_from(layer.source)
                .where(*where_clauses(shape, role)).order_by(*order).limit(shape.limit + 1))
    # With an offset, pick the page's keys first (an index-only walk), then build GeoJSON for those
    # rows alone: a Limit node still evaluates its input's projection for every skipped row.
    ids = (select(layer.id_expr.label("pk")).select_from(layer.source).where(*where_clauses(shape, role))
           .order_by(*order).limit(shape.limit + 1).offset(shape.offset).subquery("keys"))
    return (select(*_row_columns(shape, role), *key_cols)
            .select_from(layer.source.join(ids, layer.id_expr == ids.c.pk)).order_by(*order))


def _key_json(cols: list[Any]) -> ColumnElement[str]:
    return cast(func.json_build_array(*cols), Text)


@lru_cache(maxsize=1024)
def page_sql(shape: Shape, role: Role | None, forward: bool) -> Compiled:
    """Rows of (feature text or CSV columns, sort key as JSON) in order: for streaming."""
    inner = _page_stmt(shape, role, forward).subquery("page")
    nkeys = len(order_keys(shape.layer, shape.sort))
    keys = [inner.c[f"k{i}"] for i in range(nkeys)]
    cols = [c for c in inner.c if not c.name.startswith("k")]
    return compile_stmt(select(*cols, _key_json(keys).label("k")))


@lru_cache(maxsize=1024)
def page_agg_sql(shape: Shape, role: Role | None, forward: bool) -> Compiled:
    """One row per page: the features joined by commas in order, how many rows were read (up to
    ``limit + 1``, to tell whether more follow), the first and last sort key, and the tables' version.

    PostgreSQL joins the page, so Python handles one value instead of one record per feature.
    """
    keys = order_keys(shape.layer, shape.sort)
    inner = _page_stmt(shape, role, forward).subquery("page")
    kcols = [inner.c[f"k{i}"] for i in range(len(keys))]
    rn = func.row_number().over(order_by=[
        c.desc() if (desc == forward) else c.asc() for c, (_, desc, _) in zip(kcols, keys, strict=True)])
    numbered = select(inner.c.f, *kcols, rn.label("rn"), func.count().over().label("total")).subquery("numbered")
    nk = [numbered.c[f"k{i}"] for i in range(len(keys))]
    within = numbered.c.rn <= shape.limit
    last_rn = func.least(numbered.c.total, shape.limit)
    head, tail = (numbered.c.rn == 1, numbered.c.rn == last_rn)
    if not forward:  # rows were read backwards: the page starts at the last row read
        head, tail = tail, head
    order = numbered.c.rn.asc() if forward else numbered.c.rn.desc()
    stmt = select(
        func.string_agg(numbered.c.f, aggregate_order_by(const_text(","), order)).filter(within).label("body"),
        func.count().label("n"),
        func.max(_key_json(nk)).filter(head).label("kfirst"),
        func.max(_key_json(nk)).filter(tail).label("klast"),
        versions_expr(shape.layer).label("v"),
    )
    return compile_stmt(stmt)


@lru_cache(maxsize=1024)
def count_sql(shape: Shape, role: Role | None) -> Compiled:
    layer = shape.layer
    return compile_stmt(select(func.count()).select_from(layer.source).where(*where_clauses(shape, role)))


@lru_cache(maxsize=256)
def version_sql(layer: Layer) -> Compiled:
    return compile_stmt(select(versions_expr(layer)))


@lru_cache(maxsize=256)
def feature_sql(layer: Layer, role: Role | None, crs: Crs = CRS84_DEF) -> Compiled:
    """One feature's GeoJSON text and its entity tag (an MD5 of the full feature as the role sees it)."""
    text_ = feature_text(layer, role, crs)
    etag_text = feature_text(layer, role) if not crs.is_storage else text_
    return compile_stmt(select(text_.label("f"), func.md5(etag_text).label("etag")).select_from(layer.source)
                        .where(layer.id_expr == _param("fid", type_=layer.id_expr.type)))


@lru_cache(maxsize=256)
def boundary_sql(shape: Shape, role: Role | None) -> Compiled:
    """The key ``limit`` rows before the cursor (where a ``prev`` page starts), and one more."""
    layer = shape.layer
    keys = order_keys(layer, shape.sort)
    return compile_stmt(select(_key_json([k[0] for k in keys])).select_from(layer.source)
                        .where(*where_clauses(shape, role)).order_by(*_order(keys, False))
                        .offset(shape.limit - 1).limit(2))


def role_key(layer: Layer, role: Role | None) -> Role | None:
    """Roles that see the same SQL share compiled statements: only layers whose geometry depends on the
    role (displaced points) compile per role."""
    return None if layer.geom_for_role is None else role


# --------------------------------------------------------------------------------------------- queries
def _key(text_: str | None) -> list[Any] | None:
    return orjson.loads(text_) if text_ is not None else None


async def fetch_page(pool: ReadPool, layer: Layer, role: Role | None, q: ItemsQuery) -> Page:
    shape, values = shape_and_values(layer, role, q)
    forward = q.cursor is None or q.cursor.forward
    c = page_agg_sql(shape, role_key(layer, role), forward)
    async with translated_errors():
        row = await pool.fetchrow(c.sql, *c.args(values), custom_plans=shape.filtered)
    n = int(row["n"])
    more = n > q.limit
    if forward:
        more_after, more_before = more, q.cursor is not None or q.offset > 0
    else:
        more_after, more_before = True, more
    return Page(row["body"] or "", min(n, q.limit), _key(row["kfirst"]), _key(row["klast"]), more_after,
                more_before, int(row["v"]))


async def current_version(pool: ReadPool, layer: Layer) -> int:
    c = version_sql(layer)
    async with translated_errors():
        return int(await pool.fetchval(c.sql, *c.args({})))


async def count(pool: ReadPool, layer: Layer, role: Role | None, q: ItemsQuery, budget_ms: int = 0) -> int | None:
    """The number of features matching ``q``; None when ``budget_ms`` > 0 and counting takes longer than that."""
    shape, values = shape_and_values(layer, role, ItemsQuery(q.bbox, q.interval, q.equals, bbox_crs=q.bbox_crs,
                                                              filter=q.filter))
    c = count_sql(shape, role_key(layer, role))
    async with translated_errors(), pool.acquire(custom_plans=shape.filtered) as conn:
        if budget_ms <= 0:
            return int(await conn.fetchval(c.sql, *c.args(values)))
        try:
            async with conn.transaction(readonly=True):
                await conn.execute(f"SET LOCAL statement_timeout = {int(budget_ms)}")
                return int(await conn.fetchval(c.sql, *c.args(values)))
        except asyncpg.QueryCanceledError:
            return None


async def fetch_feature(
    pool: ReadPool, layer: Layer, role: Role | None, feature_id: Any, crs: Crs = CRS84_DEF
) -> tuple[str, str] | None:
    """The feature's GeoJSON text and ETag, or None."""
    c = feature_sql(layer, role_key(layer, role), crs)
    async with translated_errors():
        row = await pool.fetchrow(c.sql, *c.args({"fid": feature_id}))
    return (row["f"], row["etag"]) if row is not None else None


async def number_matched(
    pool: ReadPool, cache: CountCache, layer: Layer, role: Role | None, q: ItemsQuery, version: int
) -> int | None:
    """``numberMatched`` of the answer: exact, from the cache or counted now; None (left out of the answer) while a
    count over the cache's budget runs in the background. Millions of matching rows take seconds to count (0.5 s
    for 5 million households in memory); an answer should not wait for them, and one count per filter and data
    version is enough."""
    key = q.count_key(layer, role)
    hit = cache.get(key, version)
    if hit is not None:
        return None if hit == cache.OVER_BUDGET else hit
    n = await count(pool, layer, role, q, cache.budget_ms)
    if n is None:
        cache.put(key, version, cache.OVER_BUDGET)
        cache.finish_later(key, version, lambda: _exact(pool, layer, role, q))
        return None
    cache.put(key, version, n)
    return n


async def _exact(pool: ReadPool, layer: Layer, role: Role | None, q: ItemsQuery) -> int:
    n = await count(pool, layer, role, q)
    assert n is not None  # no budget: counted or raised
    return n


async def stream_page(
    pool: ReadPool, layer: Layer, role: Role | None, q: ItemsQuery
) -> AsyncIterator[tuple[list[tuple[Any, str]], bool]]:
    """Yield ``(rows, more)`` batches of (row, sort key as JSON text) from a server-side cursor, in order.

    A row is the feature's GeoJSON text, or for CSV and the bulk formats the asyncpg record. ``more`` (meaningful on the
    last batch) says whether rows remain beyond the page: after it when reading forward, before it for
    a ``prev`` cursor. A ``prev`` page is read forward too: its first key is found first, so no page is
    ever held whole in memory.
    """
    shape, values = shape_and_values(layer, role, q)
    rkey = role_key(layer, role)
    forward = q.cursor is None or q.cursor.forward
    more_before = False
    async with pool.acquire(custom_plans=shape.filtered) as conn:
        if not forward:
            b = boundary_sql(shape, rkey)
            async with translated_errors():
                starts = [r[0] for r in await conn.fetch(b.sql, *b.args(values))]
            more_before = len(starts) > 1
            if starts:  # read [start, cursor) forward
                start = cursor_values(layer, q.sortby, tuple(orjson.loads(starts[0])))
                shape = replace(shape, cursor="between", start_nulls=tuple(v is None for v in start))
                values = {**values, **{f"ks{i}": v for i, v in enumerate(start)}}
            else:  # fewer than a page before the cursor: read from the start
                shape, values = shape_and_values(layer, role, replace(q, cursor=None))
        c = page_sql(shape, rkey, True)
        seen = 0
        more = False
        csv = q.output in ("csv", "wkb")  # records, not GeoJSON text
        async with conn.transaction(readonly=True):
            async with translated_errors():
                cur = await conn.cursor(c.sql, *c.args(values))
                while True:
                    batch = await cur.fetch(STREAM_BATCH)
                    if not batch:
                        break
                    rows = [(r if csv else r["f"], r["k"]) for r in batch]
                    if seen + len(rows) > q.limit:
                        rows = rows[: q.limit - seen]
                        more = True
                    seen += len(rows)
                    yield rows, (more if forward else more_before)
                    if more:
                        break
    if seen == 0:
        yield [], (False if forward else more_before)
