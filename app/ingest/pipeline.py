"""One import: file → mapping → staging table (COPY) → validation report → upsert, in one transaction.

1. The file is read in batches; each row is mapped in Python (column choice, value maps, pseudonyms,
   geometry to WGS84) and COPY-ed as text into a temporary staging table.
2. Validation is set-based SQL over the whole staging table, derived from the target table's own catalogue:
   every column's type (numbers, ranges, enums, booleans, dates), then the rows cast to the table's types and
   checked against its NOT NULL, CHECK and foreign-key constraints (references must lie in the same region),
   admin levels, duplicate keys within the file, keys owned by another region, and registry rows the database
   already holds for a later year. Every problem becomes one report line: line, field, value, reason.
3. With no problem, the rows are upserted by natural key. Registry entities (households, persons) are
   versioned: a row superseded by a later year is copied to ``<table>_history`` with its validity closed, and
   rows of the region absent from a full registry file are closed (``valid_to``), never deleted.

Everything runs in one transaction: one bad row (or a killed process) leaves the database as it was. A
``--dry-run`` runs all of it and rolls back, so its counts are the real ones.
"""

from __future__ import annotations

import csv
import datetime as dt
import getpass
import hashlib
import hmac
import io
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from app.errors import InvalidData, InvalidParameter
from app.ingest.coords import WGS84, parse_source_crs
from app.ingest.entities import VILLAGE_ADMIN_FIELDS, Entity, entity
from app.ingest.geometry import batch_geometries
from app.ingest.mapping import FieldSpec, Mapping, load_mapping, managed_fields, resolve_fields
from app.ingest.readers import SourceFile, open_source, text_of
from app.settings import libpq_url

DEFAULT_BATCH_ROWS = 50_000
MAX_REPORTED = 100_000  # problems kept in the report; the count goes on
_NUM_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$"
_TRUE = ("true", "t", "yes", "y", "1", "是", "有", "√", "✓", "on")
_FALSE = ("false", "f", "no", "n", "0", "否", "无", "×", "✗", "off")
_ARRAY_SPLIT = re.compile(r"\s*[,;，；、|/]\s*")
_INT_MAX = {"smallint": 32767, "integer": 2147483647, "bigint": 9223372036854775807}

Progress = Callable[[str, int, int | None], None]  # (phase, rows done in this step, total rows or None)


@dataclass
class RowError:
    line: int
    field: str
    value: str | None
    reason: str


@dataclass
class ImportOptions:
    entity: str
    path: Path
    region: str
    mapping_path: Path | None = None
    source_crs: str | None = None
    year: int | None = None
    dry_run: bool = False
    partial: bool = False
    repair: bool = False
    layer: str | None = None
    batch_rows: int = DEFAULT_BATCH_ROWS


@dataclass
class ImportResult:
    entity: str
    region: str
    file: str
    rows: int = 0
    errors: list[RowError] = field(default_factory=list)
    error_count: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    closed: int = 0
    archived: int = 0
    repaired: int = 0
    reduced_to_point: int = 0
    committed: bool = False
    dry_run: bool = False
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    @property
    def elapsed(self) -> float:
        return sum(self.seconds.values())

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class Column:
    name: str
    type: str  # format_type(): 'numeric(12,2)', 'cause[]', 'geometry(Point,4326)', …
    notnull: bool
    default: str | None
    enum: str | None  # enum type name (of the column or of its array elements)
    is_array: bool

    @property
    def base(self) -> str:
        return re.sub(r"\(.*\)", "", self.type.removesuffix("[]")).strip()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# ------------------------------------------------------------------------------------------ catalogue
async def table_columns(conn: asyncpg.Connection, table: str) -> list[Column]:
    rows = await conn.fetch(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid) AS default,
               CASE WHEN t.typtype = 'e' THEN t.typname WHEN et.typtype = 'e' THEN et.typname END AS enum,
               t.typcategory = 'A' AS is_array
        FROM pg_attribute a
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        f"public.{table}",
    )
    return [Column(r["attname"], r["type"], r["attnotnull"], r["default"], r["enum"], r["is_array"]) for r in rows]


async def enum_codes(conn: asyncpg.Connection, enum: str) -> list[str]:
    return [r[0] for r in await conn.fetch("SELECT unnest(enum_range(NULL::" + _ident(enum) + "))::text")]


def mappable_fields(ent: Entity, columns: list[Column]) -> dict[str, str]:
    """field → SQL type, for every field a mapping may set."""
    out = {c.name: c.type for c in columns if c.name not in managed_fields() and c.name != ent.geom}
    if ent.linked_admin:
        out.update(VILLAGE_ADMIN_FIELDS)
    return out


# ------------------------------------------------------------------------------------------ row mapping
class RowMapper:
    """Turns a source row into the staging row: one text value per mapped field (None = empty)."""

    def __init__(self, fields: dict[str, FieldSpec], columns: list[str], types: dict[str, str], ent: Entity,
                 pseudonym_key: bytes | None) -> None:
        self.targets = list(fields)
        index = {c: i for i, c in enumerate(columns)}
        self._fns = [self._compile(t, spec, index, types[t], ent, pseudonym_key) for t, spec in fields.items()]

    def __call__(self, row: tuple[Any, ...]) -> list[str | None]:
        return [fn(row) for fn in self._fns]

    @staticmethod
    def _compile(target: str, spec: FieldSpec, index: dict[str, int], sqltype: str, ent: Entity,
                 key: bytes | None) -> Callable[[tuple[Any, ...]], str | None]:
        is_array = sqltype.endswith("[]")
        default = None if spec.default is None else text_of(spec.default)
        if spec.value is not None:
            const = _join([text_of(v) for v in spec.value]) if isinstance(spec.value, list) else text_of(spec.value)
            return lambda row: const
        if spec.object is not None:
            items = [(k, index[c]) for k, c in spec.object.items()]
            return lambda row: json.dumps({k: _json_value(row[i]) for k, i in items}, ensure_ascii=False)
        idx = [index[c] for c in spec.columns]
        values = {str(k).strip(): v for k, v in (spec.values or {}).items()}
        split = re.compile(re.escape(spec.split)) if spec.split else (_ARRAY_SPLIT if is_array else None)

        def mapped(s: str) -> str | None:
            out = values.get(s, s) if values else s
            if isinstance(out, list):
                return _join([text_of(v) for v in out])
            return text_of(out)

        if target in ent.pseudonymous or spec.pseudonymize:
            if key is None:
                raise InvalidParameter("TPA_PSEUDONYM_KEY is not set: refusing to import personal identifiers "
                                       "(national ID numbers and names are stored only as HMAC-SHA256 pseudonyms)")

            def pseudonym(row: tuple[Any, ...]) -> str | None:
                parts = [text_of(row[i]) for i in idx]
                if any(p is None for p in parts):
                    return None
                ident = "\x1f".join(p.strip().upper() for p in parts)  # type: ignore[union-attr]
                return hmac.new(key, ident.encode("utf-8"), hashlib.sha256).hexdigest()

            return pseudonym
        if len(idx) != 1:
            raise InvalidParameter(f"field {target}: several source columns need `pseudonymize: true`")
        i = idx[0]
        if split is not None:
            def multi(row: tuple[Any, ...]) -> str | None:
                s = text_of(row[i])
                if s is None:
                    return default
                parts = [mapped(p) for p in split.split(s.strip()) if p.strip()]
                return _join([p for p in parts if p])
            return multi
        if values or spec.template:
            template = spec.template or "{value}"

            def with_map(row: tuple[Any, ...]) -> str | None:
                s = text_of(row[i])
                if s is None:
                    return default
                m = mapped(s.strip())
                return None if m is None else template.replace("{value}", m)
            return with_map
        if default is not None:
            return lambda row: text_of(row[i]) or default
        return lambda row: text_of(row[i])


def _join(parts: list[str | None]) -> str | None:
    kept = [p for p in parts if p]
    return "|".join(dict.fromkeys(kept)) if kept else None


def _json_value(v: Any) -> Any:
    v = text_of(v) if isinstance(v, str) else v
    if v is None or isinstance(v, bool | int):
        return v
    if isinstance(v, float):
        return None if math.isnan(v) else v
    if isinstance(v, dt.date):
        return v.isoformat()
    s = str(v).strip()
    try:
        return int(s) if re.fullmatch(r"[+-]?\d{1,15}", s) else float(s) if re.fullmatch(_NUM_RE, s) else s
    except ValueError:
        return s


# ------------------------------------------------------------------------------------------ SQL rules
def _rule(col: Column, v: str, spec: FieldSpec | None, codes: dict[str, list[str]]) -> tuple[str | None, str, str]:
    """(acceptance test or None, cast to the column type, reason when the test fails) for text expression v."""
    t = f"btrim({v})"
    scale = spec.scale if spec and spec.scale else None
    x = f"({t}::numeric * {scale!r})" if scale else f"{t}::numeric"
    base = col.base
    if spec is not None and spec.lookup == "name":
        level = " AND a.level = 5" if col.name in ("village_code",) else ""
        q = f"FROM admin_unit a WHERE a.region_id = $1 AND a.name = {t}{level}"
        return (f"(SELECT count(*) {q}) = 1", f"(SELECT a.code {q})",
                "no single administrative unit of the region has this name")
    if col.is_array:
        if col.enum:
            typ = _ident(col.enum)
            return (f"string_to_array({t}, '|') <@ {_codes_array(codes[col.enum])}",
                    f"string_to_array({t}, '|')::{typ}[]", "not one of: " + ", ".join(codes[col.enum]))
        return None, f"string_to_array({t}, '|')::{col.type}", ""
    if col.enum:
        typ = _ident(col.enum)
        return (f"{t} = ANY ({_codes_array(codes[col.enum])})", f"{t}::{typ}",
                "not one of: " + ", ".join(codes[col.enum]))
    if base in _INT_MAX:
        return (f"CASE WHEN {t} ~ '{_NUM_RE}' THEN {x} = trunc({x}) AND abs({x}) <= {_INT_MAX[base]} ELSE false END",
                f"{x}::{base}", f"not a whole number in the range of {base}")
    if base == "numeric":
        m = re.match(r"numeric\((\d+),(\d+)\)", col.type.replace(" ", ""))
        if m:
            p, s = int(m.group(1)), int(m.group(2))
            return (f"CASE WHEN {t} ~ '{_NUM_RE}' THEN abs(round({x}, {s})) < 1e{p - s} ELSE false END",
                    f"round({x}, {s})", f"not a number below 10^{p - s}")
        return f"{t} ~ '{_NUM_RE}'", x, "not a number"
    if base in ("double precision", "real"):
        return f"{t} ~ '{_NUM_RE}'", f"{x}::{base}", "not a number"
    if base == "boolean":
        words = ", ".join(_lit(w) for w in _TRUE + _FALSE)
        return (f"lower({t}) IN ({words})", f"lower({t}) IN ({', '.join(_lit(w) for w in _TRUE)})",
                "not a yes/no value (true/false, yes/no, 1/0, 是/否, 有/无)")
    if base == "date":
        return f"pg_temp.tpa_date({t}) IS NOT NULL", f"pg_temp.tpa_date({t})", "not a date (YYYY-MM-DD)"
    if base == "jsonb":
        return None, f"{v}::jsonb", ""
    if base.startswith("geometry"):
        return None, f"{v}::geometry", ""
    if base == "character":
        n = int(re.search(r"\((\d+)\)", col.type).group(1)) if "(" in col.type else 1  # type: ignore[union-attr]
        return f"length({t}) = {n}", f"upper({t})", f"not {n} characters"
    return None, t, ""


def _codes_array(codes: list[str]) -> str:
    return _lit("{" + ",".join('"' + c + '"' for c in codes) + "}") + "::text[]"


_TEMP_FUNCTIONS = """
CREATE OR REPLACE FUNCTION pg_temp.tpa_date(v text) RETURNS date LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF v IS NULL OR v !~ '^[0-9]{4}([-/.][0-9]{1,2}[-/.][0-9]{1,2}|[0-9]{4})(T.*| .*)?$' THEN RETURN NULL; END IF;
  RETURN translate(split_part(split_part(v, 'T', 1), ' ', 1), '/.', '--')::date;
EXCEPTION WHEN others THEN RETURN NULL;
END $$;
"""


# ------------------------------------------------------------------------------------------ the run
class Importer:
    def __init__(self, conn: asyncpg.Connection, opts: ImportOptions, pseudonym_key: bytes | None,
                 progress: Progress | None = None) -> None:
        self.conn = conn
        self.opts = opts
        self.ent = entity(opts.entity)
        self.key = pseudonym_key
        self.progress = progress or (lambda phase, n, total: None)
        self.result = ImportResult(opts.entity, opts.region, Path(opts.path).name, dry_run=opts.dry_run)
        self._t = time.perf_counter()

    def _phase(self, name: str) -> None:
        now = time.perf_counter()
        self.result.seconds[name] = self.result.seconds.get(name, 0.0) + now - self._t
        self._t = now

    def _error(self, line: int, fld: str, value: str | None, reason: str) -> None:
        self.result.error_count += 1
        if len(self.result.errors) < MAX_REPORTED:
            self.result.errors.append(RowError(line, fld, value, reason))

    async def run(self) -> ImportResult:
        loaded = load_mapping(self.opts.mapping_path)
        mapping = loaded.mapping
        if mapping.entity and mapping.entity != self.ent.name:
            raise InvalidParameter(f"the mapping is for {mapping.entity}, not {self.ent.name}")
        src = open_source(self.opts.path, encoding=mapping.source.encoding,
                          layer=self.opts.layer or mapping.source.layer, sheet=mapping.source.sheet,
                          header_row=mapping.source.header_row,
                          delimiter=mapping.source.delimiter)
        region = await self.conn.fetchrow("SELECT region_id, metadata FROM region WHERE region_id = $1",
                                          self.opts.region)
        if region is None:
            raise InvalidParameter(f"no region {self.opts.region!r}: create it first with `tpa region create`")
        year = self.opts.year or mapping.year or dt.date.today().year
        valid_from = dt.date(year, 1, 1)
        digest = file_sha256(Path(self.opts.path))
        source_label = mapping.source_label or f"import {src.path.name} sha256:{digest[:12]}"

        columns = await table_columns(self.conn, self.ent.table)
        bycol = {c.name: c for c in columns}
        types = mappable_fields(self.ent, columns)
        fields = resolve_fields(mapping, src.columns, list(types))
        if self.ent.key not in fields:
            raise InvalidParameter(f"the mapping gives no {self.ent.key} (the natural key of {self.ent.name})")
        missing = [c.name for c in columns if c.notnull and c.default is None and c.name not in fields
                   and c.name not in managed_fields() and c.name != self.ent.geom]
        if self.ent.linked_admin and "name" not in fields:
            missing.append("name")
        if missing:  # one message for the file, not one per row
            example = "level: {value: 3}" if "level" in missing else f"{missing[0]}: {{from: <column>}}"
            raise InvalidParameter(f"the mapping gives no column or value for the required field(s) "
                                   f"{', '.join(missing)}: add them under fields (e.g. {example})")
        geo = self._geometry_plan(mapping, src)
        mapper = RowMapper(fields, src.columns, types, self.ent, self.key)
        codes = {c.enum: await enum_codes(self.conn, c.enum) for c in columns if c.enum}

        await self.conn.execute("SET LOCAL statement_timeout = 0")
        await self.conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('tpa-import:' || $1, 0))",
                                self.opts.region)
        await self.conn.execute(_TEMP_FUNCTIONS)
        stage_cols = ["_line", *(f"f_{t}" for t in mapper.targets), "_geom"]
        await self.conn.execute(
            "CREATE TEMP TABLE _stage (_line integer PRIMARY KEY, "
            + "".join(f"{_ident('f_' + t)} text, " for t in mapper.targets)
            + "_geom text) ON COMMIT DROP")
        await self.conn.execute("CREATE TEMP TABLE _errors (line integer, field text, value text, reason text) "
                                "ON COMMIT DROP")
        self._phase("prepare")

        await self._stage(src, mapper, geo, stage_cols)
        self._phase("read and stage")
        self.progress("validating", 0, None)
        await self._validate(columns, bycol, fields, types, codes, valid_from, source_label, geo is not None)
        self._phase("validate")
        await self._collect_errors()
        if self.result.error_count:
            return self.result
        self.progress("writing", 0, None)
        await self._apply(columns, fields, valid_from, geo is not None)
        if self.ent.name == "boundaries" and mapping.admin_levels:
            levels = {str(k): v for k, v in mapping.admin_levels.items()}
            await self.conn.execute("UPDATE region SET metadata = jsonb_set(metadata, '{admin_levels}', "
                                    "coalesce(metadata->'admin_levels', '{}') || $2::jsonb) WHERE region_id = $1",
                                    self.opts.region, json.dumps(levels, ensure_ascii=False))
        if not self.opts.dry_run:
            await self.conn.execute(
                "INSERT INTO import_log (region_id, entity, file_name, file_sha256, mapping_sha256, valid_from, "
                "rows_read, inserted, updated, unchanged, closed, archived, started, actor) "
                "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12, now(), $13)",
                self.opts.region, self.ent.name, src.path.name, digest, loaded.sha256, valid_from, self.result.rows,
                self.result.inserted, self.result.updated, self.result.unchanged, self.result.closed,
                self.result.archived, _actor())
        self._phase("write")
        return self.result

    # -------------------------------------------------------------------------------- geometry plan
    def _geometry_plan(self, mapping: Mapping, src: SourceFile) -> dict[str, Any] | None:
        ent = self.ent
        g = mapping.geometry
        if ent.geom is None:
            if g.x or g.wkt:
                raise InvalidParameter(f"{ent.name} have no geometry; remove the mapping's geometry section")
            return None
        crs_text = self.opts.source_crs or g.crs
        plan: dict[str, Any] = {"x": None, "y": None, "wkt": None}
        if g.x and g.y:
            for c in (g.x, g.y):
                if c not in src.columns:
                    raise InvalidParameter(f"geometry column {c!r} is not in the file")
            plan.update(x=src.columns.index(g.x), y=src.columns.index(g.y))
        elif g.wkt:
            if g.wkt not in src.columns:
                raise InvalidParameter(f"geometry column {g.wkt!r} is not in the file")
            plan["wkt"] = src.columns.index(g.wkt)
        elif src.kind == "vector" and src.geometry_type:
            crs_text = crs_text or src.crs
            if crs_text is None:
                raise InvalidParameter(f"{src.path.name} declares no coordinate system: pass --source-crs EPSG:xxxx")
        else:
            if ent.geom_required:
                raise InvalidParameter(f"{ent.name} need a location: map geometry x/y (or wkt) columns")
            return None
        plan["crs"] = parse_source_crs(crs_text) or WGS84
        return plan

    # -------------------------------------------------------------------------------- staging
    async def _stage(self, src: SourceFile, mapper: RowMapper, geo: dict[str, Any] | None,
                     stage_cols: list[str]) -> None:
        total = src.total
        self.progress("reading", 0, total)
        for batch in src.batches(self.opts.batch_rows):
            if geo is not None:
                outcome = batch_geometries(
                    batch, x_idx=geo["x"], y_idx=geo["y"], wkt_idx=geo["wkt"], src=geo["crs"],
                    target_type=self.ent.geom_type or "GEOMETRY", required=self.ent.geom_required,
                    repair=self.opts.repair, field_name="geometry")
                ewkb = outcome.ewkb
                for i, fld, value, reason in outcome.errors:
                    self._error(batch.lines[i], fld, value, reason)
                self.result.repaired += outcome.repaired
                self.result.reduced_to_point += outcome.reduced_to_point
            else:
                ewkb = [None] * len(batch.rows)
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            for line, row, g in zip(batch.lines, batch.rows, ewkb, strict=True):
                w.writerow((line, *mapper(row), g))
            await self.conn.copy_to_table("_stage", source=io.BytesIO(buf.getvalue().encode("utf-8")),
                                          columns=stage_cols, format="csv")
            self.result.rows += len(batch.rows)
            self.progress("reading", len(batch.rows), total)
        if self.result.rows == 0:
            raise InvalidParameter(f"{src.path.name} has no data rows")

    # -------------------------------------------------------------------------------- validation
    async def _validate(self, columns: list[Column], bycol: dict[str, Column], fields: dict[str, FieldSpec],
                        types: dict[str, str], codes: dict[str, list[str]], valid_from: dt.date, source: str,
                        has_geom: bool) -> None:
        ent, conn, region = self.ent, self.conn, self.opts.region
        # Python-side problems (geometry) are already counted; put them in the table so their rows are skipped.
        if self.result.errors:
            await conn.copy_records_to_table("_errors", records=[(e.line, e.field, e.value, e.reason)
                                                                 for e in self.result.errors])
        extra = {n: Column(n, t, n == "name", None, None, False) for n, t in VILLAGE_ADMIN_FIELDS.items()} \
            if ent.linked_admin else {}
        allcols = {**bycol, **extra}
        # 1. types, one pass over the staging table
        checks, passes, casts = [], [], {}
        for target, spec in fields.items():
            col = allcols[target]
            ok, cast, reason = _rule(col, f"s.{_ident('f_' + target)}", spec, codes)
            casts[target] = cast
            if ok is not None:
                v = f"s.{_ident('f_' + target)}"
                checks.append(f"({_lit(target)}, {v}, CASE WHEN {v} IS NULL THEN NULL WHEN NOT ({ok}) "
                              f"THEN {_lit(reason)} END)")
                passes.append(f"({v} IS NULL OR coalesce({ok}, false))")
        if checks:
            # One cheap test per row finds the failing rows; only those are taken apart field by field.
            await _execute(
                conn, "INSERT INTO _errors SELECT s._line, e.f, left(e.v, 80), e.r FROM (SELECT * FROM _stage s "
                f"WHERE NOT ({' AND '.join(passes)}) OFFSET 0) s CROSS JOIN LATERAL "
                f"(VALUES {', '.join(checks)}) AS e(f, v, r) WHERE e.r IS NOT NULL", region)
        # 2. rows cast to the table's types (no constraints yet)
        await conn.execute(f"CREATE TEMP TABLE _typed ON COMMIT DROP AS SELECT *, NULL::integer AS _line "
                           f"FROM {ent.table} WITH NO DATA")
        for n, t in VILLAGE_ADMIN_FIELDS.items() if ent.linked_admin else ():
            await conn.execute(f"ALTER TABLE _typed ADD COLUMN {_ident(n)} {t}")
        names, exprs = [], []
        for col in [*columns, *extra.values()]:
            names.append(_ident(col.name))
            if col.name == "region_id":
                exprs.append("$1")
            elif col.name == "valid_from":
                exprs.append("$2::date")
            elif col.name == "valid_to":
                exprs.append("NULL")
            elif col.name == "source":
                exprs.append("$3")
            elif col.name in casts:
                exprs.append(f"coalesce({casts[col.name]}, {col.default})" if col.default else casts[col.name])
            elif col.name == ent.geom and has_geom:
                exprs.append("s._geom::geometry")
            else:
                exprs.append(col.default or "NULL")
        await _execute(
            conn, f"INSERT INTO _typed ({', '.join(names)}, _line) SELECT {', '.join(exprs)}, s._line FROM _stage s "
            "WHERE NOT EXISTS (SELECT 1 FROM _errors e WHERE e.line = s._line)", region, valid_from, source)
        await conn.execute("CREATE INDEX ON _typed (" + _ident(ent.key) + ")")
        await conn.execute("ANALYZE _typed")
        # 3. constraints of the target table, evaluated on the typed rows
        present = set(fields) | {"region_id", "valid_from", "source"} | ({ent.geom} if has_geom else set())
        tests = []
        for col in [*columns, *extra.values()]:
            if col.notnull:
                why = "required: no value" if col.name in fields or col.name == ent.geom else \
                    "required: no value (the mapping gives no column for this field)"
                tests.append((_lit(col.name), "NULL", f"t.{_ident(col.name)} IS NULL", _lit(why)))
        for con in await conn.fetch(
                "SELECT conname, pg_get_constraintdef(oid) AS def, "
                "(SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute "
                " WHERE attrelid = c.conrelid AND attnum = ANY (c.conkey)) AS cols "
                "FROM pg_constraint c WHERE conrelid = $1::regclass AND contype = 'c'", f"public.{ent.table}"):
            cols = con["cols"] or []
            if not set(cols) & present:
                continue
            expr = re.sub(r"^CHECK\s*", "", con["def"]).removesuffix(" NOT VALID")
            shown = " || ', ' || ".join(f"{_lit(c + '=')} || coalesce(t.{_ident(c)}::text, 'null')" for c in cols)
            tests.append((_lit(",".join(cols)), f"left({shown or 'NULL'}, 80)", f"({expr}) IS FALSE",
                          _lit(f"violates {con['conname']}: {expr}")))
        if tests:
            values = ", ".join(f"({f}, {v}, {c}, {r})" for f, v, c, r in tests)
            any_fails = " OR ".join(f"coalesce({c}, false)" for _f, _v, c, _r in tests)
            await conn.execute(
                f"INSERT INTO _errors SELECT t._line, e.f, e.v, e.r FROM (SELECT * FROM _typed t WHERE {any_fails} "
                f"OFFSET 0) t CROSS JOIN LATERAL (SELECT * FROM (VALUES {values}) AS x(f, v, c, r) WHERE x.c) AS e")
        await self._reference_checks(fields, has_geom)
        # duplicate natural keys within the file
        k = _ident(ent.key)
        await conn.execute(
            f"INSERT INTO _errors SELECT _line, {_lit(ent.key)}, left({k}::text, 80), "
            f"'duplicate ' || {_lit(ent.key)} || ' in the file (first on line ' || first || ')' FROM "
            f"(SELECT _line, {k}, min(_line) OVER (PARTITION BY {k}) AS first FROM _typed WHERE {k} IS NOT NULL) d "
            "WHERE _line <> first")
        # keys owned by another region; registry rows the database holds for a later year
        await conn.execute(
            f"INSERT INTO _errors SELECT t._line, {_lit(ent.key)}, left(t.{k}::text, 80), "
            f"'belongs to region ' || x.region_id || ', not ' || $1 FROM _typed t JOIN {ent.table} x "
            f"ON x.{k} = t.{k} WHERE x.region_id <> $1", region)
        if ent.linked_admin:
            await conn.execute(
                "INSERT INTO _errors SELECT t._line, 'code', t.code, CASE WHEN a.region_id <> $1 "
                "THEN 'belongs to region ' || a.region_id ELSE 'is an administrative unit of level ' || a.level "
                "|| ', not a village (5)' END FROM _typed t JOIN admin_unit a ON a.code = t.code "
                "WHERE a.region_id <> $1 OR a.level <> 5", region)
        if ent.versioned:
            await conn.execute(
                f"INSERT INTO _errors SELECT t._line, {_lit(ent.key)}, left(t.{k}::text, 80), "
                "'the database already holds this record for a later year (valid from ' || x.valid_from || ')' "
                f"FROM _typed t JOIN {ent.table} x ON x.{k} = t.{k} WHERE x.valid_from > t.valid_from")

    async def _reference_checks(self, fields: dict[str, FieldSpec], has_geom: bool) -> None:
        ent, conn = self.ent, self.conn
        fks = await conn.fetch(
            "SELECT c.conname, a.attname::text AS col, c.confrelid::regclass::text AS ref, "
            "fa.attname::text AS refcol FROM pg_constraint c "
            "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
            "JOIN pg_attribute fa ON fa.attrelid = c.confrelid AND fa.attnum = c.confkey[1] "
            "WHERE c.conrelid = $1::regclass AND c.contype = 'f' AND cardinality(c.conkey) = 1",
            f"public.{ent.table}")
        refs = [(r["col"], r["ref"], r["refcol"]) for r in fks if r["col"] != "region_id"]
        if ent.linked_admin:
            refs = [r for r in refs if r[0] != "code"] + [("parent_code", "admin_unit", "code")]
        for col, ref, refcol in refs:
            if col not in fields:
                continue
            has_region = await conn.fetchval(
                "SELECT count(*) FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'region_id' "
                "AND NOT attisdropped", ref)
            cond = f"r.{_ident(refcol)} = t.{_ident(col)}" + (" AND r.region_id = $1" if has_region else "")
            level = ent.ref_levels.get(col)
            if level is not None:
                cond += f" AND r.level = {int(level)}"
            self_ref = f" OR EXISTS (SELECT 1 FROM _typed p WHERE p.{_ident(refcol)} = t.{_ident(col)})" \
                if ref == ent.table else ""
            what = f"{ref} of level {level}" if level is not None else ref
            await conn.execute(
                f"INSERT INTO _errors SELECT t._line, {_lit(col)}, left(t.{_ident(col)}::text, 80), "
                f"{_lit(f'no {what} with this {refcol} in region ')} || $1 FROM _typed t "
                f"WHERE t.{_ident(col)} IS NOT NULL AND NOT (EXISTS (SELECT 1 FROM {ref} r WHERE {cond}){self_ref})",
                self.opts.region)
        if "parent_code" in fields and (ent.table == "admin_unit" or ent.linked_admin):
            # the level of a unit of the file: its own column (boundaries), or 5 (every village is one)
            own, theirs = ("t.level", "p.level") if ent.table == "admin_unit" else ("5", "5")
            await conn.execute(
                "INSERT INTO _errors SELECT t._line, 'parent_code', t.parent_code, "
                "'the parent is at level ' || pl || ', which is not above this unit''s level ' || " + own + " "
                f"FROM (SELECT t.*, coalesce((SELECT {theirs} FROM _typed p WHERE p.code = t.parent_code LIMIT 1), "
                "(SELECT a.level FROM admin_unit a WHERE a.code = t.parent_code)) AS pl FROM _typed t) t "
                f"WHERE t.parent_code IS NOT NULL AND pl >= {own}")

    async def _collect_errors(self) -> None:
        rows = await self.conn.fetch(
            "SELECT line, field, value, reason FROM _errors ORDER BY line, field LIMIT $1", MAX_REPORTED)
        total = await self.conn.fetchval("SELECT count(*) FROM _errors")
        self.result.errors = [RowError(r["line"], r["field"], r["value"], r["reason"]) for r in rows]
        self.result.error_count = int(total)

    # -------------------------------------------------------------------------------- apply
    async def _apply(self, columns: list[Column], fields: dict[str, FieldSpec], valid_from: dt.date,
                     has_geom: bool) -> None:
        ent, conn, region = self.ent, self.conn, self.opts.region
        k = _ident(ent.key)
        if ent.linked_admin:
            admin_set = [c for c in ("name", "name_en", "parent_code") if c in fields]
            await conn.execute(
                "INSERT INTO admin_unit AS x (code, region_id, level, parent_code, name, name_en, valid_from, source) "
                "SELECT code, region_id, 5, parent_code, name, name_en, valid_from, source FROM _typed "
                "ON CONFLICT (code) DO UPDATE SET "
                + ", ".join(f"{c} = EXCLUDED.{c}" for c in [*admin_set, "valid_from", "valid_to", "source"])
                + " WHERE (" + ", ".join(f"x.{c}" for c in admin_set + ["valid_from", "valid_to"]) + ") "
                "IS DISTINCT FROM (" + ", ".join(f"EXCLUDED.{c}" for c in admin_set + ["valid_from", "valid_to"])
                + ")")
        if ent.versioned:
            names = ", ".join(_ident(c.name) for c in columns)
            picks = ", ".join("coalesce(x.valid_to, t.valid_from)" if c.name == "valid_to" else f"x.{_ident(c.name)}"
                              for c in columns)
            status = await conn.execute(
                f"INSERT INTO {ent.history} ({names}) SELECT {picks} FROM {ent.table} x JOIN _typed t "
                f"ON t.{k} = x.{k} WHERE x.valid_from < t.valid_from ON CONFLICT DO NOTHING")
            self.result.archived = int(status.split()[-1])
        if ent.table == "admin_unit":  # parents may come later in the file
            await conn.execute("SET CONSTRAINTS admin_unit_parent_code_fkey DEFERRED")
        table_cols = [c.name for c in columns]
        written = [c for c in table_cols if c in fields or c in ("valid_from", "valid_to", "source")
                   or (c == ent.geom and has_geom)]
        updated = [c for c in written if c != ent.key]
        order = " ORDER BY level" if ent.table == "admin_unit" else ""
        cols = ", ".join(_ident(c) for c in table_cols)
        sql = (
            f"WITH up AS (INSERT INTO {ent.table} AS x ({cols}) SELECT {cols} FROM _typed{order} "
            f"ON CONFLICT ({k}) DO UPDATE SET " + ", ".join(f"{_ident(c)} = EXCLUDED.{_ident(c)}" for c in updated)
            + " WHERE (" + ", ".join(f"x.{_ident(c)}" for c in updated) + ") IS DISTINCT FROM ("
            + ", ".join(f"EXCLUDED.{_ident(c)}" for c in updated) + ") RETURNING (xmax = 0) AS ins) "
            "SELECT count(*) FILTER (WHERE ins) AS i, count(*) FILTER (WHERE NOT ins) AS u FROM up")
        row = await conn.fetchrow(sql)
        self.result.inserted, self.result.updated = int(row["i"]), int(row["u"])
        self.result.unchanged = self.result.rows - self.result.inserted - self.result.updated
        if ent.versioned and not self.opts.partial:
            status = await conn.execute(
                f"UPDATE {ent.table} x SET valid_to = $2 WHERE x.region_id = $1 AND x.valid_to IS NULL "
                f"AND x.valid_from < $2 AND NOT EXISTS (SELECT 1 FROM _typed t WHERE t.{k} = x.{k})",
                region, valid_from)
            self.result.closed = int(status.split()[-1])


async def _execute(conn: asyncpg.Connection, sql: str, *args: Any) -> str:
    """Execute with just the arguments the statement uses ($1, $2, … appear only where a rule needs them)."""
    used = max((int(n) for n in re.findall(r"\$(\d+)", sql)), default=0)
    return await conn.execute(sql, *args[:used])


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


async def run_import(database_url: str, opts: ImportOptions, pseudonym_key: bytes | None = None,
                     progress: Progress | None = None) -> ImportResult:
    """Run one import in one transaction; commit only when no row failed and it is not a dry run."""
    conn = await asyncpg.connect(libpq_url(database_url))
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            importer = Importer(conn, opts, pseudonym_key, progress)
            result = await importer.run()
        except asyncpg.PostgresError as exc:
            await tx.rollback()
            raise InvalidData(f"the database refused the import: {exc}") from None
        except BaseException:
            await tx.rollback()
            raise
        if result.ok and not opts.dry_run:
            await tx.commit()
            result.committed = True
        else:
            await tx.rollback()
        return result
    finally:
        await conn.close()
