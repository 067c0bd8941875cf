"""The same telecom SQL on Spark (PySpark), for operators whose events outgrow one machine.

Optional: ``pip install '.[spark]'`` (needs a Java 17+ runtime). Only reading differs from DuckDB: device ids are
hashed with ``xxhash64`` (the hash values differ between engines, the aggregates do not), H3 cells come from a
vectorised pandas UDF (polars-h3), and every definition and the suppression run as the unchanged SQL of
``app.telecom.sql`` / ``app.telecom.privacy`` on temporary views. ``local[2]`` by default; a cluster URL in production
(``TPA_SPARK_MASTER``), or whatever ``spark-submit`` was given (docs/operations.md#spark).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd  # noqa: F401  (pandas UDF type hints are resolved in this module's globals)
import pyarrow as pa

from app.errors import InvalidParameter
from app.telecom import sql
from app.telecom.engine import PARQUET, Period, event_files, log, period_seconds


class SparkRunner:
    dialect = sql.SPARK

    def __init__(self, master: str | None = None, memory: str = "2g") -> None:
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise InvalidParameter("the Spark engine needs PySpark: pip install '.[spark]'") from None
        mem = memory.lower().replace("gb", "g").replace("mb", "m")
        # Python workers run this interpreter (its venv has polars-h3), unless the deployment says otherwise.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        builder = SparkSession.builder
        master = master or os.environ.get("TPA_SPARK_MASTER")
        if master or "PYSPARK_GATEWAY_PORT" not in os.environ:  # under spark-submit its --master holds
            builder = builder.master(master or "local[2]")
        self.spark = (builder
                      .appName("tpa-telecom")
                      .config("spark.sql.session.timeZone", "UTC")
                      .config("spark.ui.enabled", "false")
                      .config("spark.sql.shuffle.partitions", "8")
                      .config("spark.driver.memory", mem)
                      .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                      .config("spark.ui.showConsoleProgress", "false")
                      .getOrCreate())
        self.spark.sparkContext.setLogLevel("ERROR")
        self._cached: dict[str, object] = {}

    # ------------------------------------------------------------------------------------------ reading
    def load_events(self, paths: Sequence[Path], *, res: int, offset_s: int, period: Period | None,
                    towers: Path | None = None) -> int:
        files = [str(p) for p in event_files(paths)]
        if files[0].endswith(PARQUET):
            raw = self.spark.read.parquet(*files)
        else:
            raw = self.spark.read.option("header", True).option("inferSchema", True).csv(files)
        cols = set(raw.columns)
        if not {"device_id", "ts"} <= cols:
            raise InvalidParameter("event files need columns device_id and ts (UTC)")
        raw.createOrReplaceTempView("raw")
        self.spark.udf.register("tpa_h3", _h3_pandas_udf(res))
        lo, hi = period_seconds(period)
        local = f"(CAST(unix_timestamp(CAST(r.ts AS TIMESTAMP)) AS BIGINT) + {int(offset_s)})"
        dev = "shiftright(xxhash64(CAST(r.device_id AS STRING)), 1)"
        if {"lon", "lat"} <= cols:
            self.materialize("ev", f"SELECT {dev} AS dev, tpa_h3(CAST(r.lat AS DOUBLE), CAST(r.lon AS DOUBLE)) "
                                   f"AS cell, CAST(r.lat AS DOUBLE) AS lat, CAST(r.lon AS DOUBLE) AS lon, {local} AS t "
                                   f"FROM raw r WHERE {local} >= {lo} AND {local} < {hi} AND r.lat IS NOT NULL "
                                   "AND r.lon IS NOT NULL")
        elif "cell_id" in cols:
            if towers is None:
                raise InvalidParameter("events carry cell_id: give the tower file (cell_id, lon, lat)")
            t = str(towers)
            tw = (self.spark.read.parquet(t) if t.endswith(".parquet")
                  else self.spark.read.option("header", True).option("inferSchema", True).csv(t))
            tw.createOrReplaceTempView("tower_raw")
            self.materialize("tower", "SELECT CAST(cell_id AS STRING) AS cell_id, CAST(lat AS DOUBLE) AS lat, "
                                      "CAST(lon AS DOUBLE) AS lon, tpa_h3(CAST(lat AS DOUBLE), CAST(lon AS DOUBLE)) "
                                      "AS cell FROM tower_raw")
            self.materialize("ev", f"SELECT {dev} AS dev, w.cell, w.lat, w.lon, {local} AS t FROM raw r "
                                   f"JOIN tower w ON w.cell_id = CAST(r.cell_id AS STRING) "
                                   f"WHERE {local} >= {lo} AND {local} < {hi}")
            unknown = self.rows(f"SELECT count(*) FROM raw r LEFT ANTI JOIN tower w ON w.cell_id = "
                                f"CAST(r.cell_id AS STRING) WHERE {local} >= {lo} AND {local} < {hi}")[0][0]
            if unknown:
                log.warning("%d event(s) name a cell_id that is not in the tower file; they are left out", unknown)
        else:
            raise InvalidParameter("event files need lon/lat columns or a cell_id column")
        return int(self.rows("SELECT count(*) FROM ev")[0][0])

    def write_partials(self, root: Path) -> None:
        """Append ``ev`` to the daily partials under root (one directory per local day)."""
        (self.spark.sql("SELECT *, CAST(FLOOR(t / 86400) AS BIGINT) AS day FROM ev").write.mode("append")
         .partitionBy("day").parquet(str(root)))

    def load_partials(self, root: Path, period: Period) -> int:
        lo, hi = period_seconds(period)
        # only the day directories: the root also holds the manifest and the incoming area
        (self.spark.read.option("basePath", str(root)).parquet(f"{root}/day=*")
         .createOrReplaceTempView("partials"))
        self.materialize("ev", "SELECT dev, cell, lat, lon, t FROM partials "
                               f"WHERE day >= {lo // 86400} AND day < {hi // 86400}")
        return int(self.rows("SELECT count(*) FROM ev")[0][0])

    # ------------------------------------------------------------------------------------------ the interface
    def register(self, name: str, table: pa.Table) -> None:
        df = self.spark.createDataFrame(table)
        df.createOrReplaceTempView(name)

    def materialize(self, name: str, query: str) -> None:
        # Computed now and cut from its lineage: each stage reads the previous result, not a growing plan.
        df = self.spark.sql(query).localCheckpoint(eager=True)
        old = self._cached.pop(name, None)
        df.createOrReplaceTempView(name)
        self._cached[name] = df
        if old is not None:
            old.unpersist()  # type: ignore[attr-defined]

    def rows(self, query: str) -> list[tuple]:
        return [tuple(r) for r in self.spark.sql(query).collect()]

    def arrow(self, query: str) -> pa.Table:
        return self.spark.sql(query).toArrow()

    def close(self) -> None:
        for df in self._cached.values():
            df.unpersist()  # type: ignore[attr-defined]
        self.spark.stop()


def _h3_pandas_udf(res: int):  # noqa: ANN202
    import polars as pl
    import polars_h3 as plh3
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("long")
    def tpa_h3(lat: pd.Series, lon: pd.Series) -> pd.Series:
        df = pl.DataFrame({"lat": lat.to_numpy(), "lon": lon.to_numpy()})
        out = df.select(plh3.latlng_to_cell("lat", "lon", res, return_dtype=pl.UInt64).cast(pl.Int64))
        return out.to_series().to_pandas()

    return tpa_h3
