"""DuckDB and Spark run the same SQL and give the same tables (runs when PySpark is installed; CI installs it)."""

from __future__ import annotations

import datetime as dt
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("pyspark")

import polars as pl  # noqa: E402

from app.telecom import engine  # noqa: E402
from app.telecom.privacy import suppress_rollup  # noqa: E402

SH = dt.timedelta(hours=8)


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    rng = random.Random(9)
    places = [(42.0 + rng.random() * 0.3, 123.5 + rng.random() * 0.4) for _ in range(25)]
    rows = []
    for d in range(400):
        home, work = rng.choice(places[:12]), rng.choice(places)
        for day in range(1, 31):
            for _ in range(rng.randint(1, 6)):
                hour = rng.randint(0, 23)
                where = home if hour >= 20 or hour < 8 else (work if rng.random() < 0.7 else rng.choice(places))
                rows.append((f"dev{d}", dt.datetime(2024, 4, day, hour, rng.randint(0, 59)) - SH, where))
    path = tmp_path_factory.mktemp("spark") / "events.parquet"
    pq.write_table(pa.table({"device_id": [r[0] for r in rows], "ts": [r[1] for r in rows],
                             "lat": [r[2][0] for r in rows], "lon": [r[2][1] for r in rows]}), path)
    return path


@pytest.fixture(scope="module")
def runners(events):
    from app.telecom.spark import SparkRunner

    period = engine.Period.month("2024-04")
    spark = SparkRunner(master="local[2]", memory="1g")
    duck = engine.DuckDBRunner(memory_limit="1GB")
    out = {}
    for name, r in (("duckdb", duck), ("spark", spark)):
        r.load_events([events], res=8, offset_s=8 * 3600, period=period)
        out[name] = engine.definitions(r, min_nights=10)
        for table, members, keys in (("pub_res", "SELECT dev, home_cell AS cell FROM home", ()),
                                     ("pub_presence", "SELECT DISTINCT dev, cell, "
                                      "CAST(FLOOR((t % 86400) / 3600) AS INTEGER) AS hour FROM ev", ("hour",))):
            suppress_rollup(r.materialize, membership=members, keys=keys, k=15, base_res=8, floor_res=5, out=table)
            out[name][table] = r.arrow(f"SELECT * FROM {table}")
    yield out
    spark.close()
    duck.close()


def _frame(t: pa.Table) -> pl.DataFrame:
    df = pl.from_arrow(t)
    return df.with_columns(pl.col(c).cast(pl.Int64) for c, d in df.schema.items() if d.is_integer())


@pytest.mark.parametrize("table", ["presence", "residents", "od", "pub_res", "pub_presence"])
def test_identical_tables(runners, table):
    a = _frame(runners["duckdb"][table])
    b = _frame(runners["spark"][table]).select(a.columns)
    assert a.height > 0
    assert a.sort(a.columns).equals(b.sort(b.columns))


def test_statistics_equal_to_rounding(runners):
    a = _frame(runners["duckdb"]["gyration_by_home"]).sort("cell")
    b = _frame(runners["spark"]["gyration_by_home"]).select(a.columns).sort("cell")
    assert a["cell"].to_list() == b["cell"].to_list() and a["n_devices"].to_list() == b["n_devices"].to_list()
    pairs = zip(a["median_rg_km"], b["median_rg_km"], strict=True)
    assert max(abs(x - y) / max(abs(x), 1e-12) for x, y in pairs) < 1e-9


def test_spark_reads_cell_ids_with_a_tower_file(runners, tmp_path, caplog):
    """Runs last: it replaces the Spark session's ``ev`` view."""
    import csv

    from app.telecom.spark import SparkRunner

    towers = tmp_path / "towers.csv"
    events = tmp_path / "events.csv"
    with towers.open("w", newline="") as fh:
        csv.writer(fh).writerows([["cell_id", "lon", "lat"], ["T-A", 123.84, 42.29]])
    with events.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["device_id", "ts", "cell_id"])
        w.writerows([["x", f"2024-04-{d:02d} 15:00:00", "T-A"] for d in range(1, 12)])
        w.writerow(["x", "2024-04-05 15:00:00", "T-NONE"])
    spark = SparkRunner(master="local[2]", memory="1g")  # the running session
    n = spark.load_events([events], res=8, offset_s=8 * 3600, period=engine.Period.month("2024-04"), towers=towers)
    assert n == 11 and "1 event(s) name a cell_id" in caplog.text
    engine.definitions(spark, min_nights=10)
    assert len(spark.rows("SELECT * FROM home")) == 1
