#!/usr/bin/env python3
"""Bulk downloads (f=parquet, f=fgb): time and peak memory of one worker while it writes 50,000 and 500,000 of the
peer dataset's households (bench/run.py builds the database). Memory that stays flat from 50,000 to 500,000 rows
is what "bounded" means here.

Usage:  .venv/bin/python bench/bulk.py      writes bench/results-bulk.md.  Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run  # noqa: E402

PORT = 8120


def measure(params: dict[str, object]) -> tuple[float, float, float, float]:
    """(MB sent, seconds, RSS after a warm-up request in MB, peak RSS during the download in MB), of the busiest
    worker (bench/run.py's server: 2 workers; one download is served by one of them)."""
    server = run.Server("tpa-gis", PORT, extra_env={"TPA_API_ACCESS_LOG": "false"})
    server.start()
    try:
        path = "/collections/peer-households/items"
        for _ in range(4):  # imports and pools of both workers, before measuring
            httpx.get(server.url + path, params={**params, "limit": 1000}, timeout=60)
        pids = server.worker_pids()

        def rss() -> float:
            sizes = []
            for pid in pids:
                with open(f"/proc/{pid}/status") as fh:
                    sizes.append(next(int(x.split()[1]) for x in fh if x.startswith("VmRSS")) / 1024)
            return max(sizes)

        base = rss()
        peak, done = [base], threading.Event()

        def watch() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss())
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        t0 = time.perf_counter()
        with httpx.stream("GET", server.url + path, params=params, timeout=600) as r:
            r.raise_for_status()
            size = sum(len(c) for c in r.iter_bytes())
        seconds = time.perf_counter() - t0
        done.set()
        watcher.join()
        return size / 1e6, seconds, base, peak[0]
    finally:
        server.stop()


def main() -> None:
    run.prepare_database()
    lines = ["# Bulk downloads: time and memory", "",
             "Command: `.venv/bin/python bench/bulk.py` — tpa-gis (2 workers) on the bench database, households of "
             "the peer dataset, one download at a time; RSS of the busiest worker sampled every 20 ms.", "",
             "| format | features | MB sent | seconds | RSS before (MB) | peak RSS (MB) | growth (MB) |",
             "|---|---|---|---|---|---|---|"]
    for fmt in ("parquet", "fgb"):
        for n in (50_000, 500_000):
            mb, s, base, peak = measure({"f": fmt, "limit": n})
            lines.append(f"| {fmt} | {n:,} | {mb:.1f} | {s:.1f} | {base:.0f} | {peak:.0f} | {peak - base:.0f} |")
            print(json.dumps({"f": fmt, "n": n, "mb": mb, "s": s, "base": base, "peak": peak}), flush=True)
    (HERE / "results-bulk.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
