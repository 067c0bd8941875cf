"""One release: events → definitions → suppression (and optional noise) → aggregates in PostGIS.

Runs where the events are (inside the operator). The device-level tables exist only in the DuckDB process and,
for the next period's out-migration, in the operator's own state directory (``--state-dir``, hashed device ids);
PostGIS receives aggregate rows only, in one transaction that replaces the region's release for the period.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
import h3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from app.errors import InvalidParameter
from app.ingest.pipeline import file_sha256
from app.settings import libpq_url
from app.telecom import engine, sql
from app.telecom.privacy import admin_with_residual_check, suppress_rollup

Progress = Callable[[str], None]
MIN_K = 15  # the database refuses to hold a non-suppressed aggregate of 15 or fewer devices (FlowKit's rule)


@dataclass
class ReleaseOptions:
    events: list[Path]
    region: str
    period: str  # YYYY-MM
    h3_res: int = 8
    k: int = MIN_K
    min_nights: int = 10
    tz: str = "Asia/Shanghai"
    epsilon: float | None = None
    towers: Path | None = None
    floor_res: int | None = None
    admin_level: int | None = None
    state_dir: Path | None = None
    memory_limit: str = "4GB"
    engine: str = "duckdb"


@dataclass
class ReleaseReport:
    region: str
    period: str
    events: int = 0
    devices: int = 0
    homes: int = 0
    published: dict[str, int] = field(default_factory=dict)
    suppressed: int = 0
    # groups of k or fewer devices still withheld at the floor resolution, and the devices in them, per table
    withheld_groups: dict[str, int] = field(default_factory=dict)
    withheld_devices: dict[str, int] = field(default_factory=dict)
    floor_res: int | None = None
    files_read: int = 0
    files_skipped: int = 0
    epsilon_spent: float = 0.0
    epsilon_period_total: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)


async def _region_inputs(conn: asyncpg.Connection, region: str, admin_level: int | None
                         ) -> tuple[int, list[tuple[str, Any]], list[tuple[str, float, float]]]:
    if not await conn.fetchval("SELECT count(*) FROM region WHERE region_id = $1", region):
        raise InvalidParameter(f"no region {region!r}")
    level = admin_level
    if level is None:
        level = await conn.fetchval("SELECT max(level) FROM admin_unit WHERE region_id = $1 AND geom IS NOT NULL "
                                    "AND level <= 4", region)
        if level is None:
            raise InvalidParameter(f"region {region} has no administrative polygons to map cells to")
    units = [(r["code"], shapely.from_wkb(bytes(r["wkb"]))) for r in await conn.fetch(
        "SELECT code, ST_AsBinary(geom) AS wkb FROM admin_unit WHERE region_id = $1 AND level = $2 "
        "AND geom IS NOT NULL ORDER BY code", region, level)]
    facilities = [(r["class"], r["lat"], r["lon"]) for r in await conn.fetch(
        "SELECT class::text AS class, ST_Y(geom) AS lat, ST_X(geom) AS lon FROM facility WHERE region_id = $1",
        region)]
    return level, units, facilities


def cell_admin_table(units: list[tuple[str, Any]], res: int) -> pa.Table:
    """H3 cells → admin unit, once per release, by polyfill (cell centres inside the polygon)."""
    cells: list[int] = []
    codes: list[str] = []
    seen: set[int] = set()
    for code, geom in units:
        for c in h3.geo_to_cells(geom, res):
            ci = h3.str_to_int(c)
            if ci not in seen:
                seen.add(ci)
                cells.append(ci)
                codes.append(code)
    return pa.table({"cell": pa.array(cells, pa.int64()), "admin_code": pa.array(codes, pa.string())})


def _laplace_counts(counts: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """count + Lap(1/ε), rounded, clamped at 0 (Δ = 1: each device counts once in the table)."""
    noisy = np.rint(counts + rng.laplace(0.0, 1.0 / epsilon, size=len(counts)))
    return np.maximum(noisy, 0).astype(np.int64)


async def release(database_url: str, opts: ReleaseOptions, progress: Progress | None = None) -> ReleaseReport:
    say = progress or (lambda msg: None)
    if opts.k < MIN_K:
        raise InvalidParameter(f"k must be at least {MIN_K}: nothing with {MIN_K} or fewer devices is published")
    if not 0 <= opts.h3_res <= 15:
        raise InvalidParameter("--h3-res is 0…15")
    if opts.epsilon is not None and opts.epsilon <= 0:
        raise InvalidParameter("--epsilon must be positive")
    if opts.engine not in ("duckdb", "spark"):
        raise InvalidParameter(f"unknown engine {opts.engine!r}: duckdb or spark")
    opts = replace(opts, events=engine.event_files(opts.events))  # directories stand for the files under them
    period = engine.Period.month(opts.period)
    offset = engine.fixed_offset_seconds(opts.tz, period)
    report = ReleaseReport(opts.region, opts.period)
    t0 = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        report.seconds[stage] = round(now - t0, 3)
        t0 = now

    dsn = libpq_url(database_url)
    pg = await asyncpg.connect(dsn)
    try:
        level, units, facilities = await _region_inputs(pg, opts.region, opts.admin_level)
    finally:
        await pg.close()
    say(f"mapping cells to {len(units)} admin units (level {level})")
    runner = _runner(opts)
    try:
        await _run(runner, dsn, opts, period, offset, units, facilities, report, say, lap)
    finally:
        runner.close()
    return report


def _runner(opts: ReleaseOptions):  # noqa: ANN202
    if opts.engine == "spark":
        from app.telecom.spark import SparkRunner

        return SparkRunner(memory=opts.memory_limit)
    spill = Path(opts.state_dir) / "spill" if opts.state_dir else Path(tempfile.gettempdir()) / "tpa-duckdb-spill"
    return engine.DuckDBRunner(memory_limit=opts.memory_limit, temp_dir=spill)


async def _run(runner, dsn: str, opts: ReleaseOptions, period: engine.Period, offset: int, units: list,  # noqa: ANN001
               facilities: list, report: ReleaseReport, say: Progress, lap: Callable[[str], None]) -> None:
    floor = opts.floor_res if opts.floor_res is not None else max(0, opts.h3_res - 3)
    runner.register("cell_admin", cell_admin_table(units, opts.h3_res))
    lap("admin polyfill")
    say("reading events")
    if opts.state_dir is not None:
        report.events = _events_from_partials(runner, opts, offset, period, report)
    else:
        report.events = runner.load_events(opts.events, res=opts.h3_res, offset_s=offset, period=period,
                                           towers=opts.towers)
    if report.events == 0:
        raise InvalidParameter(f"no events in {opts.period} (local time {opts.tz})")
    lap("read")
    say("computing the definitions")
    engine.definitions(runner, min_nights=opts.min_nights)
    report.devices = int(runner.rows("SELECT count(DISTINCT dev) FROM ev")[0][0])
    report.homes = int(runner.rows("SELECT count(*) FROM home")[0][0])
    if report.homes == 0:  # a release without residents is a mistake in the options, not an empty month
        most = runner.rows(sql.most_nights())[0][0] or 0
        raise InvalidParameter(f"no device has a home: --min-nights {opts.min_nights} asks for more nights than any "
                               f"device was seen on (at most {int(most)} in {opts.period}); lower --min-nights")
    lap("definitions")

    fac_cells = {(h3.str_to_int(h3.latlng_to_cell(lat, lon, opts.h3_res)), cls) for cls, lat, lon in facilities}
    fc = sorted(fac_cells)
    centres = [h3.cell_to_latlng(h3.int_to_str(c)) for c, _ in fc]
    runner.register("fac_cell", pa.table({
        "cell": pa.array([c for c, _ in fc], pa.int64()), "class": pa.array([k for _, k in fc], pa.string()),
        "lat": pa.array([p[0] for p in centres], pa.float64()), "lon": pa.array([p[1] for p in centres],
                                                                                 pa.float64())}))
    homes = [r[0] for r in runner.rows("SELECT DISTINCT home_cell FROM home")]
    hc = [h3.cell_to_latlng(h3.int_to_str(c)) for c in homes]
    runner.register("cell_centre", pa.table({"cell": pa.array(homes, pa.int64()),
                                             "lat": pa.array([p[0] for p in hc], pa.float64()),
                                             "lon": pa.array([p[1] for p in hc], pa.float64())}))
    materialize = runner.materialize
    med = runner.dialect.med

    say("suppressing small groups")
    kw = {"k": opts.k, "base_res": opts.h3_res, "floor_res": floor}
    suppress_rollup(materialize, membership="SELECT DISTINCT dev, cell, CAST(FLOOR((t % 86400) / 3600) AS INTEGER) "
                    "AS hour FROM ev", keys=("hour",), out="pub_presence", **kw)
    home_members = "SELECT dev, home_cell AS cell FROM home"
    suppress_rollup(materialize, membership=home_members, keys=(), out="pub_residents", **kw)
    suppress_rollup(materialize, membership="SELECT h.dev, h.home_cell AS cell, g.rg_km AS x FROM home h "
                    "JOIN gyr g ON g.dev = h.dev", keys=(), stat=med("x"), out="pub_rg", **kw)
    suppress_rollup(materialize, membership="SELECT h.dev, h.home_cell AS cell, d.day_cell AS dest FROM home h "
                    "JOIN day d ON d.dev = h.dev", keys=("dest",), cell_keys=("dest",), out="pub_od", **kw)
    service = sorted({k for _, k in fc})  # facility classes present in the region
    if service:
        materialize("visited", sql.facility_visits())
        materialize("nearest", sql.nearest_facility_km())
        for cls in service:
            q = cls.replace("'", "''")
            suppress_rollup(materialize, membership=(
                "SELECT h.dev, h.home_cell AS cell, "
                "CASE WHEN v.dev IS NULL THEN CAST(0 AS DOUBLE) ELSE CAST(1 AS DOUBLE) END AS x FROM home h "
                f"LEFT JOIN visited v ON v.dev = h.dev AND v.class = '{q}'"), keys=(), stat="AVG(x)",
                out=f"pub_share_{cls}", **kw)
            suppress_rollup(materialize, membership=(
                f"SELECT h.dev, h.home_cell AS cell, n.km AS x FROM home h JOIN nearest n ON n.cell = h.home_cell "
                f"AND n.class = '{q}'"), keys=(), stat=med("x"), out=f"pub_km_{cls}", **kw)
    materialize("adm_counts", sql.residents_by_admin())
    admin_with_residual_check(materialize, membership=home_members, admin_counts="SELECT * FROM adm_counts",
                              published="pub_residents", k=opts.k, out="pub_admin")
    materialize("pub_admin_od", f"SELECT * FROM ({sql.od_by_admin()}) x WHERE n_devices > {opts.k}")
    prev = _previous_home(opts, period)
    if prev is not None:
        runner.register("prev_home", prev)
        materialize("pub_migration", sql.out_migration())
    report.floor_res = floor
    for table, what, group in (("pub_residents", "residents", "cell"), ("pub_od", "od", "cell, dest"),
                               ("pub_presence", "presence", "cell, hour")):
        left = f"{table}_left{floor}"
        groups = runner.rows(f"SELECT COUNT(*) FROM (SELECT DISTINCT {group} FROM {left}) g")[0][0]
        devices = runner.rows(f"SELECT COUNT(DISTINCT dev) FROM {left}")[0][0]
        report.withheld_groups[what], report.withheld_devices[what] = int(groups), int(devices)
    lap("privacy")

    rng = np.random.default_rng(secrets.randbits(128))
    eps = opts.epsilon
    rows = _collect(runner, opts, period, service, prev is not None, eps, rng, report)
    report.epsilon_spent = 3 * eps if eps else 0.0  # residents, OD and admin residents each take ε (Δ = 1)
    say("writing aggregates to PostGIS")
    await _write(dsn, opts, period, *rows, report)
    if opts.state_dir is not None:
        _save_home(runner, opts, period)
    lap("write")


def partial_root(opts: ReleaseOptions, offset_s: int) -> Path:
    """Daily partials are valid for one engine (its device hash), one H3 resolution and one UTC offset."""
    return (Path(opts.state_dir) / opts.region / "partials"  # type: ignore[arg-type]
            / f"{opts.engine}-res{opts.h3_res}-utc{offset_s:+d}")


def _events_from_partials(runner: Any, opts: ReleaseOptions, offset: int, period: engine.Period,
                          report: ReleaseReport) -> int:
    """Normalise only the event files not seen before into daily partials, then read the period's days.

    A batch is first written under ``_incoming/<batch>``; it counts once the manifest lists it, and only then are
    its files moved into the day directories. A batch a crash left unlisted is deleted on the next run, one left
    listed but unmoved is finished, so a file is never counted twice or lost.
    """
    root = partial_root(opts, offset)
    incoming = root / "_incoming"
    manifest_path = root / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"files": {}, "batches": []}
    for batch_dir in sorted(incoming.glob("*")) if incoming.exists() else []:
        if batch_dir.name in manifest["batches"]:
            _move_batch(batch_dir, root)
        else:
            shutil.rmtree(batch_dir)
    new = {}
    for path in opts.events:
        digest = file_sha256(path)
        if digest not in manifest["files"] and digest not in new:
            new[digest] = path
    report.files_read = len(new)
    report.files_skipped = len(opts.events) - len(new)
    if new:
        runner.load_events(list(new.values()), res=opts.h3_res, offset_s=offset, period=None, towers=opts.towers)
        batch = uuid.uuid4().hex
        runner.write_partials(incoming / batch)
        manifest["batches"].append(batch)
        for digest, path in new.items():
            manifest["files"][digest] = {"name": Path(path).name, "batch": batch}
        tmp = manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, manifest_path)
        _move_batch(incoming / batch, root)
    if not any(root.glob("day=*")):
        return 0
    return runner.load_partials(root, period)


def _move_batch(batch_dir: Path, root: Path) -> None:
    for part in batch_dir.rglob("*.parquet"):
        day_dir = root / part.parent.name
        day_dir.mkdir(parents=True, exist_ok=True)
        os.replace(part, day_dir / f"{batch_dir.name}-{part.name}")
    shutil.rmtree(batch_dir, ignore_errors=True)


def _previous_home(opts: ReleaseOptions, period: engine.Period) -> pa.Table | None:
    if opts.state_dir is None:
        return None
    prev_month = (period.start - dt.timedelta(days=1)).strftime("%Y-%m")
    path = _home_file(opts, prev_month)
    return pq.read_table(path) if path.exists() else None


def _home_file(opts: ReleaseOptions, month: str) -> Path:
    """Device homes of a month, per engine (each hashes device ids its own way)."""
    return Path(opts.state_dir) / opts.region / "homes" / opts.engine / month / "home.parquet"  # type: ignore[arg-type]


def _save_home(runner: Any, opts: ReleaseOptions, period: engine.Period) -> None:
    """Device homes of this period (hashed ids) for the next period's out-migration: operator-side only."""
    out = _home_file(opts, period.start.strftime("%Y-%m"))
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(runner.arrow("SELECT dev, home_cell FROM home"), out)


def _collect(runner: Any, opts: ReleaseOptions, period: engine.Period, service: list[str], migration: bool,
             eps: float | None, rng: np.random.Generator, report: ReleaseReport) -> tuple[list, list, set]:
    agg: list[tuple] = []
    od: list[tuple] = []
    cells: set[str] = set()

    def noised(rows: list[tuple], idx: int) -> list[tuple]:
        if not eps or not rows:
            return rows
        counts = np.array([r[idx] for r in rows], dtype=float)
        noisy = _laplace_counts(counts, eps, rng)
        out = []
        for r, n in zip(rows, noisy, strict=True):
            if n > opts.k:
                out.append((*r[:idx], int(n), *r[idx + 1:]))
            else:
                report.suppressed += 1
        return out

    def cell_rows(table: str, indicator: str, hourly: bool = False, stat: bool = False, noise: bool = False
                  ) -> None:
        cols = "cell, h3_res, hour, n_devices" if hourly else "cell, h3_res, NULL AS hour, n_devices"
        rows = runner.rows(f"SELECT {cols}{', stat' if stat else ''} FROM {table}")
        if noise:
            rows = noised(rows, 3)
        for r in rows:
            s = h3.int_to_str(r[0])
            cells.add(s)
            value = float(r[4]) if stat else float(r[3])
            agg.append(("h3", s, r[1], indicator, value, int(r[3]), r[2]))
        report.published[indicator] = report.published.get(indicator, 0) + len(rows)

    cell_rows("pub_presence", "presence", hourly=True)
    cell_rows("pub_residents", "residents", noise=True)
    cell_rows("pub_rg", "median_radius_of_gyration", stat=True)
    for cls in service:
        cell_rows(f"pub_share_{cls}", f"service_share_{cls}", stat=True)
        cell_rows(f"pub_km_{cls}", f"service_km_{cls}", stat=True)
    od_rows = noised(runner.rows("SELECT cell, dest, h3_res, n_devices FROM pub_od"), 3)
    for o, d, res, n in od_rows:
        so, sd = h3.int_to_str(o), h3.int_to_str(d)
        cells.update((so, sd))
        od.append(("h3", so, sd, int(n), res))
    adm = runner.rows("SELECT admin_code, n_devices, suppressed FROM pub_admin")
    if eps:
        live = [r for r in adm if not r[2]]
        kept = {r[0]: r[1] for r in noised([(c, n) for c, n, _ in live], 1)}
        adm = [(c, kept.get(c), c not in kept) for c, _n, _s in adm]
    for code, n, suppressed in adm:
        agg.append(("admin", code, None, "residents", None if suppressed else float(n),
                    None if suppressed else int(n), None))
        report.suppressed += int(bool(suppressed))
    report.published["admin residents"] = sum(1 for _c, _n, s in adm if not s)
    for o, d, n in noised(runner.rows("SELECT origin_admin, dest_admin, n_devices FROM pub_admin_od"), 2):
        od.append(("admin", o, d, int(n), None))
    if migration:
        for code, n, share in runner.rows("SELECT admin_code, n_devices, share_moved FROM pub_migration"):
            ok = n > opts.k
            agg.append(("admin", code, None, "out_migration", float(share) if ok else None, int(n) if ok else None,
                        None))
            report.suppressed += int(not ok)
    report.published["od"] = len(od)
    return agg, od, cells


async def _write(dsn: str, opts: ReleaseOptions, period: engine.Period, agg: list, od: list, cells: set,
                 report: ReleaseReport) -> None:
    rng = asyncpg.Range(period.start, period.end)
    source = f"telecom release {opts.period} (k={opts.k}, H3 res {opts.h3_res})"
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("DELETE FROM telecom_agg WHERE region_id = $1 AND period = $2", opts.region, rng)
            await conn.execute("DELETE FROM telecom_od WHERE region_id = $1 AND period = $2", opts.region, rng)
            hx = sorted(cells)
            await conn.execute(
                "INSERT INTO h3_cell (h3_index, res, parent, geom) SELECT x.h, x.r, x.p, ST_GeomFromText(x.w, 4326) "
                "FROM unnest($1::text[], $2::int[], $3::text[], $4::text[]) AS x(h, r, p, w) "
                "ON CONFLICT (h3_index) DO NOTHING",
                hx, [h3.get_resolution(c) for c in hx],
                [h3.cell_to_parent(c, h3.get_resolution(c) - 1) if h3.get_resolution(c) else None for c in hx],
                [shapely.Polygon([(lon, lat) for lat, lon in h3.cell_to_boundary(c)]).wkt for c in hx])
            await conn.copy_records_to_table(
                "telecom_agg", columns=["region_id", "unit_type", "unit_id", "h3_res", "period", "indicator", "value",
                                        "n_subscribers", "suppressed", "hour", "valid_from", "valid_to", "source"],
                records=[(opts.region, u, i, res, rng, ind, v, n, v is None, hour, period.start, period.end, source)
                         for u, i, res, ind, v, n, hour in agg])
            await conn.copy_records_to_table(
                "telecom_od", columns=["region_id", "unit_type", "origin_unit", "dest_unit", "period", "count",
                                       "suppressed", "h3_res", "valid_from", "valid_to", "source"],
                records=[(opts.region, u, o, d, rng, n, False, res, period.start, period.end, source)
                         for u, o, d, n, res in od])
            params = {"h3_res": opts.h3_res, "min_nights": opts.min_nights, "tz": opts.tz, "engine": opts.engine,
                      "floor_res": opts.floor_res, "events": report.events, "devices": report.devices}
            await conn.execute(
                "INSERT INTO telecom_release (region_id, period, k, epsilon, params, rows_published, rows_suppressed) "
                "VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)", opts.region, rng, opts.k, report.epsilon_spent,
                json.dumps(params), len(agg) + len(od), report.suppressed)
            report.epsilon_period_total = float(await conn.fetchval(
                "SELECT sum(epsilon) FROM telecom_release WHERE region_id = $1 AND period = $2", opts.region, rng))
    finally:
        await conn.close()
