#!/usr/bin/env python3
"""Zoomed-out map requests: a whole-extent bbox (limit 10) after a run of small bboxes, as QGIS sends them when a
user pans and then zooms out, on the benchmark's 500,000 households (bench/run.py builds the database).

PostgreSQL's "auto" plan cache switched such statements to a generic plan after a few executions; the whole-extent
page then took 1.7 s instead of a few milliseconds. This prints the p50 and max of the whole-extent page after the
small ones, and of a small-bbox page, per repetition.

Usage:  .venv/bin/python bench/zoom_out.py [--url URL]   (default: serves tpa-gis itself on the bench database)
Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
DB = os.environ.get("BENCH_DB", "tpa_bench")
EXTENT = (123.3, 41.9, 124.9, 43.2)  # the peer dataset's households (bench/peer_dataset.sql)
PORT = 8111


def timed(c: httpx.Client, params: dict) -> float:
    t = time.perf_counter()
    r = c.get("/collections/peer-households/items", params=params)
    elapsed = time.perf_counter() - t
    assert r.status_code == 200 and r.json()["numberReturned"] > 0, r.text[:300]
    return elapsed * 1000


def run(url: str, rounds: int) -> None:
    rng = random.Random(7)
    whole = ",".join(f"{v:.4f}" for v in (EXTENT[0] - 1, EXTENT[1] - 1, EXTENT[2] + 1, EXTENT[3] + 1))
    big, small = [], []
    with httpx.Client(base_url=url, timeout=120) as c:
        for _ in range(rounds):
            for _ in range(10):  # panning: small boxes of about 2 km
                x, y = rng.uniform(EXTENT[0], EXTENT[2] - 0.02), rng.uniform(EXTENT[1], EXTENT[3] - 0.02)
                small.append(timed(c, {"bbox": f"{x:.4f},{y:.4f},{x + 0.02:.4f},{y + 0.02:.4f}", "limit": 10}))
            for _ in range(3):  # zoomed out: the whole view, a few times
                big.append(timed(c, {"bbox": whole, "limit": 10}))
    print(f"small bbox, limit 10: p50 {statistics.median(small):.1f} ms, max {max(small):.1f} ms "
          f"({len(small)} requests)")
    print(f"whole-extent bbox after small ones, limit 10: p50 {statistics.median(big):.1f} ms, max {max(big):.1f} ms "
          f"({len(big)} requests)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running tpa-gis publishing peer-households (else one is started)")
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    if args.url:
        run(args.url, args.rounds)
        return
    env = {**os.environ, "DATABASE_URL": f"{PG}/{DB}", "TPA_LOG_LEVEL": "WARNING"}
    env.setdefault("TPA_JITTER_KEY", "bench-only jitter key")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--host",
                             "127.0.0.1", "--port", str(PORT), "--workers", "1", "--log-level", "error"], env=env,
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{PORT}"
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        run(url, args.rounds)
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
