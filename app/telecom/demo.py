"""Telecom indicators for the demo region: synthetic events (about 5 million) released like real ones."""

from __future__ import annotations

import tempfile
from pathlib import Path

import asyncpg
import numpy as np

from app.demo.generate import REFERENCE_YEAR, REGION_ID
from app.telecom.engine import Period, fixed_offset_seconds
from app.telecom.release import Progress, ReleaseOptions, ReleaseReport, release
from app.telecom.synthetic import generate_events

DEMO_PERIOD = f"{REFERENCE_YEAR}-10"
DEMO_DEVICES = 27_000  # about 5 million events in a month
DEMO_TZ = "Asia/Shanghai"


async def release_demo_telecom(database_url: str, *, devices: int = DEMO_DEVICES, seed: int = 42,
                               progress: Progress | None = None) -> ReleaseReport:
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT ST_Y(geom_point) AS lat, ST_X(geom_point) AS lon FROM village "
                                "WHERE region_id = $1 ORDER BY code", REGION_ID)
    finally:
        await conn.close()
    period = Period.month(DEMO_PERIOD)
    with tempfile.TemporaryDirectory(prefix="tpa-telecom-") as tmp:
        events = Path(tmp) / "events.parquet"
        if progress:
            progress(f"generating events of {devices:,} devices")
        generate_events(events, np.array([(r["lat"], r["lon"]) for r in rows]), devices=devices, period=period,
                        utc_offset_s=fixed_offset_seconds(DEMO_TZ, period), seed=seed)
        return await release(database_url, ReleaseOptions([events], REGION_ID, DEMO_PERIOD, tz=DEMO_TZ,
                                                          memory_limit="2GB"), progress)
