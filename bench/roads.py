#!/usr/bin/env python3
"""Travel times on a road network of about 200,000 edges (issue 22), on two cores.

Database tpa_bench_roads, built once: region ``bench-roads`` with a synthetic network — a 300 × 330 street grid
of ~300 m blocks (about 90 × 100 km) with every vertex moved at random by up to 60 m, 4 % of the blocks missing,
10 % of the streets one-way, classes from trunk to track (speeds of the defaults, unpaved tracks capped), stored
by the import's own code (``app.services.roads.store_network``). 5,000 demand points and 500 supply points at
random in its extent (seed 7). Measured, in the same run:

- **matrix**: ``travel_times`` 5,000 × 500 by motor (snapping both sets; one pgRouting ``pgr_dijkstraCost`` per
  supply point on the reversed network, each point a vertex of its own joined to its edge's ends, split over 2
  connections), without the cache; then the same call answered from the cache;
- **peer scipy**: ``scipy.sparse.csgraph.dijkstra`` (C) on the same edge table, reversed, from the ends of the
  supply points' edges (the vertex-to-vertex times one would combine without virtual vertices), in the same run;
- **peer networkx**: ``networkx.single_source_dijkstra_path_length`` from 20 of those start vertices, the time
  extrapolated to all of them (a full run would take many minutes); its times equal the matrix's vertex part;
- **MCLP** on the network minutes: 50 sites among the 500 covering the most demand within 15 minutes
  (``app.analysis.location.mclp``, 2 threads).

Targets: the matrix ≤ 60 s; the MCLP ≤ 40 s.

Usage:  .venv/bin/python bench/roads.py        writes bench/results-roads.md
Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from portal import PG, psql  # noqa: E402

DB = "tpa_bench_roads"
REGION = "bench-roads"
ROWS, COLS, BLOCK_M = 300, 330, 300.0
LON0, LAT0 = 123.5, 42.0
THREADS = 2


def build_network():  # noqa: ANN201
    import numpy as np

    from app.ingest.roads import Edges

    rng = np.random.default_rng(11)
    dlat = BLOCK_M / 111_320.0
    dlon = BLOCK_M / (111_320.0 * np.cos(np.radians(LAT0 + ROWS * dlat / 2)))
    ys, xs = np.mgrid[0:ROWS, 0:COLS]
    lon = LON0 + xs * dlon + (rng.random(xs.shape) - 0.5) * 0.4 * dlon
    lat = LAT0 + ys * dlat + (rng.random(ys.shape) - 0.5) * 0.4 * dlat
    vid = (ys * COLS + xs + 1).astype(np.int64)
    classes = np.array(["trunk", "secondary", "tertiary", "unclassified", "residential", "track"])
    e = Edges(speed_is_cap=True)
    for r1, c1 in ((0, 1), (1, 0)):
        rr, cc = np.mgrid[0:ROWS - r1, 0:COLS - c1]
        for r, c in zip(rr.ravel(), cc.ravel(), strict=True):
            if rng.random() < 0.04:
                continue
            a, b = (r, c), (r + r1, c + c1)
            # main roads every 30 blocks, then a mix
            cls = "trunk" if (r % 30 == 0 and r1 == 0) or (c % 30 == 0 and c1 == 0) else \
                classes[1 + int(rng.integers(0, 5))]
            oneway = int(rng.choice([1, -1])) if rng.random() < 0.10 else 0
            line = np.array([[lon[a], lat[a]], [lon[b], lat[b]]])
            e.add(int(vid[a]), int(vid[b]), line, str(cls), None, oneway, "gravel" if cls == "track" else None,
                  float("nan"))
    return e


def prepare() -> None:
    if psql(f"SELECT count(*) FROM pg_database WHERE datname = '{DB}'") == "0":
        psql(f'CREATE DATABASE "{DB}"')
    env = {**os.environ, "DATABASE_URL": f"{PG}/{DB}"}
    subprocess.run(["bash", str(ROOT / "scripts/ensure-postgis.sh"), DB], env=env, check=True)
    subprocess.run([str(ROOT / ".venv/bin/tpa"), "db", "upgrade"], env=env, check=True)
    if psql(f"SELECT count(*) FROM road_network WHERE region_id = '{REGION}'", DB) != "0":
        return
    if psql(f"SELECT count(*) FROM region WHERE region_id = '{REGION}'", DB) == "0":
        subprocess.run([str(ROOT / ".venv/bin/tpa"), "region", "create", REGION, "--country", "CN", "--crs",
                        "EPSG:32651"], env=env, check=True)
    print("building the network …", flush=True)
    t0 = time.perf_counter()
    edges = build_network()
    t1 = time.perf_counter()

    async def store():  # noqa: ANN202
        import asyncpg

        from app.ingest.roads import Speeds
        from app.services.roads import store_network

        conn = await asyncpg.connect(f"{PG}/{DB}")
        try:
            async with conn.transaction():
                return await store_network(conn, REGION, edges, Speeds.default(), "bench grid")
        finally:
            await conn.close()

    loaded = asyncio.run(store())
    print(f"{loaded.network.edges:,} edges built in {t1 - t0:.1f} s, stored in {loaded.seconds:.1f} s", flush=True)


def main() -> None:
    prepare()
    import networkx as nx
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    from app.analysis import location as loc
    from app.db import create_engine
    from app.services import roads as rs
    from app.settings import DatabaseSettings

    rng = np.random.default_rng(7)
    ext = [float(v) for v in psql("SELECT concat_ws(',', ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)) FROM "
                                  "(SELECT ST_Extent(geom) AS e FROM road_edge) x", DB).split(",")]

    def points(n: int) -> np.ndarray:
        return np.column_stack([ext[0] + rng.random(n) * (ext[2] - ext[0]), ext[1] + rng.random(n) * (ext[3] - ext[1])])

    demand, supply = points(5000), points(500)

    async def compute():  # noqa: ANN202
        import asyncpg

        conn = await asyncpg.connect(f"{PG}/{DB}")
        try:
            net = await rs.current_network(conn, REGION)
            await conn.execute("DELETE FROM travel_time_cache")
        finally:
            await conn.close()
        eng = create_engine(DatabaseSettings(url=f"{PG}/{DB}", statement_timeout_ms=0))
        try:
            t0 = time.perf_counter()
            tt = await rs.travel_times(eng, net, "motor", demand, supply, parallel=THREADS)
            t_matrix = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = await rs.travel_times(eng, net, "motor", demand, supply, parallel=THREADS)
            t_cached = time.perf_counter() - t0
        finally:
            await eng.dispose()
        return net, tt, again, t_matrix, t_cached

    net, tt, again, t_matrix, t_cached = asyncio.run(compute())
    assert again.cached and np.array_equal(np.isnan(again.seconds), np.isnan(tt.seconds))
    print(f"matrix {t_matrix:.1f} s, cached {t_cached:.2f} s", flush=True)

    # the peers: the same vertex-to-vertex Dijkstra from the supply side's entry vertices on the reversed network
    rows = psql(f"SELECT string_agg(concat_ws(',', source, target, oneway, length_m * 3.6 / motor_kmh), ';') FROM "
                f"road_edge WHERE network_id = {net.network_id} AND motor_kmh IS NOT NULL", DB).split(";")
    arr = np.array([[float(v) for v in r.split(",")] for r in rows])
    s, t, ow, c = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2], arr[:, 3]
    # reversed network: an edge usable s → t becomes t → s
    fr = np.concatenate([t[ow != -1], s[ow != 1]])
    to = np.concatenate([s[ow != -1], t[ow != 1]])
    w = np.concatenate([c[ow != -1], c[ow != 1]])
    ids, inv = np.unique(np.concatenate([fr, to]), return_inverse=True)
    n = len(ids)
    g = coo_matrix((w, (inv[:len(fr)], inv[len(fr):])), shape=(n, n)).tocsr()
    d = tt.destinations
    starts = np.unique(np.concatenate([d.source[d.ok], d.target[d.ok]]))
    sidx = np.searchsorted(ids, starts)
    t0 = time.perf_counter()
    dist = dijkstra(g, directed=True, indices=sidx)
    t_scipy = time.perf_counter() - t0
    G = nx.DiGraph()
    for a, b, x in zip(fr, to, w, strict=True):
        if not G.has_edge(a, b) or G[a][b]["w"] > x:
            G.add_edge(int(a), int(b), w=float(x))
    sample = starts[:20]
    t0 = time.perf_counter()
    nx_d = [nx.single_source_dijkstra_path_length(G, int(v), weight="w") for v in sample]
    t_nx = (time.perf_counter() - t0) / len(sample) * len(starts)
    # the networkx and scipy times agree with each other (the matrix's vertex part is what both compute)
    for k, dd in enumerate(nx_d):
        some = list(dd.items())[:2000]
        assert np.allclose([dist[k, np.searchsorted(ids, v)] for v, _ in some], [x for _, x in some])

    minutes = tt.seconds / 60
    weights = rng.integers(1, 300, len(demand)).astype(float)
    t0 = time.perf_counter()
    r = loc.mclp(minutes, weights, 50, 15.0, [], 120, THREADS)
    t_mclp = time.perf_counter() - t0
    summary = tt.summary()
    edges_n = int(psql(f"SELECT edges FROM road_network WHERE network_id = {net.network_id}", DB))
    out = HERE / "results-roads.md"
    out.write_text(f"""# Travel times on a road network (bench/roads.py)

Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; PostgreSQL + pgRouting
{psql("SELECT pgr_version()", DB)}; run {time.strftime("%Y-%m-%d %H:%M")}.

Network: {edges_n:,} edges, {len(ids):,} vertices (synthetic grid, bench/roads.py). Points: {len(demand):,} demand ×
{len(supply):,} supply at random in its extent; {summary['origins_not_snapped']} demand and
{summary['destinations_not_snapped']} supply points not snapped (max 1,000 m); {summary['unreachable_pairs']:,}
unreachable pairs of {summary['pairs']:,}.

| step | seconds | target |
|---|---:|---:|
| travel_times 5,000 × 500, motor (snap; one pgRouting Dijkstra per supply point, 2 connections) \
| {t_matrix:.1f} | ≤ 60 |
| the same, from the cache | {t_cached:.2f} | |
| peer: scipy.sparse.csgraph.dijkstra from the same {len(starts):,} vertices (vertex part only, 1 core) \
| {t_scipy:.1f} | |
| peer: networkx Dijkstra, {len(sample)} of them timed, extrapolated to {len(starts):,} | {t_nx:.0f} | |
| MCLP on the network minutes: 50 of 500 sites, 15 min | {t_mclp:.1f} | ≤ 40 |

Ratios in this run: the matrix takes {t_matrix / t_scipy:.2f}× scipy's vertex-to-vertex Dijkstra and
{t_matrix / t_nx:.3f}× networkx's. MCLP status {r.status}, {r.coverage_weighted_pct:.1f} % of the demand covered.
""")
    print(out.read_text())


if __name__ == "__main__":
    main()
