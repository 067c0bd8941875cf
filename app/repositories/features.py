"""SQL for OGC API - Features: GeoJSON is built by PostGIS, one text value per feature.

Pages are read by key (``id > last`` in id order), so a page deep in a large collection costs about
what the first page costs; ``offset`` is still honoured. ``numberMatched`` is exact: counts are cached
per query and invalidated by ``table_version``, which a statement trigger bumps on every write.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from threading import Lock
from typing import Any

from sqlalchemy import JSON, Text, and_, bindparam, cast, func, literal, null, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from app.db import translated_errors
from app.models.codes import Role
from app.models.orm import TableVersion
from app.ogc.catalog import Layer, Prop
from app.ogc.params import Cursor, Interval

JSON_ARGS_PER_CALL = 100  # PostgreSQL functions take at most 100 arguments


@dataclass(frozen=True)
class ItemsQuery:
    bbox: tuple[float, float, float, float] | None = None
    interval: Interval | None = None
    equals: tuple[tuple[Prop, Any], ...] = ()
    limit: int = 10
    offset: int = 0
    cursor: Cursor | None = None

    def count_key(self, layer: Layer, role: Role | None) -> tuple[Any, ...]:
        variant = "true" if layer.geom_for_role is None or role == Role.admin else "displaced"
        return (layer.id, variant, self.bbox, self.interval, tuple((p.name, v) for p, v in self.equals))


@dataclass
class Page:
    features: list[str]
    first_key: tuple[Any, ...] | None
    last_key: tuple[Any, ...] | None
    more_after: bool
    more_before: bool
    version: int


# --------------------------------------------------------------------------------------------- expressions
def _json_object(pairs: Sequence[tuple[str, ColumnElement[Any]]]) -> ColumnElement[Any]:
    """json_build_object over any number of pairs (chunks of 50 merged with jsonb ||)."""
    per = JSON_ARGS_PER_CALL // 2
    chunks = [pairs[i : i + per] for i in range(0, len(pairs), per)] or [[]]
    objs = [func.json_build_object(*[x for k, e in chunk for x in (literal(k, Text), e)]) for chunk in chunks]
    if len(objs) == 1:
        return objs[0]
    merged = func.to_jsonb(objs[0])
    for o in objs[1:]:
        merged = merged.op("||")(func.to_jsonb(o))
    return merged


def feature_text(layer: Layer, role: Role | None, props: Sequence[Prop] | None = None) -> ColumnElement[str]:
    geom = layer.geometry(role)
    geometry = cast(func.ST_AsGeoJSON(geom, 7), JSON) if geom is not None else null()
    properties = _json_object([(p.name, p.expr) for p in (layer.props if props is None else props)])
    obj = func.json_build_object(
        literal("type", Text), literal("Feature", Text),
        literal("id", Text), layer.id_expr,
        literal("geometry", Text), geometry,
        literal("properties", Text), properties,
    )
    return cast(obj, Text)


def _envelope(minx: float, miny: float, maxx: float, maxy: float) -> ColumnElement[Any]:
    return func.ST_MakeEnvelope(minx, miny, maxx, maxy, 4326)


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


def where_clauses(layer: Layer, role: Role | None, q: ItemsQuery) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if q.bbox is not None:
        geom = layer.geometry(role)
        if geom is None:
            conds.append(literal(False))
        else:
            parts = []
            for box in _boxes(q.bbox):
                exact = func.ST_Intersects(geom, _envelope(*box))
                if geom is not layer.geom and layer.displacement_m:
                    # filter on what the caller sees, with an index-friendly pre-filter on the true point
                    exact = and_(func.ST_Intersects(layer.geom, _envelope(*_grow(box, layer.displacement_m))), exact)
                parts.append(exact)
            conds.append(or_(*parts) if len(parts) > 1 else parts[0])
    if q.interval is not None and layer.temporal is not None:
        start, end = q.interval
        t = layer.temporal
        if end is not None:
            conds.append(or_(t.start.is_(None), t.start <= end))
        if start is not None and t.end is not None:
            if t.end_exclusive:
                after = t.end > start
            else:  # an inclusive end date covers its whole day
                after = t.end >= (start.date() if t.is_date else start)
            conds.append(or_(t.end.is_(None), after))
    for prop, value in q.equals:
        conds.append(prop.expr == value)
    return conds


def _versions(layer: Layer) -> ColumnElement[int]:
    tv = TableVersion.__table__
    return (
        select(func.coalesce(func.sum(tv.c.version), 0))
        .where(tv.c.table_name.in_(bindparam("vt", list(layer.versioned), expanding=True)))
        .scalar_subquery()
    )


# --------------------------------------------------------------------------------------------- queries
async def fetch_page(
    conn: AsyncConnection, layer: Layer, role: Role | None, q: ItemsQuery, props: Sequence[Prop] | None = None
) -> Page:
    conds = where_clauses(layer, role, q)
    key = layer.id_expr
    forward = q.cursor is None or q.cursor.forward
    if q.cursor is not None:
        (k,) = q.cursor.key
        conds.append(key > k if forward else key < k)
    stmt = (
        select(feature_text(layer, role, props).label("f"), key.label("k"), _versions(layer).label("v"))
        .select_from(layer.source)
        .where(*conds)
        .order_by(key.asc() if forward else key.desc())
        .limit(q.limit + 1)
    )
    if q.offset:
        stmt = stmt.offset(q.offset)
    async with translated_errors():
        rows = (await conn.execute(stmt, {"vt": list(layer.versioned)})).all()
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    if not forward:
        rows.reverse()
    version = int(rows[0].v) if rows else await current_version(conn, layer)
    first = (rows[0].k,) if rows else None
    last = (rows[-1].k,) if rows else None
    if forward:
        more_after, more_before = more, q.cursor is not None or q.offset > 0
    else:
        more_after, more_before = True, more
    return Page([r.f for r in rows], first, last, more_after, more_before, version)


async def current_version(conn: AsyncConnection, layer: Layer) -> int:
    async with translated_errors():
        return int(await conn.scalar(select(_versions(layer)), {"vt": list(layer.versioned)}))


async def count(conn: AsyncConnection, layer: Layer, role: Role | None, q: ItemsQuery) -> int:
    stmt = select(func.count()).select_from(layer.source).where(*where_clauses(layer, role, q))
    async with translated_errors():
        return int(await conn.scalar(stmt))


async def fetch_feature(conn: AsyncConnection, layer: Layer, role: Role | None, feature_id: Any) -> str | None:
    stmt = select(feature_text(layer, role)).select_from(layer.source).where(layer.id_expr == feature_id)
    async with translated_errors():
        return await conn.scalar(stmt)


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
    conn: AsyncConnection, cache: CountCache, layer: Layer, role: Role | None, q: ItemsQuery, version: int
) -> int:
    key = q.count_key(layer, role)
    hit = cache.get(key, version)
    if hit is not None:
        return hit
    n = await count(conn, layer, role, q)
    cache.put(key, version, n)
    return n


STREAM_BATCH = 500


async def stream_page(
    engine: Any, layer: Layer, role: Role | None, q: ItemsQuery, props: Sequence[Prop] | None = None
) -> AsyncIterator[tuple[list[tuple[str, Any]], bool]]:
    """Yield ``(rows, more)`` batches of (feature text, key) from a server-side cursor, in key order.

    ``more`` (meaningful on the last batch) says whether rows remain beyond the page: after it when
    reading forward, before it for a ``prev`` cursor. A ``prev`` page is read forward too: its first
    key is found first, so no page is ever held whole in memory.
    """
    key = layer.id_expr
    conds = where_clauses(layer, role, q)
    more_before = False
    if q.cursor is not None:
        (k,) = q.cursor.key
        if q.cursor.forward:
            conds.append(key > k)
        else:
            before = [*conds, key < k]
            start_stmt = (select(key).select_from(layer.source).where(*before).order_by(key.desc())
                          .offset(q.limit - 1).limit(2))
            async with engine.connect() as conn, translated_errors():
                starts = (await conn.execute(start_stmt)).scalars().all()
            if starts:
                conds.append(key >= starts[0])
                more_before = len(starts) > 1
            conds.append(key < k)
    stmt = (select(feature_text(layer, role, props).label("f"), key.label("k")).select_from(layer.source)
            .where(*conds).order_by(key.asc()).limit(q.limit + 1))
    if q.offset:
        stmt = stmt.offset(q.offset)
    forward = q.cursor is None or q.cursor.forward
    async with engine.connect() as conn:
        async with translated_errors():
            result = await conn.stream(stmt.execution_options(yield_per=STREAM_BATCH))
        seen = 0
        more = False
        async for partition in result.partitions(STREAM_BATCH):
            rows = [(r.f, r.k) for r in partition]
            if seen + len(rows) > q.limit:
                rows = rows[: q.limit - seen]
                more = True
            seen += len(rows)
            yield rows, (more if forward else more_before)
            if more:
                break
        await result.close()
    if seen == 0:
        yield [], (False if forward else more_before)
