#!/usr/bin/env python3
"""The portal's first view, timed in Chromium (issue 20): the demo region and a synthetic region ten times its size.

For each region, a fresh browser context (empty cache) opens ``/portal`` over loopback and waits until the map is
drawn (MapLibre's ``idle`` after the choropleth's tiles: ``body[data-map=drawn]``) and the figures are filled
(``body[data-figures=ready]``). Measured: the time from the navigation's start (Navigation Timing ``startTime``)
to that moment (the page's ``tpa:first-view`` performance mark), and the bytes transferred (Playwright's request
sizes: headers and encoded bodies of every request of the page and of MapLibre's worker — scripts, styles, tiles,
JSON answers). Repeated; the table gives the median
and the worst run. Targets: ≤ 2 s and ≤ 2 MB on the demo, ≤ 3 s on the region ten times its size (tiles, not
GeoJSON, carry the features).

The regions are built once with the demo generator (seed 42): the demo (1,200 villages, 25,000 households) and
×10 (12,000 villages, 250,000 households, 3,000 projects, 20,000 facilities) in databases tpa_bench_portal and
tpa_bench_portal10. The service runs with 2 workers, Chromium is Debian's under Playwright with SwiftShader.

Usage:  .venv/bin/python bench/portal.py [--runs N]     writes bench/results-portal.md
Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
CHROMIUM = "/usr/bin/chromium"
REGIONS = {
    "demo": ("tpa_bench_portal", {}),
    "demo ×10": ("tpa_bench_portal10", {"n_villages": 12_000, "n_households": 250_000, "n_projects": 3_000,
                                         "n_facilities": 20_000}),
}
FIRST_VIEW = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  return {ms: performance.getEntriesByName('tpa:first-view')[0].startTime - nav.startTime};
}"""
READY = "body[data-map=drawn][data-figures=ready]"  # portal.js marks "tpa:first-view" when both are set


def psql(sql: str, db: str = "postgres") -> str:
    done = subprocess.run(["psql", f"{PG}/{db}", "-tAc", sql], check=True, capture_output=True, text=True)
    return done.stdout.strip()


def prepare(db: str, sizes: dict[str, int]) -> None:
    if psql(f"SELECT count(*) FROM pg_database WHERE datname = '{db}'") == "0":
        psql(f'CREATE DATABASE "{db}"')
    env = {**os.environ, "DATABASE_URL": f"{PG}/{db}"}
    subprocess.run([str(ROOT / ".venv/bin/tpa"), "db", "upgrade"], env=env, check=True)
    if psql("SELECT count(*) FROM region", db) != "0":
        return
    print(f"loading {db} {sizes or '(the demo)'} …", flush=True)
    from app.db import create_engine, create_sessionmaker
    from app.services.demo import load_demo
    from app.settings import DatabaseSettings

    async def load() -> None:
        eng = create_engine(DatabaseSettings(url=f"{PG}/{db}", statement_timeout_ms=0))  # a long COPY
        try:
            await load_demo(create_sessionmaker(eng), 42, **sizes)
        finally:
            await eng.dispose()

    asyncio.run(load())
    psql("VACUUM ANALYZE", db)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(db: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": f"{PG}/{db}", "TPA_LOG_LEVEL": "WARNING",
           "TPA_JITTER_KEY": "bench-only jitter key"}
    proc = subprocess.Popen([str(ROOT / ".venv/bin/uvicorn"), "--factory", "app.main:create_app", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "2", "--log-level", "error"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                httpx.get(url + "/collections", timeout=120)  # the first catalogue read builds the public figures
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the service did not start")


async def first_views(url: str, runs: int) -> list[dict[str, float]]:
    from playwright.async_api import async_playwright

    out = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
        for i in range(runs + 1):  # the first run warms the server (its processes, the database's cache)
            ctx = await browser.new_context(viewport={"width": 1366, "height": 820})
            page = await ctx.new_page()
            sizes: list[asyncio.Task] = []
            urls: list[str] = []
            # every request of the page and of MapLibre's worker (the tiles), as sent over the wire (compressed)
            page.on("requestfinished", lambda r, urls=urls, sizes=sizes: (
                urls.append(r.url), sizes.append(asyncio.ensure_future(r.sizes()))))
            await page.goto(url + "/portal")
            await page.wait_for_selector(READY, timeout=60_000)
            got = await page.evaluate(FIRST_VIEW)
            done = [await t for t in sizes]
            got["bytes"] = sum(d["responseBodySize"] + d["responseHeadersSize"] for d in done)
            got["tiles"] = sum("/tiles/" in u for u in urls)
            got["requests"] = len(urls)
            await ctx.close()
            if i:
                out.append(got)
        await browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    rows = []
    for name, (db, sizes) in REGIONS.items():
        prepare(db, sizes)
        counts = psql("SELECT (SELECT count(*) FROM village) || ' villages, ' || (SELECT count(*) FROM household) "
                      "|| ' households'", db)
        proc, url = serve(db)
        try:
            views = asyncio.run(first_views(url, args.runs))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        ms = [v["ms"] for v in views]
        mb = [v["bytes"] / 1e6 for v in views]
        rows.append((name, counts, statistics.median(ms), max(ms), statistics.median(mb), max(mb),
                     int(statistics.median(v["tiles"] for v in views)),
                     int(statistics.median(v["requests"] for v in views))))
        print(rows[-1], flush=True)
    lines = [
        "# Portal: the first view in Chromium",
        "",
        f"Measured {dt.date.today().isoformat()} with `.venv/bin/python bench/portal.py --runs {args.runs}` on this "
        "machine (2 cores), over loopback, 2 workers; a fresh browser context (empty cache) per run, after one "
        "warm-up run. Time: from the navigation's start to the map drawn (MapLibre idle after the choropleth's "
        "tiles) and the figures filled. Bytes: everything transferred (page, scripts, styles, tiles, JSON).",
        "",
        "| region | size | time, median (ms) | time, worst (ms) | MB, median | MB, worst | requests (tiles) | target |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, counts, m, w, b, bw, tiles, requests in rows:
        target = "≤ 2,000 ms, ≤ 2 MB" if name == "demo" else "≤ 3,000 ms"
        lines.append(f"| {name} | {counts} | {m:,.0f} | {w:,.0f} | {b:.2f} | {bw:.2f} | {requests} ({tiles}) | "
                     f"{target} |")
    (HERE / "results-portal.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
