"""Load the demo region: generate it, then replace it in the database in one transaction."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.demo.generate import REGION_ID, DemoData, generate
from app.repositories import regions


@dataclass(frozen=True)
class DemoLoadReport:
    region_id: str
    seed: int
    counts: dict[str, int]
    generator_checksum: str
    database_checksum: str
    generate_s: float
    load_s: float
    scale_s: float = 0.0


def combine(fingerprint: dict[str, tuple[int, str]]) -> str:
    h = hashlib.sha256()
    for name in sorted(fingerprint):
        n, md5 = fingerprint[name]
        h.update(f"{name}:{n}:{md5}\n".encode())
    return h.hexdigest()


async def load_data(session: AsyncSession, data: DemoData, progress: Callable[[str], None] | None = None) -> None:
    """Replace the region with ``data`` inside the caller's transaction (all or nothing)."""
    await regions.replace_region(session, data.region)
    for name, table in data.tables.items():
        if progress:
            progress(name)
        await regions.copy_rows(session, name, table.columns, table.rows)


async def load_demo(
    sessionmaker: async_sessionmaker[AsyncSession],
    seed: int = 42,
    *,
    generate_progress: Callable[[str, int], None] | None = None,
    load_progress: Callable[[str], None] | None = None,
    scale: int = 1,
    households: int | None = None,
    scale_progress: Callable[[str, int, int], None] | None = None,
    **sizes: int,
) -> DemoLoadReport:
    """Generate the demo and replace it in the database, in one transaction. With ``scale`` > 1 or ``households``,
    the generated prefecture is then multiplied in the database into a province-sized region
    (:mod:`app.demo.scale`), still in the same transaction; the checksums are the template's."""
    t0 = time.perf_counter()
    data = generate(seed, progress=generate_progress, **sizes)
    t1 = time.perf_counter()
    async with sessionmaker() as session, session.begin():
        await load_data(session, data, load_progress)
        if load_progress:
            load_progress("road network")
        await load_demo_roads(session, int(data.region["analysis_crs"]), seed)
        if load_progress:
            load_progress("survey")
        await load_demo_survey(session, seed)
        fingerprint = await regions.region_fingerprint(session, REGION_ID)
        t2 = time.perf_counter()
        counts = data.counts()
        if scale > 1 or households is not None:
            from app.demo.scale import scale_region

            scaled = await scale_region(await regions.driver_connection(session), REGION_ID, scale,
                                        households or counts["household"] * scale, scale_progress)
            counts = {**counts, **scaled.counts}
    t3 = time.perf_counter()
    return DemoLoadReport(REGION_ID, seed, counts, data.checksum(), combine(fingerprint), t1 - t0, t2 - t1,
                          t3 - t2)


async def load_demo_roads(session: AsyncSession, analysis_crs: int, seed: int) -> None:
    """The demo's synthetic road network (app/demo/roads.py) as version 1 of the region's network."""
    from app.demo.roads import SOURCE, demo_roads
    from app.ingest.roads import Speeds
    from app.services.roads import store_network

    conn = await regions.driver_connection(session)
    edges = await demo_roads(conn, REGION_ID, analysis_crs, seed)
    await store_network(conn, REGION_ID, edges, Speeds.default(), SOURCE,
                        "synthetic: a county road hierarchy over the demo's settlements, slower in the hilly east")


async def load_demo_survey(session: AsyncSession, seed: int) -> None:
    """The demo's household survey (app/demo/survey.py), drawn from the registry just loaded."""
    from app.demo.survey import demo_survey
    from app.services.surveys import store_survey

    survey, rows = await demo_survey(session, REGION_ID, seed)
    await store_survey(await regions.driver_connection(session), survey, rows)


async def demo_present(sessionmaker: async_sessionmaker[AsyncSession]) -> bool:
    async with sessionmaker() as session:
        return await regions.region_exists(session, REGION_ID)
