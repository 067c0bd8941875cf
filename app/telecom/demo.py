"""Telecom indicators for the demo region: synthetic events (about 5 million) released like real ones."""

from __future__ import annotations

import tempfile
from pathlib import Path

import asyncpg

from app.demo.generate import REFERENCE_YEAR, REGION_ID
from app.settings import libpq_url
from app.telecom.engine import Period, fixed_offset_seconds
from app.telecom.release import Progress, ReleaseOptions, ReleaseReport, release
from app.telecom.synthetic import generate_events, village_anchors

DEMO_PERIOD = f"{REFERENCE_YEAR}-10"
DEMO_DEVICES = 27_000  # about 5 million events in a month
DEMO_TZ = "Asia/Shanghai"


async def release_demo_telecom(database_url: str, *, devices: int = DEMO_DEVICES, seed: int = 42,
                               progress: Progress | None = None) -> ReleaseReport:
    conn = await asyncpg.connect(libpq_url(database_url))
    try:
        anchors = await village_anchors(conn, REGION_ID)
    finally:
        await conn.close()
    period = Period.month(DEMO_PERIOD)
    with tempfile.TemporaryDirectory(prefix="tpa-telecom-") as tmp:
        events = Path(tmp) / "events.parquet"
        if progress:
            progress(f"generating events of {devices:,} devices")
        generate_events(events, anchors, devices=devices, period=period,
                        utc_offset_s=fixed_offset_seconds(DEMO_TZ, period), seed=seed)
        return await release(database_url, ReleaseOptions([events], REGION_ID, DEMO_PERIOD, tz=DEMO_TZ,
                                                          memory_limit="2GB"), progress)
