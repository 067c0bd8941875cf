"""CQL2 filters (OGC API - Features Part 3) translated into SQLAlchemy expressions with bound values.

Parsing is done by ``cql2`` (the maintained Rust implementation of OGC CQL2 1.0, used by
stac-fastapi): both encodings, ``cql2-text`` and ``cql2-json``, become the same CQL2-JSON tree. That
tree is then translated here rather than by a library backend, because translation has to know things
only this service knows: which SQL expression a property is (joins, enum casts, the displaced
household points analysts see), each property's type (type mismatches are 400s, not database errors),
the filter CRS, and the role. ``pygeofilter``'s SQLAlchemy backend was considered and rejected: it
writes geometry literals into the SQL text, and its text parser rejects standard CQL2 (``a = 1``,
``T_AFTER(d, DATE('…'))``). Every literal here is a bound parameter; no SQL text is built from input.

Supported: basic CQL2 (comparisons, AND/OR/NOT, IS NULL, boolean properties as predicates), advanced
comparison (LIKE, BETWEEN, IN), CASEI, arithmetic (+ - * / % div ^), spatial functions
(S_INTERSECTS, S_DISJOINT, S_EQUALS, S_TOUCHES, S_CROSSES, S_OVERLAPS, S_WITHIN, S_CONTAINS, and
S_DWITHIN with a geodesic distance in metres), temporal functions (all sixteen T_ relations over
instants and intervals) and array functions (A_EQUALS, A_CONTAINS, A_CONTAINEDBY, A_OVERLAPS).
Not supported: ACCENTI (needs the unaccent extension), property-to-property spatial relations
across collections, and functions other than CASEI.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import cql2
import orjson
import shapely
from shapely.geometry import shape as to_shape
from shapely.validation import explain_validity
from sqlalchemy import (
    Date,
    DateTime,
    Double,
    Numeric,
    Text,
    and_,
    bindparam,
    cast,
    false,
    func,
    literal_column,
    not_,
    or_,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import ColumnElement

from app.errors import InvalidParameter
from app.layers.catalog import Layer, Prop
from app.layers.crs import CRS84_DEF, Crs
from app.models.codes import Role

LANGS = ("cql2-text", "cql2-json")
GEOMETRY_NAME = "geometry"  # the queryable name of a collection's geometry
ID_NAME = "id"  # the queryable name of the feature id


class FilterError(InvalidParameter):
    """A filter that cannot be evaluated; the message says why."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"filter: {detail}")


@dataclass(frozen=True)
class Filter:
    """A parsed filter: its canonical CQL2-JSON text (hashable, a cache key) and the CRS of its geometries."""

    json: str
    crs: Crs = CRS84_DEF

    def tree(self) -> Any:
        return orjson.loads(self.json)


# Bounds on a filter's size, so one request cannot make the parser or the planner do unbounded work
# (a portal's filters have tens of nodes; geometry literals of a few thousand vertices fit the text bound).
MAX_FILTER_CHARS = 100_000
MAX_FILTER_NODES = 2_000
MAX_FILTER_DEPTH = 50


def _complexity(node: Any, depth: int = 0) -> int:
    """Nodes of a CQL2-JSON tree (coordinate arrays count as one); FilterError when it is nested too deep."""
    if depth > MAX_FILTER_DEPTH:
        raise FilterError(f"nested more than {MAX_FILTER_DEPTH} levels deep.")
    if isinstance(node, dict):
        if "coordinates" in node or "bbox" in node:
            return 1
        return 1 + sum(_complexity(v, depth + 1) for v in node.values())
    if isinstance(node, list):
        return 1 + sum(_complexity(v, depth + 1) for v in node)
    return 1


# cql2's parser (Rust) recurses once per nesting level and aborts the whole process with a stack overflow on
# deep input ("-" * 8000 + "1 = a" in an 8 MiB stack). It runs on a thread of its own with a 512 MiB stack
# (reserved, not committed): enough for the deepest input that fits MAX_FILTER_CHARS.
_PARSER_STACK = 512 * 1024 * 1024
_parser_lock = threading.Lock()
_parser_pool: ThreadPoolExecutor | None = None


def _on_parser_thread(fn: Callable[[], Any]) -> Any:
    global _parser_pool
    with _parser_lock:
        if _parser_pool is None:
            previous = threading.stack_size(_PARSER_STACK)
            try:
                pool = ThreadPoolExecutor(1, thread_name_prefix="cql2-parser")
                pool.submit(lambda: None).result()  # the thread starts now, with the large stack
            finally:
                threading.stack_size(previous)
            _parser_pool = pool
    return _parser_pool.submit(fn).result()


def parse_filter(raw: str, lang: str | None, crs: Crs = CRS84_DEF) -> Filter:
    """Parse the text of a filter in either encoding (``filter-lang``, cql2-text by default), within the bounds
    above: its length before parsing, its nesting and size (of the parsed tree) after."""
    lang = (lang or "cql2-text").strip().lower()
    if lang not in LANGS:
        raise InvalidParameter(f"filter-lang must be one of {', '.join(LANGS)}, not {lang!r}.")
    if len(raw) > MAX_FILTER_CHARS:
        raise FilterError(f"longer than {MAX_FILTER_CHARS:,} characters.")
    parse = cql2.parse_text if lang == "cql2-text" else cql2.parse_json
    try:
        tree = _on_parser_thread(lambda: parse(raw).to_json())
    except (cql2.ParseError, ValueError) as exc:
        raise FilterError(syntax_message(raw, lang, str(exc))) from None
    nodes = _complexity(tree)
    if nodes > MAX_FILTER_NODES:
        raise FilterError(f"{nodes:,} expression nodes; at most {MAX_FILTER_NODES:,} are accepted.")
    return Filter(orjson.dumps(tree, option=orjson.OPT_SORT_KEYS).decode(), crs)


# The grammar rules cql2's parser (pest) names when it expects something, in the words of the CQL2 text encoding.
_EXPECTED = (
    (("Identifier",), "a property name"),
    (("DECIMAL", "Double", "Negative"), "a number"),
    (("SingleQuotedString",), "a 'quoted text'"),
    (("True", "False"), "TRUE or FALSE"),
    (("Null",), "NULL"),
    (("GEOMETRY",), "a geometry such as POINT(124.0 42.5)"),
    (("Array",), "an array such as (1, 2)"),
    (("ExpressionInParentheses",), "an expression in parentheses"),
    (("UnaryNot", "NotFlag"), "NOT"),
    (("And", "Or"), "AND or OR"),
    (("Eq", "Gt", "GtEq", "Lt", "LtEq", "NotEq"), "a comparison (=, <>, <, <=, >, >=)"),
    (("Add", "Subtract", "Multiply", "Divide", "Modulo", "Power"), "an arithmetic operator (+ - * / % ^)"),
    (("IsNullPostfix",), "IS NULL"),
)


def syntax_message(raw: str, lang: str, parser_message: str) -> str:
    """A parser error in plain words: where (line, column, the text there), what could have come next, and the
    likely cause (an unclosed quote or parenthesis), instead of the parser's own diagram."""
    if lang != "cql2-text":
        return f"not valid CQL2 JSON: {' '.join(parser_message.split())}."
    where = re.search(r"-->\s*(\d+):(\d+)", parser_message)
    if where is None:
        return f"not valid CQL2 text: {' '.join(parser_message.split())}."
    line, col = int(where.group(1)), int(where.group(2))
    text = raw.split("\n")[line - 1] if line - 1 < len(raw.split("\n")) else ""
    at_end = col > len(text.rstrip()) and line >= len(raw.rstrip().split("\n"))
    out = [f"the text cannot be read at line {line}, column {col}"]
    if at_end:
        out.append(" (the end of the filter)")
    else:
        near = text[col - 1: col + 19]
        out.append(f" (at \"{near}\")")
    expected = re.search(r"= expected (.*)", parser_message)
    if expected:
        names = set(re.findall(r"[A-Za-z]+", expected.group(1))) - {"or"}
        words = [w for rules, w in _EXPECTED if names & set(rules)]
        if words:
            out.append(": expected " + (", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0]))
    hints = []
    if raw.count("'") % 2:
        hints.append("a quoted text is not closed with '")
    if raw.count("(") > raw.count(")"):
        hints.append("a parenthesis is not closed")
    elif raw.count(")") > raw.count("("):
        hints.append("a ')' has no '('")
    message = "".join(out) + "."
    if hints:
        message += " Perhaps " + " and ".join(hints) + "."
    return message


# --------------------------------------------------------------------------------------------- typed values
# Kinds: number, string, boolean, date, timestamp, geometry, array, null, interval
@dataclass(frozen=True)
class Value:
    expr: Any  # ColumnElement, or (start, end) for intervals (None = open)
    kind: str
    name: str  # how the message refers to it
    is_property: bool = False
    prop: Prop | None = None


def _bind(value: Any, type_: Any) -> ColumnElement[Any]:
    return bindparam(None, value, type_=type_, unique=True)


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _parse_instant(text: str, what: str) -> tuple[Any, str]:
    try:
        if _DATE.match(text):
            return dt.date.fromisoformat(text), "date"
        value = dt.datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise FilterError(f"{what} {text!r} is not an RFC 3339 date or timestamp.") from None
    if value.tzinfo is None:
        raise FilterError(f"{what} {text!r} needs a time zone (e.g. Z).")
    return value.astimezone(dt.UTC), "timestamp"


def _prop_kind(prop: Prop) -> str:
    s = prop.schema
    t = s.get("type")
    if t in ("integer", "number"):
        return "number"
    if t == "boolean":
        return "boolean"
    if t == "array":
        return "array"
    if t == "object":
        return "object"
    if s.get("format") == "date":
        return "date"
    if s.get("format") == "date-time":
        return "timestamp"
    return "string"


def expand_metres(geom: ColumnElement[Any], metres: ColumnElement[Any] | float) -> ColumnElement[Any]:
    """A lon/lat box around ``geom`` at least ``metres`` wider on every side (for index pre-filters)."""
    if isinstance(metres, (int, float)):  # our own constant (the displacement), written as a SQL number
        metres = literal_column(repr(float(metres)))
    dlat = metres / literal_column("110574.0")
    lat = func.least(literal_column("89.0"),
                     func.greatest(func.abs(func.ST_YMin(geom)), func.abs(func.ST_YMax(geom))) + dlat)
    dlon = metres / (literal_column("111320.0") * func.cos(func.radians(lat)))
    return func.ST_Expand(func.ST_Envelope(geom), dlon, dlat)


SPATIAL: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "s_intersects": func.ST_Intersects,
    "s_equals": func.ST_Equals,
    "s_touches": func.ST_Touches,
    "s_crosses": func.ST_Crosses,
    "s_overlaps": func.ST_Overlaps,
    "s_within": func.ST_Within,
    "s_contains": func.ST_Contains,
}
# Operators after which the left geometry lies inside (or near) the right one: a displaced point can
# only match if its true position lies within 500 m of the literal, which an index can find.
_NEAR = {"s_intersects", "s_equals", "s_touches", "s_crosses", "s_overlaps", "s_within", "s_contains"}

COMPARISONS: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
ORDERED = {"number", "string", "date", "timestamp"}


def _allen(op: str, a: tuple[Any, Any], b: tuple[Any, Any]) -> ColumnElement[bool]:
    """The CQL2 temporal relations (Allen's interval algebra); instants are [t, t]."""
    (a0, a1), (b0, b1) = a, b
    rel: dict[str, Callable[[], ColumnElement[bool]]] = {
        "t_after": lambda: a0 > b1,
        "t_before": lambda: a1 < b0,
        "t_disjoint": lambda: or_(a1 < b0, a0 > b1),
        "t_equals": lambda: and_(a0 == b0, a1 == b1),
        "t_intersects": lambda: and_(a0 <= b1, a1 >= b0),
        "t_during": lambda: and_(a0 > b0, a1 < b1),
        "t_contains": lambda: and_(a0 < b0, a1 > b1),
        "t_starts": lambda: and_(a0 == b0, a1 < b1),
        "t_startedby": lambda: and_(a0 == b0, a1 > b1),
        "t_finishes": lambda: and_(a0 > b0, a1 == b1),
        "t_finishedby": lambda: and_(a0 < b0, a1 == b1),
        "t_meets": lambda: a1 == b0,
        "t_metby": lambda: a0 == b1,
        "t_overlaps": lambda: and_(a0 < b0, a1 > b0, a1 < b1),
        "t_overlappedby": lambda: and_(a0 > b0, a0 < b1, a1 > b1),
    }
    return rel[op]()


TEMPORAL = frozenset({
    "t_after", "t_before", "t_disjoint", "t_equals", "t_intersects", "t_during", "t_contains", "t_starts",
    "t_startedby", "t_finishes", "t_finishedby", "t_meets", "t_metby", "t_overlaps", "t_overlappedby",
})
ARRAY_OPS = {
    "a_equals": lambda a, b: a == b,
    "a_contains": lambda a, b: a.contains(b),
    "a_containedby": lambda a, b: a.contained_by(b),
    "a_overlaps": lambda a, b: a.overlap(b),
}


def _show(node: Any) -> str:
    text = orjson.dumps(node).decode()
    return text if len(text) <= 80 else text[:77] + "…"


class Translator:
    """CQL2-JSON → SQLAlchemy for one collection, as seen by one role."""

    def __init__(self, layer: Layer, role: Role | None, crs: Crs = CRS84_DEF) -> None:
        self.layer = layer
        self.role = role
        self.crs = crs

    # -- entry point
    def predicate(self, tree: Any) -> ColumnElement[bool]:
        v = self.value(tree)
        if v.kind != "boolean":
            raise FilterError(f"the filter must be a condition, but {v.name} is a {v.kind}.")
        return v.expr

    # -- dispatch
    def value(self, node: Any) -> Value:
        if isinstance(node, bool):
            return Value(true() if node else false(), "boolean", str(node).upper())
        if isinstance(node, (int, float)):
            if not math.isfinite(node):
                raise FilterError("numbers must be finite.")
            return Value(_bind(float(node), Double), "number", repr(node))
        if isinstance(node, str):
            return Value(_bind(node, Text), "string", f"'{node}'")
        if node is None:
            return Value(None, "null", "NULL")
        if isinstance(node, list):
            return Value([self.value(x) for x in node], "list", _show(node))
        if not isinstance(node, dict):
            raise FilterError(f"cannot read {_show(node)}.")
        if "property" in node:
            return self.property(str(node["property"]))
        if "date" in node or "timestamp" in node:
            key = "date" if "date" in node else "timestamp"
            value, kind = _parse_instant(str(node[key]), key.upper())
            if key == "date" and kind != "date":
                raise FilterError(f"DATE({node[key]!r}) is not a date (YYYY-MM-DD).")
            if key == "timestamp" and kind != "timestamp":
                raise FilterError(f"TIMESTAMP({node[key]!r}) is not a timestamp.")
            return Value(_bind(value, Date if kind == "date" else DateTime(timezone=True)), kind, _show(node))
        if "interval" in node:
            return self.interval(node["interval"])
        if "bbox" in node:
            return self.bbox(node["bbox"])
        if "type" in node and ("coordinates" in node or "geometries" in node):
            return self.geometry(node)
        if "op" in node:
            return self.operation(str(node["op"]).lower(), node.get("args") or [], node)
        raise FilterError(f"cannot read {_show(node)}.")

    # -- properties
    def property(self, name: str) -> Value:
        layer = self.layer
        if name == GEOMETRY_NAME and layer.geom is not None:
            return Value(layer.geometry(self.role), "geometry", name, True)
        if name == ID_NAME and layer.prop(ID_NAME) is None:
            kind = "number" if layer.id_schema.get("type") in ("integer", "number") else "string"
            return Value(layer.id_expr, kind, name, True)
        prop = layer.prop(name)
        if prop is None:
            names = sorted(queryable_names(layer))
            raise FilterError(f"'{name}' is not a queryable of '{layer.id}'. Queryables: {', '.join(names)}.")
        kind = _prop_kind(prop)
        if kind == "object":
            raise FilterError(f"'{name}' is an object and cannot be filtered on.")
        expr: Any = prop.expr
        if "enum" in prop.schema:
            expr = cast(expr, Text)  # enum labels compare as text
        elif kind == "array":
            expr = cast(expr, ARRAY(Text))
        return Value(expr, kind, name, True, prop)

    # -- literals
    def _geometry_sql(self, geojson: dict[str, Any]) -> ColumnElement[Any]:
        g = func.ST_SetSRID(func.ST_GeomFromGeoJSON(_bind(orjson.dumps(geojson).decode(), Text)), self.crs.srid)
        if self.crs.lat_first:
            g = func.ST_FlipCoordinates(g)
        if self.crs.srid != 4326:
            g = func.ST_Transform(g, 4326)
        return g

    def geometry(self, node: dict[str, Any]) -> Value:
        try:
            geom = to_shape(node)
        except (ValueError, TypeError, AttributeError, IndexError, shapely.errors.ShapelyError) as exc:
            raise FilterError(f"{_show(node)} is not a valid GeoJSON geometry ({exc}).") from None
        if geom.is_empty:
            raise FilterError(f"{_show(node)} is an empty geometry.")
        if not geom.is_valid:
            raise FilterError(f"the geometry {_show(node)} is invalid: {explain_validity(geom)}.")
        coords = shapely.get_coordinates(geom)
        if not all(math.isfinite(c) for c in coords.ravel()):
            raise FilterError("geometry coordinates must be finite.")
        return Value(self._geometry_sql(shapely.geometry.mapping(geom)), "geometry", _show(node))

    def bbox(self, values: Any) -> Value:
        if not isinstance(values, list) or len(values) not in (4, 6) or not all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise FilterError("BBOX takes 4 or 6 finite numbers.")
        x0, y0, x1, y1 = (values[0], values[1], values[3], values[4]) if len(values) == 6 else values
        if self.crs.lat_first:  # written in the CRS's axis order: (lat, lon, lat, lon)
            x0, y0, x1, y1 = y0, x0, y1, x1
        if y0 > y1 or (x0 > x1 and not self.crs.geographic):
            raise FilterError(f"BBOX({', '.join(map(str, values))}): the lower corner is above the upper one.")
        if self.crs.geographic:
            boxes = [(x0, y0, x1, y1)] if x0 <= x1 else [(x0, y0, 180.0, y1), (-180.0, y0, x1, y1)]
            parts = [func.ST_MakeEnvelope(*(_bind(float(c), Double) for c in b), 4326) for b in boxes]
            g = parts[0] if len(parts) == 1 else func.ST_Collect(parts[0], parts[1])
            if self.crs.srid != 4326:
                g = func.ST_Transform(func.ST_SetSRID(g, self.crs.srid), 4326)
            return Value(g, "geometry", f"BBOX({', '.join(map(str, values))})")
        env = func.ST_MakeEnvelope(*(_bind(float(c), Double) for c in (x0, y0, x1, y1)), self.crs.srid)
        # densified before reprojection so the box's edges stay straight in its own CRS
        step = max(x1 - x0, y1 - y0) / 64 or 1.0
        g = func.ST_Transform(func.ST_Segmentize(env, _bind(step, Double)), 4326)
        return Value(g, "geometry", f"BBOX({', '.join(map(str, values))})")

    def interval(self, ends: Any) -> Value:
        if not isinstance(ends, list) or len(ends) != 2:
            raise FilterError("INTERVAL takes two ends.")
        out: list[Any] = []
        for end in ends:
            if end == "..":
                out.append(None)
                continue
            if isinstance(end, str):
                value, kind = _parse_instant(end, "INTERVAL end")
                out.append(Value(_bind(value, Date if kind == "date" else DateTime(timezone=True)), kind, end))
            else:
                v = self.value(end)
                if v.kind not in ("date", "timestamp"):
                    raise FilterError(f"an INTERVAL end must be a date or timestamp, not {v.name} ({v.kind}).")
                out.append(v)
        return Value(tuple(out), "interval", _show(ends))

    # -- operations
    def operation(self, op: str, args: list[Any], node: Any) -> Value:
        if op in ("and", "or"):
            if len(args) < 2:
                raise FilterError(f"{op.upper()} needs at least two operands.")
            parts = [self.condition(a) for a in args]
            return Value(and_(*parts) if op == "and" else or_(*parts), "boolean", op.upper())
        if op == "not":
            self._arity(op, args, 1)
            return Value(not_(self.condition(args[0])), "boolean", "NOT")
        if op in COMPARISONS:
            return self.compare(op, args)
        if op == "isnull":
            self._arity("IS NULL", args, 1)
            v = self.value(args[0])
            if v.kind in ("list", "interval") or v.expr is None:
                raise FilterError("IS NULL applies to a property.")
            return Value(v.expr.is_(None), "boolean", "IS NULL")
        if op == "like":
            self._arity("LIKE", args, 2)
            a, b = self.value(args[0]), self.value(args[1])
            for v in (a, b):
                if v.kind != "string":
                    raise FilterError(f"LIKE compares text, but {v.name} is a {v.kind}.")
            return Value(a.expr.like(b.expr), "boolean", "LIKE")
        if op == "between":
            self._arity("BETWEEN", args, 3)
            a, lo, hi = (self.value(x) for x in args)
            lo_e, hi_e = self._coerce(a, lo, "BETWEEN"), self._coerce(a, hi, "BETWEEN")
            if a.kind not in ORDERED:
                raise FilterError(f"BETWEEN needs an ordered value, but {a.name} is a {a.kind}.")
            return Value(and_(self._as(a, lo, hi) >= lo_e, self._as(a, lo, hi) <= hi_e), "boolean", "BETWEEN")
        if op == "in":
            self._arity("IN", args, 2)
            a, options = self.value(args[0]), self.value(args[1])
            if options.kind != "list" or not options.expr:
                raise FilterError("IN takes a non-empty list of values.")
            exprs = [self._coerce(a, o, "IN") for o in options.expr]
            return Value(self._as(a, *options.expr).in_(exprs), "boolean", "IN")
        if op in ("casei", "accenti"):
            if op == "accenti":
                raise FilterError("ACCENTI is not supported by this server.")
            self._arity("CASEI", args, 1)
            v = self.value(args[0])
            if v.kind != "string":
                raise FilterError(f"CASEI applies to text, but {v.name} is a {v.kind}.")
            return Value(func.lower(v.expr), "string", f"CASEI({v.name})")
        if op in ("+", "-", "*", "/", "%", "div", "^"):
            return self.arithmetic(op, args)
        if op in SPATIAL or op in ("s_disjoint", "s_dwithin"):
            return self.spatial(op, args)
        if op in TEMPORAL:
            return self.temporal(op, args)
        if op in ARRAY_OPS:
            return self.array(op, args)
        raise FilterError(f"the function or operator '{node.get('op')}' is not supported.")

    @staticmethod
    def _arity(op: str, args: list[Any], n: int) -> None:
        if len(args) != n:
            raise FilterError(f"{op.upper()} takes {n} argument{'s' if n > 1 else ''}, not {len(args)}.")

    def condition(self, node: Any) -> ColumnElement[bool]:
        v = self.value(node)
        if v.kind != "boolean":
            raise FilterError(f"{v.name} is a {v.kind}, not a condition.")
        return v.expr

    @staticmethod
    def _as(a: Value, *others: Value) -> Any:
        """Dates compared with timestamps are widened to timestamps (midnight UTC)."""
        if a.kind == "date" and any(o.kind == "timestamp" for o in others):
            return cast(a.expr, DateTime(timezone=True))
        return a.expr

    def _coerce(self, a: Value, b: Value, op: str) -> Any:
        """``b`` as a value comparable with ``a``, or a 400 naming both types."""
        if b.kind == "null" or a.kind == "null":
            raise FilterError(f"{op} cannot compare with NULL; use IS NULL.")
        if a.kind in ("date", "timestamp") and b.kind == "string" and not b.is_property:
            text = b.name.strip("'")
            value, kind = _parse_instant(text, "date")
            return _bind(value, Date if kind == "date" else DateTime(timezone=True))
        if a.kind in ("date", "timestamp") and b.kind in ("date", "timestamp"):
            if a.kind == "timestamp" and b.kind == "date":
                return cast(b.expr, DateTime(timezone=True))
            return b.expr
        if a.kind != b.kind or a.kind in ("geometry", "list", "interval", "array"):
            raise FilterError(f"{op} cannot compare {a.name} ({a.kind}) with {b.name} ({b.kind}).")
        return b.expr

    def compare(self, op: str, args: list[Any]) -> Value:
        self._arity(op, args, 2)
        a, b = self.value(args[0]), self.value(args[1])
        if a.kind == "string" and b.kind in ("date", "timestamp") and not a.is_property:
            a, b = b, a
            op = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}.get(op, op)
        by_label = self._enum_label(op, a, b) or self._enum_label(op, b, a)
        if by_label is not None:
            return by_label
        rhs = self._coerce(a, b, op)
        if op not in ("=", "<>") and a.kind not in ORDERED:
            raise FilterError(f"{op} needs ordered values, but {a.name} is a {a.kind}.")
        return Value(COMPARISONS[op](self._as(a, b), rhs), "boolean", op)

    @staticmethod
    def _enum_label(op: str, prop: Value, lit: Value) -> Value | None:
        """``status = 'poor'`` on an enum column as the column against the label in its own type, not the column
        cast to text: the cast hides the column from its index and its statistics, and on 5 million households
        the planner then walked the whole id index for a label no row has (21 s). A label outside the code list
        matches nothing (``<>``: every row with a value), as it would as text."""
        if (op not in ("=", "<>") or prop.prop is None or "enum" not in prop.prop.schema or lit.is_property
                or lit.kind != "string" or not isinstance(getattr(lit.expr, "value", None), str)):
            return None
        label, column = lit.expr.value, prop.prop.expr
        if label not in prop.prop.schema["enum"]:
            return Value(false() if op == "=" else column.isnot(None), "boolean", op)
        return Value(COMPARISONS[op](column, _bind(label, column.type)), "boolean", op)

    def arithmetic(self, op: str, args: list[Any]) -> Value:
        self._arity(op, args, 2)
        a, b = self.value(args[0]), self.value(args[1])
        for v in (a, b):
            if v.kind != "number":
                raise FilterError(f"arithmetic ({op}) needs numbers, but {v.name} is a {v.kind}.")
        x, y = cast(a.expr, Double), cast(b.expr, Double)
        expr: Any
        if op == "+":
            expr = x + y
        elif op == "-":
            expr = x - y
        elif op == "*":
            expr = x * y
        elif op == "/":
            expr = x / y
        elif op == "div":
            expr = func.trunc(x / y)
        elif op == "%":
            expr = cast(func.mod(cast(a.expr, Numeric), cast(b.expr, Numeric)), Double)
        else:
            expr = func.power(x, y)
        return Value(expr, "number", f"({a.name} {op} {b.name})")

    def spatial(self, op: str, args: list[Any]) -> Value:
        name = op.upper()
        self._arity(name, args, 3 if op == "s_dwithin" else 2)
        a, b = self.value(args[0]), self.value(args[1])
        for v in (a, b):
            if v.kind != "geometry":
                raise FilterError(f"{name} relates geometries, but {v.name} is a {v.kind}.")
        if op == "s_dwithin":
            d = self.value(args[2])
            if d.kind != "number" or d.is_property:
                raise FilterError("S_DWITHIN takes a distance in metres as its third argument.")
            dist = d.expr
            exact = func.ST_DWithin(func.geography(a.expr), func.geography(b.expr), dist)
            reach = dist + literal_column(repr(float(self.layer.displacement_m)))
            return Value(and_(self._prefilter(a, b, reach), exact), "boolean", name)
        if op == "s_disjoint":
            return Value(not_(func.ST_Intersects(a.expr, b.expr)), "boolean", name)
        exact = SPATIAL[op](a.expr, b.expr)
        if op in _NEAR and self._displaced(a, b):
            exact = and_(self._prefilter(a, b, self.layer.displacement_m), exact)
        return Value(exact, "boolean", name)

    def _displaced(self, a: Value, b: Value) -> bool:
        return self.layer.geom_for_role is not None and (a.is_property or b.is_property) and \
            self.layer.geometry(self.role) is not self.layer.geom

    def _prefilter(self, a: Value, b: Value, metres: Any) -> ColumnElement[bool]:
        """An index-friendly ``&&`` on the stored geometry, widened by ``metres`` (distance + displacement)."""
        if a.is_property and not b.is_property:
            prop, other = a, b
        elif b.is_property and not a.is_property:
            prop, other = b, a
        else:
            return true()
        stored = self.layer.geom if prop.is_property else prop.expr
        return stored.op("&&")(expand_metres(other.expr, metres))

    def temporal(self, op: str, args: list[Any]) -> Value:
        name = op.upper()
        self._arity(name, args, 2)
        sides = [self._period(self.value(x), name) for x in args]
        kinds = {v.kind for side in sides for v in side if v is not None}
        ts = "timestamp" in kinds
        typ: Any = DateTime(timezone=True) if ts else Date

        def bound(v: Value | None, lower: bool) -> Any:
            if v is None:
                return literal_column("'-infinity'" if lower else "'infinity'", typ).cast(typ)
            e = cast(v.expr, typ) if (ts and v.kind == "date") else v.expr
            if v.is_property and v.prop is not None and self._open_end(v.prop, lower):
                return func.coalesce(e, literal_column("'-infinity'" if lower else "'infinity'", typ).cast(typ))
            return e

        a = (bound(sides[0][0], True), bound(sides[0][1], False))
        b = (bound(sides[1][0], True), bound(sides[1][1], False))
        return Value(_allen(op, a, b), "boolean", name)

    def _open_end(self, prop: Prop, lower: bool) -> bool:
        """Null ends of the collection's own validity interval mean 'open' (valid_to null = still valid)."""
        t = self.layer.temporal
        if t is None:
            return False
        col = t.start if lower else t.end
        return col is not None and prop.expr is col

    @staticmethod
    def _period(v: Value, name: str) -> tuple[Value | None, Value | None]:
        if v.kind == "interval":
            return v.expr
        if v.kind in ("date", "timestamp"):
            return v, v
        if v.kind == "string" and not v.is_property:
            value, kind = _parse_instant(v.name.strip("'"), name)
            inst = Value(_bind(value, Date if kind == "date" else DateTime(timezone=True)), kind, v.name)
            return inst, inst
        raise FilterError(f"{name} relates instants or intervals, but {v.name} is a {v.kind}.")

    def array(self, op: str, args: list[Any]) -> Value:
        name = op.upper()
        self._arity(name, args, 2)
        left, right = args
        if isinstance(right, dict) and "property" in right and not (isinstance(left, dict) and "property" in left):
            left, right = right, left
            op = {"a_contains": "a_containedby", "a_containedby": "a_contains"}.get(op, op)
        a = self.value(left)
        if a.kind != "array":
            raise FilterError(f"{name} needs an array property, but {a.name} is a {a.kind}.")
        if not isinstance(right, list) or not all(isinstance(x, str) for x in right):
            raise FilterError(f"{name} compares {a.name} with a list of strings, e.g. ('a', 'b').")
        return Value(ARRAY_OPS[op](a.expr, _bind(right, ARRAY(Text))), "boolean", name)


def queryable_names(layer: Layer) -> list[str]:
    names = [p.name for p in layer.props if _prop_kind(p) != "object"]
    if layer.prop(ID_NAME) is None:
        names.insert(0, ID_NAME)
    if layer.geom is not None:
        names.append(GEOMETRY_NAME)
    return names


def to_sql(flt: Filter, layer: Layer, role: Role | None) -> ColumnElement[bool]:
    return Translator(layer, role, flt.crs).predicate(flt.tree())


def check(flt: Filter, layer: Layer, role: Role | None) -> None:
    """Translate once to report errors before any query runs."""
    to_sql(flt, layer, role)

