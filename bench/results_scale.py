#!/usr/bin/env python3
"""The catalogue with many stored results: N jobs' result tables (as executions leave them), then the time to
start the service, `/collections`, a result's items page (read by its URL) and a built-in layer's items page.

Results are written the way a job writes them (a table in schema ``results``, a ``published_layer`` row, an
``analysis_run`` row), unlisted as executions leave them since results are published only on request. The
database is a copy of the demo (``tpa demo load`` into ``tpa_bench_results``).

Usage:  .venv/bin/python bench/results_scale.py [--results 10000] [--root DIR]
  --root: the source tree to serve (e.g. a worktree of an earlier commit, to compare).  Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
DB = os.environ.get("BENCH_RESULTS_DB", "tpa_bench_results")
PORT = 8131


def psql(sql: str, db: str = DB) -> str:
    return subprocess.run(["psql", f"{PG}/{db}", "-Atq", "-v", "ON_ERROR_STOP=1"], input=sql, check=True,
                          capture_output=True, text=True).stdout


def prepare(n: int) -> str:
    """The demo with n stored results; returns the id of one of them."""
    env = {**os.environ, "DATABASE_URL": f"{PG}/{DB}", "TPA_JITTER_KEY": "bench"}
    if psql(f"SELECT count(*) FROM pg_database WHERE datname = '{DB}'", "postgres").strip() == "0":
        psql(f'CREATE DATABASE "{DB}";', "postgres")
        psql("CREATE EXTENSION IF NOT EXISTS postgis;")
        subprocess.run([str(ROOT / ".venv/bin/tpa"), "db", "upgrade"], env=env, check=True, capture_output=True)
        subprocess.run([str(ROOT / ".venv/bin/tpa"), "demo", "load", "--no-telecom"], env=env, check=True,
                       capture_output=True)
    have = int(psql("SELECT count(*) FROM published_layer WHERE run_id IS NOT NULL").strip())
    print(f"stored results: {have}; adding {max(0, n - have)} …", flush=True)
    batch: list[str] = []
    for i in range(have, n):
        run = uuid.uuid4()
        table = f"r_{run.hex}_features"
        lid = f"hotspots-{run.hex[:8]}-features"
        batch.append(
            f"INSERT INTO analysis_run (run_id, kind, params, status, mode, created, finished, updated, expires) "
            f"VALUES ('{run}', 'process:hotspots', '{{}}', 'successful', 'sync', now(), now(), now(), "
            f"now() + interval '1 day');"
            f"CREATE TABLE results.{table} AS SELECT v.code AS fid, v.code AS name, random() AS gi_z, "
            f"'not-significant'::text AS class, v.geom_point AS geom FROM village v ORDER BY v.code LIMIT 50;"
            f"ALTER TABLE results.{table} ADD PRIMARY KEY (fid);"
            f"INSERT INTO published_layer (layer_id, schema_name, table_name, title, id_column, geometry_column, "
            f"run_id, keywords, listed) VALUES ('{lid}', 'results', '{table}', 'Gi* (job {run.hex[:8]})', 'fid', "
            f"'geom', '{run}', ARRAY['analysis result'], false);")
        if len(batch) == 200 or i == n - 1:
            psql("BEGIN;" + "".join(batch) + "COMMIT;")
            batch = []
            print(f"  {i + 1}", flush=True)
    return psql("SELECT layer_id FROM published_layer WHERE run_id IS NOT NULL ORDER BY layer_id LIMIT 1").strip()


def p50(client: httpx.Client, path: str, n: int = 50) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(path)
        times.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=int, default=10_000)
    ap.add_argument("--root", type=Path, default=ROOT, help="source tree to serve")
    args = ap.parse_args()
    layer = prepare(args.results)
    env = {**os.environ, "DATABASE_URL": f"{PG}/{DB}", "TPA_JITTER_KEY": "bench", "TPA_LOG_LEVEL": "WARNING",
           "TPA_PROCESSES_WORKER": "false"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--port", str(PORT),
                             "--log-level", "error"], cwd=args.root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{PORT}"
    try:
        while True:
            try:
                if httpx.get(url + "/collections", timeout=120).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - t0 > 1200:
                raise SystemExit("the service did not start within 20 minutes")
            time.sleep(0.2)
        started = time.perf_counter() - t0
        with httpx.Client(base_url=url, timeout=120) as c:
            listed = len(c.get("/collections").json()["collections"])
            out = {"start_s": started, "collections_ms": p50(c, "/collections"),
                   "result_items_ms": p50(c, f"/collections/{layer}/items?limit=10"),
                   "villages_items_ms": p50(c, "/collections/villages/items?limit=10"), "listed": listed}
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"{args.root}: {args.results} stored results; ready after {out['start_s']:.1f} s; /collections "
          f"({out['listed']} listed) p50 {out['collections_ms']:.1f} ms; a result's items p50 "
          f"{out['result_items_ms']:.1f} ms; villages items p50 {out['villages_items_ms']:.1f} ms")


if __name__ == "__main__":
    main()
