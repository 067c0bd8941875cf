"""The telecom definitions written a second time, in plain Polars, from the same normalised events.

Independent of the SQL in ``app.telecom.sql``: the tests check that both give identical tables, and the
benchmark uses it as the single-machine dataframe peer. Input columns: dev (i64), cell (i64), lat, lon (f64),
t (i64, local seconds since 1970-01-01).
"""

from __future__ import annotations

import polars as pl

from app.telecom.sql import EARTH_RADIUS_KM, NIGHT_START_S


def _with_time(ev: pl.LazyFrame) -> pl.LazyFrame:
    day = pl.col("t").floordiv(86400)
    return ev.with_columns(
        hour=(pl.col("t") % 86400).floordiv(3600).cast(pl.Int32),
        dow=((day + 3) % 7),
        night=(pl.col("t") - NIGHT_START_S).floordiv(86400),
    )


def _modal(ev: pl.LazyFrame, name: str) -> pl.LazyFrame:
    return (ev.group_by("dev", "cell").agg(n=pl.len())
            .sort(["dev", "n", "cell"], descending=[False, True, False])
            .group_by("dev", maintain_order=True).first()
            .select("dev", pl.col("cell").alias(name)))


def definitions(events: pl.DataFrame, *, min_nights: int) -> dict[str, pl.DataFrame]:
    ev = _with_time(events.lazy())
    is_night = (pl.col("hour") >= 21) | (pl.col("hour") < 7)
    is_work = (pl.col("dow") < 5) & (pl.col("hour") >= 9) & (pl.col("hour") < 17)
    presence = ev.group_by("cell", "hour").agg(n_devices=pl.col("dev").n_unique())
    night = ev.filter(is_night)
    enough = night.group_by("dev").agg(nights=pl.col("night").n_unique()).filter(pl.col("nights") >= min_nights)
    home = _modal(night, "home_cell").join(enough.select("dev"), on="dev")
    day = _modal(ev.filter(is_work), "day_cell")
    centre = ev.group_by("dev").agg(mlat=pl.col("lat").mean(), mlon=pl.col("lon").mean())
    rad = 3.141592653589793 / 180.0
    j = ev.join(centre, on="dev")
    a = (((pl.col("lat") - pl.col("mlat")) * rad / 2).sin() ** 2
         + (pl.col("mlat") * rad).cos() * (pl.col("lat") * rad).cos()
         * (((pl.col("lon") - pl.col("mlon")) * rad / 2).sin() ** 2))
    gyr = j.with_columns(d=2 * EARTH_RADIUS_KM * a.sqrt().arcsin()).group_by("dev").agg(
        rg_km=(pl.col("d") ** 2).mean().sqrt())
    residents = home.group_by("home_cell").agg(n_devices=pl.len()).rename({"home_cell": "cell"})
    od = (home.join(day, on="dev").group_by("home_cell", "day_cell").agg(n_devices=pl.len())
          .rename({"home_cell": "origin_cell", "day_cell": "dest_cell"}))
    rg_home = (home.join(gyr, on="dev").group_by("home_cell")
               .agg(n_devices=pl.len(), median_rg_km=pl.col("rg_km").median()).rename({"home_cell": "cell"}))
    out = pl.collect_all([presence, residents, od, rg_home, home, day, gyr])
    names = ("presence", "residents", "od", "gyration_by_home", "home", "day", "gyr")
    return dict(zip(names, out, strict=True))
