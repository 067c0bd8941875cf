"""The items query: OGC API query parameters parsed and validated into an :class:`ItemsQuery`, from plain values
(the query's (name, value) pairs), never from an HTTP request, so the Features and Tiles routes, process inputs
(collection references) and the CLI build queries the same way. Every malformed value is an InvalidParameter (400).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from app.errors import InvalidParameter
from app.layers.catalog import Catalog, Layer, Prop
from app.layers.cql2 import ID_NAME, Filter, parse_filter
from app.layers.cql2 import check as check_filter
from app.layers.crs import CRS84_DEF, Crs, parse_crs
from app.models.codes import Role

Interval = tuple[dt.datetime | None, dt.datetime | None]


def bbox_query(raw: str | None, geographic: bool = True, lat_first: bool = False
               ) -> tuple[float, float, float, float] | None:
    """``minx,miny,maxx,maxy`` (or 6 numbers with z) in the bbox CRS, returned in x/y (lon/lat, easting/
    northing) order. For CRS84 ``minx > maxx`` crosses the antimeridian; latitude-first CRSs (EPSG:4326)
    are written lat,lon."""
    if raw is None:
        return None
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) not in (4, 6):
        raise InvalidParameter("bbox must have 4 or 6 comma-separated numbers.")
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        raise InvalidParameter("bbox values must be numbers.") from None
    if not all(math.isfinite(n) for n in nums):
        raise InvalidParameter("bbox values must be finite numbers.")
    if len(nums) == 6:
        minx, miny, _, maxx, maxy, _ = nums
    else:
        minx, miny, maxx, maxy = nums
    if lat_first:
        minx, miny, maxx, maxy = miny, minx, maxy, maxx
    if not geographic:
        if minx > maxx or miny > maxy:
            raise InvalidParameter("bbox: the lower corner is above or right of the upper one.")
        return minx, miny, maxx, maxy
    if not (-90 <= miny <= 90 and -90 <= maxy <= 90):
        raise InvalidParameter("bbox latitudes must lie between -90 and 90.")
    if not (-180 <= minx <= 180 and -180 <= maxx <= 180):
        raise InvalidParameter("bbox longitudes must lie between -180 and 180.")
    if miny > maxy:
        raise InvalidParameter("bbox: the lower latitude is larger than the upper one.")
    return minx, miny, maxx, maxy


def sortby_query(raw: str | None, sortable: set[str]) -> tuple[tuple[str, bool], ...]:
    """``sortby=+a,-b,c`` (OGC API - Features Part 3 / Records): names with an optional direction."""
    if raw is None:
        return ()
    out: list[tuple[str, bool]] = []
    for part in raw.split(","):
        item = part.strip()
        desc = item.startswith("-")
        name = item.lstrip("+-").strip() if item[:1] in "+-" else item
        if item.lower().endswith((" asc", " desc")):
            name, direction = item.rsplit(" ", 1)
            desc = direction.lower() == "desc"
        if not name:
            raise InvalidParameter("sortby: empty sort key.")
        if name not in sortable:
            raise InvalidParameter(f"sortby: '{name}' cannot be sorted on. Sortable: {', '.join(sorted(sortable))}.")
        if any(n == name for n, _ in out):
            raise InvalidParameter(f"sortby: '{name}' is given twice.")
        out.append((name, desc))
    return tuple(out)


def properties_query(raw: str | None, known: list[str]) -> tuple[str, ...] | None:
    """``properties=a,b``: the properties to return (in the collection's order); empty = none."""
    if raw is None:
        return None
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidParameter(f"properties: unknown {', '.join(unknown)}. Known: {', '.join(known)}.")
    return names


def bool_query(raw: str | None, name: str) -> bool:
    if raw is None:
        return False
    try:
        return bool_value(raw)
    except ValueError:
        raise InvalidParameter(f"{name} must be true or false.") from None


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _instant(text: str, end: bool) -> dt.datetime:
    text = text.strip()
    try:
        if _DATE.match(text):
            d = dt.date.fromisoformat(text)
            t = dt.time.max if end else dt.time.min
            return dt.datetime.combine(d, t, tzinfo=dt.UTC)
        if not re.match(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", text):
            raise ValueError
        value = dt.datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
    except ValueError:
        raise InvalidParameter(
            f"datetime: {text!r} is not an RFC 3339 date-time (e.g. 2020-06-01T00:00:00Z) or date."
        ) from None
    return value.astimezone(dt.UTC)


def datetime_query(raw: str | None) -> Interval | None:
    """An instant, a closed interval ``a/b`` (inclusive), or a half-bounded one with ``..`` or empty."""
    if raw is None:
        return None
    raw = raw.strip()
    if "/" not in raw:
        if raw in ("", ".."):
            raise InvalidParameter("datetime: an instant cannot be open.")
        start = _instant(raw, end=False)
        return start, _instant(raw, end=True) if _DATE.match(raw) else start
    parts = raw.split("/")
    if len(parts) != 2:
        raise InvalidParameter("datetime: an interval has exactly one '/'.")
    a, b = (p.strip() for p in parts)
    start = None if a in ("", "..") else _instant(a, end=False)
    end = None if b in ("", "..") else _instant(b, end=True)
    if start is None and end is None:
        raise InvalidParameter("datetime: at least one end of the interval must be given.")
    if start and end and start > end:
        raise InvalidParameter("datetime: the interval starts after it ends.")
    return start, end


def _integer(raw: str, name: str, minimum: int, message: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParameter(message) from None
    if value < minimum:
        raise InvalidParameter(message if minimum == 0 else f"{name} must be at least {minimum}.")
    return value


def limit_query(raw: str | None, default: int, maximum: int) -> int:
    """Page size; values above the maximum are capped (OGC Part 1, /req/core/fc-limit-response-1)."""
    if raw is None:
        return default
    return min(_integer(raw, "limit", 1, "limit must be a positive integer."), maximum)


def offset_query(raw: str | None) -> int:
    if raw is None:
        return 0
    return _integer(raw, "offset", 0, "offset must be a non-negative integer.")


@dataclass(frozen=True)
class Cursor:
    """Key-set position: the sort key of the row next to the page, and the direction to read."""

    key: tuple[Any, ...]
    forward: bool = True

    def encode(self) -> str:
        raw = orjson.dumps({"k": list(self.key), "d": "n" if self.forward else "p"})
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @classmethod
    def decode(cls, token: str | None) -> Cursor | None:
        if token is None:
            return None
        try:
            padded = token + "=" * (-len(token) % 4)
            data = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
            key = tuple(data["k"])
            forward = {"n": True, "p": False}[data["d"]]
            if not key or not all(k is None or isinstance(k, (str, int, float)) for k in key):
                raise ValueError
        except (ValueError, KeyError, TypeError, binascii.Error, orjson.JSONDecodeError):
            raise InvalidParameter("cursor is not a token this server issued.") from None
        return cls(key, forward)


def bool_value(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(raw)


def parse_scalar(raw: str, schema: Mapping[str, Any]) -> Any:
    """Convert a query-string value to the Python type of a property (JSON Schema ``type``/``format``)."""
    kind = schema.get("type")
    fmt = schema.get("format")
    if kind == "integer":
        return int(raw)
    if kind == "number":
        value = float(raw)
        if not math.isfinite(value):
            raise ValueError(raw)
        return value
    if kind == "boolean":
        return bool_value(raw)
    if fmt == "date":
        return dt.date.fromisoformat(raw)
    if fmt == "date-time":
        return _instant(raw, end=False)
    if "enum" in schema and raw not in schema["enum"]:
        raise ValueError(raw)
    return raw


# --------------------------------------------------------------------------------------------- the items query
STANDARD_PARAMS = frozenset({"f", "limit", "offset", "bbox", "datetime", "cursor", "bbox-crs", "crs", "filter",
                             "filter-lang", "filter-crs", "sortby", "properties", "skipGeometry"})


def variant(layer: Layer, role: Role | None) -> str:
    """Which geometry a role sees: the true one, or the displaced one for restricted point layers."""
    return "true" if layer.geom_for_role is None or role == Role.admin else "displaced"


@dataclass(frozen=True)
class ItemsQuery:
    bbox: tuple[float, float, float, float] | None = None
    interval: Interval | None = None
    equals: tuple[tuple[Prop, Any], ...] = ()
    limit: int = 10
    offset: int = 0
    cursor: Cursor | None = None
    bbox_crs: Crs = CRS84_DEF  # the bbox's CRS; its values are already in x/y (easting, northing) order
    filter: Filter | None = None
    sortby: tuple[tuple[str, bool], ...] = ()  # (queryable name, descending)
    properties: tuple[str, ...] | None = None  # None: all
    skip_geometry: bool = False
    crs: Crs = CRS84_DEF  # output CRS
    output: str = "geojson"  # or "csv"

    def count_key(self, layer: Layer, role: Role | None) -> tuple[Any, ...]:
        return (layer.id, variant(layer, role), self.bbox, self.bbox_crs.srid, self.interval,
                tuple((p.name, v) for p, v in self.equals), self.filter)


class Params:
    """A query's parameters as (name, value) pairs, in order (repeated names kept)."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.pairs = list(pairs)

    def names(self) -> list[str]:
        return list(dict.fromkeys(k for k, _ in self.pairs))

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.pairs if k == name]

    def single(self, name: str) -> str | None:
        values = self.all(name)
        if len(values) > 1:
            raise InvalidParameter(f"{name} may be given only once.")
        return values[0] if values else None

    def listed(self, name: str) -> str | None:
        """An array parameter, comma-separated (``bbox=1,2,3,4``, OGC's form) or repeated (``bbox=1&bbox=2…``, as
        many generated clients send arrays): both read as the comma-separated text."""
        values = self.all(name)
        return ",".join(values) if values else None


@dataclass(frozen=True)
class PageLimits:
    default: int
    maximum: int


def sortable_names(layer: Layer) -> set[str]:
    names = {p.name for p in layer.props if p.schema.get("type") not in ("object", "array")}
    if layer.prop(ID_NAME) is None:
        names.add(ID_NAME)
    return names


def _equality_filters(params: Params, layer: Layer) -> tuple[tuple[Prop, Any], ...]:
    for name in params.names():
        if name in STANDARD_PARAMS:
            continue
        prop = layer.prop(name)
        if prop is None or not prop.filterable:
            allowed = sorted(STANDARD_PARAMS | {p.name for p in layer.props if p.filterable})
            raise InvalidParameter(f"Unknown query parameter '{name}'. Allowed: {', '.join(allowed)}.")
    out = []
    for name, raw in params.pairs:
        if name in STANDARD_PARAMS:
            continue
        prop = layer.prop(name)
        assert prop is not None
        try:
            out.append((prop, parse_scalar(raw, prop.schema)))
        except (ValueError, InvalidParameter):
            raise InvalidParameter(f"'{raw}' is not a valid value for {name} ({prop.schema.get('type')}).") from None
    return tuple(out)


def crs_param(params: Params, catalog: Catalog, layer: Layer, name: str) -> Crs:
    raw = params.single(name)
    if raw is None:
        return CRS84_DEF
    if layer.geom is None:
        raise InvalidParameter(f"{name}: the collection '{layer.id}' has no geometry.")
    return parse_crs(raw, catalog.crs, name)


def items_query(params: Params, catalog: Catalog, layer: Layer, role: Role | None, limits: PageLimits,
                output: str = "geojson") -> ItemsQuery:
    """The items query of a collection's query parameters, for ``role``; page sizes by ``limits``."""
    bbox_crs = crs_param(params, catalog, layer, "bbox-crs")
    crs = crs_param(params, catalog, layer, "crs")
    flt = None
    raw_filter = params.single("filter")
    lang = params.single("filter-lang")
    filter_crs = crs_param(params, catalog, layer, "filter-crs")
    if raw_filter is not None:
        flt = parse_filter(raw_filter, lang or "cql2-text", filter_crs)
        check_filter(flt, layer, role)
    elif lang is not None or params.single("filter-crs") is not None:
        raise InvalidParameter("filter-lang and filter-crs need a filter.")
    return ItemsQuery(
        bbox=bbox_query(params.listed("bbox"), bbox_crs.geographic, bbox_crs.lat_first),
        bbox_crs=bbox_crs,
        interval=datetime_query(params.single("datetime")),
        equals=_equality_filters(params, layer),
        filter=flt,
        sortby=sortby_query(params.listed("sortby"), sortable_names(layer)),
        properties=properties_query(params.listed("properties"), [p.name for p in layer.props]),
        skip_geometry=bool_query(params.single("skipGeometry"), "skipGeometry"),
        crs=crs,
        output=output,
        limit=limit_query(params.single("limit"), limits.default, limits.maximum),
        offset=offset_query(params.single("offset")),
        cursor=Cursor.decode(params.single("cursor")),
    )

