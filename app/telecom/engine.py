"""Run the telecom definitions (``app.telecom.sql``) on DuckDB.

Reading is the only engine-specific step: events come from Parquet or CSV files with ``device_id``, ``ts`` (UTC)
and either ``lon``/``lat`` or ``cell_id`` plus a tower file (``cell_id, lon, lat``). Device ids are hashed to
64-bit integers as they are read; positions become H3 cells through a vectorised Arrow UDF (polars-h3); UTC
becomes local seconds with the zone's fixed offset. After that only the portable SQL of ``app.telecom.sql`` runs.
Device-level tables live only in this process (or the operator's working directory): nothing here writes to
PostGIS.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import pyarrow as pa

from app.errors import InvalidParameter
from app.telecom import sql

log = logging.getLogger("tpa.telecom")

BATCH_ROWS = 2_000_000


@dataclass(frozen=True)
class Period:
    start: dt.date  # first local day
    end: dt.date  # first local day after the period

    @classmethod
    def month(cls, text: str) -> Period:
        try:
            first = dt.date.fromisoformat(text + "-01")
        except ValueError:
            raise InvalidParameter(f"period {text!r} is not YYYY-MM") from None
        nxt = dt.date(first.year + (first.month == 12), first.month % 12 + 1, 1)
        return cls(first, nxt)


def fixed_offset_seconds(tz: str, period: Period) -> int:
    """The zone's UTC offset over the period; a zone that changes offset inside the period is refused."""
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidParameter(f"unknown time zone {tz!r}") from None
    offsets = set()
    day = period.start
    while day <= period.end:
        for hour in (0, 12):
            offsets.add(dt.datetime(day.year, day.month, day.day, hour, tzinfo=zone).utcoffset())
        day += dt.timedelta(days=1)
    if len(offsets) != 1:
        raise InvalidParameter(f"{tz} changes its UTC offset during the period (daylight saving time); "
                               "split the period at the change")
    return int(offsets.pop().total_seconds())


def period_seconds(period: Period | None) -> tuple[int, int]:
    """Local seconds [lo, hi) of the period; the whole representable range without one."""
    if period is None:
        return -(2**62), 2**62
    lo = int(dt.datetime.combine(period.start, dt.time()).replace(tzinfo=dt.UTC).timestamp())
    hi = int(dt.datetime.combine(period.end, dt.time()).replace(tzinfo=dt.UTC).timestamp())
    return lo, hi


def _h3_udf(res: int):  # noqa: ANN202
    import polars as pl
    import polars_h3 as plh3

    def cells(lat: pa.Array, lon: pa.Array) -> pa.Array:
        df = pl.DataFrame({"lat": pl.from_arrow(lat), "lon": pl.from_arrow(lon)})
        out = df.select(plh3.latlng_to_cell("lat", "lon", res, return_dtype=pl.UInt64).cast(pl.Int64).alias("c"))
        return out["c"].to_arrow()

    return cells


def connect(memory_limit: str = "4GB", threads: int | None = None, temp_dir: Path | None = None
            ) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute("SET preserve_insertion_order = false")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if temp_dir is not None:
        con.execute(f"SET temp_directory = '{Path(temp_dir).as_posix()}'")
    return con


PARQUET = (".parquet",)
CSV = (".csv", ".csv.gz")


def event_files(paths: Sequence[Path]) -> list[Path]:
    """The event files named, a directory standing for the Parquet or CSV files under it (recursively: a
    partitioned export such as ``events/day=2024-05-01/part-0.parquet``), in name order. All Parquet or all CSV."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(PARQUET + CSV)
                           and not f.name.startswith((".", "_")))
            if not found:
                raise InvalidParameter(f"{p} holds no Parquet (.parquet) or CSV (.csv, .csv.gz) files")
            files += found
        elif not p.exists():
            raise InvalidParameter(f"no such event file: {p}")
        else:
            files.append(p)
    if not files:
        raise InvalidParameter("no event files")
    names = [f.name for f in files]
    if not (all(n.endswith(PARQUET) for n in names) or all(n.endswith(CSV) for n in names)):
        kinds = sorted({("Parquet" if n.endswith(PARQUET) else "CSV" if n.endswith(CSV) else Path(n).suffix or n)
                        for n in names})
        raise InvalidParameter(f"event files are all Parquet (.parquet) or all CSV (.csv, .csv.gz), not a mixture "
                               f"({', '.join(kinds)})")
    return files


def _source(paths: Sequence[Path]) -> str:
    files = [p.as_posix() for p in event_files(paths)]
    listing = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
    if files[0].endswith(PARQUET):
        return f"read_parquet({listing})"
    return f"read_csv({listing}, header = true, auto_detect = true)"


def load_events(con: duckdb.DuckDBPyConnection, paths: Sequence[Path], *, res: int, offset_s: int,
                period: Period | None, towers: Path | None = None) -> int:
    """Create the normalised ``ev`` table; returns its row count. Events outside the period (when one is given)
    are dropped."""
    src = _source(paths)
    cols = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
    if not {"device_id", "ts"} <= cols:
        raise InvalidParameter("event files need columns device_id and ts (UTC)")
    try:
        con.remove_function("tpa_h3")  # a connection may load events more than once (other resolution)
    except duckdb.InvalidInputException:
        pass
    con.create_function("tpa_h3", _h3_udf(res), ["DOUBLE", "DOUBLE"], "BIGINT", type="arrow")
    lo, hi = period_seconds(period)
    local = f"(CAST(epoch(CAST(r.ts AS TIMESTAMP)) AS BIGINT) + {int(offset_s)})"
    dev = "CAST(hash(CAST(r.device_id AS VARCHAR)) >> 1 AS BIGINT)"
    if {"lon", "lat"} <= cols:
        # H3 in large Arrow batches (polars-h3, multi-threaded) rather than through a per-vector UDF: a scalar
        # UDF would be called for every 2,048 rows, which costs more than the H3 computation itself.
        con.execute("CREATE OR REPLACE TABLE ev (dev BIGINT, cell BIGINT, lat DOUBLE, lon DOUBLE, t BIGINT)")
        reader = con.cursor().sql(
            f"SELECT {dev} AS dev, CAST(r.lat AS DOUBLE) AS lat, CAST(r.lon AS DOUBLE) AS lon, {local} AS t "
            f"FROM {src} r WHERE {local} >= {lo} AND {local} < {hi} AND r.lat IS NOT NULL AND r.lon IS NOT NULL"
        ).to_arrow_reader(BATCH_ROWS)
        to_cells = _h3_udf(res)
        for batch in reader:
            cells = to_cells(batch.column("lat"), batch.column("lon"))
            chunk = pa.table({"dev": batch.column("dev"), "cell": cells, "lat": batch.column("lat"),
                              "lon": batch.column("lon"), "t": batch.column("t")})
            con.register("ev_chunk", chunk)
            con.execute("INSERT INTO ev SELECT * FROM ev_chunk")
            con.unregister("ev_chunk")
    elif "cell_id" in cols:
        if towers is None:
            raise InvalidParameter("events carry cell_id: give the tower file (cell_id, lon, lat)")
        con.execute(f"CREATE OR REPLACE TABLE tower AS SELECT CAST(cell_id AS VARCHAR) AS cell_id, "
                    f"CAST(lat AS DOUBLE) AS lat, CAST(lon AS DOUBLE) AS lon FROM {_source([towers])}")
        con.execute("CREATE OR REPLACE TABLE tower AS SELECT *, tpa_h3(lat, lon) AS cell FROM tower")
        con.execute(
            f"CREATE OR REPLACE TABLE ev AS SELECT {dev} AS dev, w.cell, w.lat, w.lon, {local} AS t FROM {src} r "
            f"JOIN tower w ON w.cell_id = CAST(r.cell_id AS VARCHAR) WHERE {local} >= {lo} AND {local} < {hi}")
        unknown = con.execute(
            f"SELECT count(*) FROM {src} r WHERE {local} >= {lo} AND {local} < {hi} AND NOT EXISTS "
            "(SELECT 1 FROM tower w WHERE w.cell_id = CAST(r.cell_id AS VARCHAR))").fetchall()[0][0]
        if unknown:
            log.warning("%d event(s) name a cell_id that is not in the tower file; they are left out", unknown)
    else:
        raise InvalidParameter("event files need lon/lat columns or a cell_id column")
    return int(con.execute("SELECT count(*) FROM ev").fetchall()[0][0])


class DuckDBRunner:
    """The engine interface the release uses (DuckDB here; ``app.telecom.spark.SparkRunner`` on Spark)."""

    dialect = sql.DUCKDB

    def __init__(self, con: duckdb.DuckDBPyConnection | None = None, *, memory_limit: str = "4GB",
                 temp_dir: Path | None = None) -> None:
        self.con = con or connect(memory_limit=memory_limit, temp_dir=temp_dir)

    def load_events(self, paths: Sequence[Path], **kw: object) -> int:
        return load_events(self.con, paths, **kw)  # type: ignore[arg-type]

    def write_partials(self, root: Path) -> None:
        """Append ``ev`` to the daily partials under root (one directory per local day)."""
        root.mkdir(parents=True, exist_ok=True)
        self.con.execute(f"COPY (SELECT *, CAST(FLOOR(t / 86400) AS BIGINT) AS day FROM ev) TO '{root.as_posix()}' "
                         "(FORMAT parquet, PARTITION_BY (day), APPEND)")

    def load_partials(self, root: Path, period: Period) -> int:
        lo, hi = period_seconds(period)
        files = f"{root.as_posix()}/day=*/*.parquet"
        self.con.execute(f"CREATE OR REPLACE TABLE ev AS SELECT dev, cell, lat, lon, t FROM read_parquet('{files}', "
                         f"hive_partitioning = true) WHERE day >= {lo // 86400} AND day < {hi // 86400}")
        return int(self.rows("SELECT count(*) FROM ev")[0][0])

    def register(self, name: str, table: pa.Table) -> None:
        self.con.register(f"{name}_src", table)
        self.con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM {name}_src")
        self.con.unregister(f"{name}_src")

    def materialize(self, name: str, query: str) -> None:
        self.con.execute(f"CREATE OR REPLACE TABLE {name} AS {query}")

    def rows(self, query: str) -> list[tuple]:
        return self.con.execute(query).fetchall()

    def arrow(self, query: str) -> pa.Table:
        return self.con.sql(query).to_arrow_table()

    def close(self) -> None:
        self.con.close()


AGGREGATES = ("presence", "residents", "od", "gyration_by_home")


def definitions(runner, *, min_nights: int) -> dict[str, pa.Table]:  # noqa: ANN001 (DuckDBRunner or SparkRunner)
    """Every definition on the engine; device-level tables (home, day, gyr) stay there, aggregates return."""
    runner.materialize("presence", sql.presence())
    runner.materialize("home", sql.home_cells(min_nights))
    runner.materialize("day", sql.day_cells())
    runner.materialize("gyr", sql.gyration())
    runner.materialize("residents", sql.residents())
    runner.materialize("od", sql.commuting_od())
    runner.materialize("gyration_by_home", sql.gyration_by_home(runner.dialect))
    return {name: runner.arrow(f"SELECT * FROM {name}") for name in AGGREGATES}


def run_definitions(con: duckdb.DuckDBPyConnection, *, min_nights: int) -> dict[str, pa.Table]:
    return definitions(DuckDBRunner(con), min_nights=min_nights)
