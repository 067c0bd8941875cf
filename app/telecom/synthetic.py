"""Deterministic synthetic mobile-phone events for a region (for the demo, tests and the benchmark).

Each device gets a home anchor (a place of the region, e.g. a village) and, for most, a work anchor; every day
it produces night-time events at home, working-hour events at work on weekdays, and a few events at random
hours at one of its anchors. A share of devices moves home half-way through the period (out-migration).
Positions are jittered by about 100 m. Nothing here describes real people.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import asyncpg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app.telecom.engine import Period

JITTER_DEG = 0.001


async def village_anchors(conn: asyncpg.Connection, region: str) -> np.ndarray:
    """(lat, lon) of the region's villages, in code order: the places devices live and work at."""
    rows = await conn.fetch("SELECT ST_Y(geom_point) AS lat, ST_X(geom_point) AS lon FROM village "
                            "WHERE region_id = $1 ORDER BY code", region)
    return np.array([(r["lat"], r["lon"]) for r in rows], dtype=float).reshape(-1, 2)


def generate_events(path: Path, anchors: np.ndarray, *, devices: int, period: Period, utc_offset_s: int,
                    seed: int = 1, worker_share: float = 0.6, migrant_share: float = 0.05,
                    night_rate: float = 3.0, work_rate: float = 3.0, other_rate: float = 2.0) -> int:
    """Write events (device_id, ts UTC, lon, lat) to a Parquet file; returns the number of events.

    ``anchors`` is an array of (lat, lon) places.
    """
    rng = np.random.default_rng(seed)
    n_places = len(anchors)
    days = (period.end - period.start).days
    home = rng.integers(0, n_places, devices)
    work = np.where(rng.random(devices) < worker_share, rng.integers(0, n_places, devices), home)
    moved_home = np.where(rng.random(devices) < migrant_share, rng.integers(0, n_places, devices), home)
    day0 = (period.start - dt.date(1970, 1, 1)).days

    def burst(rate: float, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        counts = rng.poisson(rate, size=(devices, days)) * mask
        dev = np.repeat(np.repeat(np.arange(devices), days), counts.ravel())
        day = np.repeat(np.tile(np.arange(days), devices), counts.ravel())
        return dev, day

    all_days = np.ones((devices, days), dtype=np.int64)
    weekday = ((day0 + np.arange(days) + 3) % 7) < 5
    works = (work != home)[:, None] & weekday[None, :]
    dn, dd = burst(night_rate, all_days)
    tn = (day0 + dd) * 86400 + 21 * 3600 + rng.integers(0, 10 * 3600, len(dn))
    wn, wd = burst(work_rate, works.astype(np.int64))
    tw = (day0 + wd) * 86400 + 9 * 3600 + rng.integers(0, 8 * 3600, len(wn))
    on, od = burst(other_rate, all_days)
    to = (day0 + od) * 86400 + rng.integers(0, 86400, len(on))
    half = days // 2

    def home_of(dev: np.ndarray, day: np.ndarray) -> np.ndarray:
        return np.where(day >= half, moved_home[dev], home[dev])

    place = np.concatenate([home_of(dn, dd), work[wn],
                            np.where(rng.random(len(on)) < 0.5, home_of(on, od), work[on])])
    dev = np.concatenate([dn, wn, on])
    local = np.concatenate([tn, tw, to])
    lat = anchors[place, 0] + rng.normal(0, JITTER_DEG, len(place))
    lon = anchors[place, 1] + rng.normal(0, JITTER_DEG, len(place))
    order = np.argsort(local, kind="stable")
    ids = pc.binary_join_element_wise("d", pc.cast(pa.array(dev[order]), pa.string()), "")
    table = pa.table({
        "device_id": ids,
        "ts": pa.array((local[order] - utc_offset_s).astype("datetime64[s]")),
        "lon": pa.array(lon[order]),
        "lat": pa.array(lat[order]),
    })
    pq.write_table(table, path, row_group_size=1_000_000)
    return table.num_rows
