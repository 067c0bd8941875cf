#!/usr/bin/env python3
"""OGC API - Tiles benchmark: tpa-gis's vector tiles against tipg's on the same PostGIS tables, in one run.

The peer dataset of bench/run.py (20,000 village polygons, 500,000 household points around Tieling; built and
published by it), both servers with 2 workers, WebMercatorQuad, tiles drawn at random among those covering the
data at zoom 8, 10, 12 and 14 (the same tiles for both servers), wrk -t2 -c16, servers interleaved, repeated:

* cold: every request renders its tile (tpa-gis serves without its tile cache, TPA_TILES_CACHE_MB=0; tipg has none);
* cached: tpa-gis with its default tile cache (tiles kept per table version);
* warm: the same requests with If-None-Match (tpa-gis answers 304; tipg sends no validators, so it renders again);
* bytes per tile (mean over the drawn tiles, empty tiles counted as 0) and how many tiles are empty;
* p99 latency, and every response must be 2xx/304.

Usage:  .venv/bin/python bench/tiles.py [--quick]     writes bench/results-tiles.md (about 10 minutes)
Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import statistics
import sys
import tempfile
from pathlib import Path

import httpx
import morecantile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run  # noqa: E402  (the peer dataset, the peers' virtual env and the servers)

ZOOMS = (8, 10, 12, 14)
TABLES = {"households": ("peer-households", "public.households"), "villages": ("peer-villages", "public.villages")}
WEB = morecantile.tms.get("WebMercatorQuad")
LUA = """
local paths = {}
local etags = {}
init = function(args)
  for line in io.lines(args[1]) do
    local p, e = line:match("^(%S+)%s*(.*)$")
    paths[#paths + 1] = p
    etags[#etags + 1] = e
  end
  math.randomseed(tonumber(args[2]))
end
request = function()
  local i = math.random(1, #paths)
  if etags[i] ~= "" then
    return wrk.format("GET", paths[i], {["If-None-Match"] = etags[i]})
  end
  return wrk.format("GET", paths[i])
end
"""
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def tiles_at(z: int, n: int, rng: random.Random) -> list[morecantile.Tile]:
    tiles = list(WEB.tiles(*run.EXTENT, zooms=[z]))
    return [rng.choice(tiles) for _ in range(n)] if len(tiles) > n else tiles


def path(server: str, table: str, t: morecantile.Tile) -> str:
    tpa, tipg = TABLES[table]
    if server == "tipg":  # tipg's template is {z}/{x}/{y} (column, then row)
        return f"/collections/{tipg}/tiles/WebMercatorQuad/{t.z}/{t.x}/{t.y}"
    return f"/collections/{tpa}/tiles/WebMercatorQuad/{t.z}/{t.y}/{t.x}"


def wrk(url: str, lines: list[str], seconds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        lua, plist = Path(tmp) / "s.lua", Path(tmp) / "paths.txt"
        lua.write_text(LUA)
        plist.write_text("\n".join(lines) + "\n")
        out = run.sh(["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", "--timeout", "60s", "-s", str(lua), url,
                      "--", str(plist), "42"]).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"{pct}%\s+([\d.]+)(us|ms|s|m)\b", out)
        lat[pct] = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": lat["50"], "p99": lat["99"], "non2xx": int(errors.group(1)) if errors else 0}


def probe(base: str, paths: list[str]) -> tuple[float, int, list[str], set[int]]:
    """Mean bytes per tile, empty tiles, the ETags, and the statuses seen."""
    sizes, etags, statuses = [], [], set()
    with httpx.Client(base_url=base, timeout=120) as c:
        for p in paths:
            r = c.get(p)
            statuses.add(r.status_code)
            sizes.append(len(r.content) if r.status_code == 200 else 0)
            etags.append(r.headers.get("etag", ""))
    return statistics.fmean(sizes), sum(1 for s in sizes if s == 0), etags, statuses


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tiles", type=int, default=300, help="random tiles per zoom")
    ap.add_argument("--buffer-bytes", action="store_true",
                    help="only the bytes per tile of tpa-gis with TPA_TILES_BUFFER=0 (tipg keeps no buffer points)")
    args = ap.parse_args()
    if args.buffer_bytes:
        return buffer_bytes(args.tiles)
    seconds, reps = (5, 1) if args.quick else (10, 2)
    run.prepare_database()
    run.prepare_peers()
    rng = random.Random(19)
    drawn = {z: tiles_at(z, args.tiles, rng) for z in ZOOMS}
    configs = {"tpa-gis": {"TPA_TILES_CACHE_MB": "0"}, "tpa-gis cached": {}, "tipg": {}}
    rows: dict[tuple[str, str, int, str], list[dict[str, float]]] = {}
    sizes: dict[tuple[str, str, int], tuple[float, int]] = {}
    statuses: set[int] = set()
    for _rep in range(reps):
        for name, env in configs.items():
            server = run.Server("tipg" if name == "tipg" else "tpa-gis", run.PORTS["tipg" if name == "tipg" else
                                                                               "tpa-gis"], extra_env=env)
            server.start()
            try:
                kind = "tipg" if name == "tipg" else "tpa-gis"
                for table in TABLES:
                    for z in ZOOMS:
                        paths = [path(kind, table, t) for t in drawn[z]]
                        mean, empty, etags, seen = probe(server.url, paths)  # also warms caches and plans
                        statuses |= seen
                        sizes[(name, table, z)] = (mean, empty)
                        rows.setdefault((name, table, z, "cold"), []).append(wrk(server.url, paths, seconds))
                        if kind == "tpa-gis" and name == "tpa-gis":
                            lines = [f"{p} {e}" for p, e in zip(paths, etags, strict=True)]
                            rows.setdefault((name, table, z, "warm"), []).append(wrk(server.url, lines, seconds))
                        print(name, table, z, rows[(name, table, z, "cold")][-1], flush=True)
            finally:
                server.stop()
    write(rows, sizes, statuses, seconds, reps, args.tiles)


def buffer_bytes(ntiles: int) -> None:
    """Bytes per tile without the buffer: tipg selects the features of the bare tile, so its point tiles lack the
    points just outside it that a client needs to draw symbols across tile edges; this separates encoding size from
    that choice."""
    run.prepare_database()
    rng = random.Random(19)
    drawn = {z: tiles_at(z, ntiles, rng) for z in ZOOMS}
    server = run.Server("tpa-gis", run.PORTS["tpa-gis"], extra_env={"TPA_TILES_BUFFER": "0", "TPA_TILES_CACHE_MB": "0"})
    server.start()
    try:
        for table in TABLES:
            for z in ZOOMS:
                mean, empty, _, _ = probe(server.url, [path("tpa-gis", table, t) for t in drawn[z]])
                print(f"| {table} | {z} | {mean:,.0f} | {empty} |", flush=True)
    finally:
        server.stop()


def med(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs) if runs else math.nan


def write(rows, sizes, statuses, seconds: int, reps: int, ntiles: int) -> None:
    peers = run.sh([str(run.PEERS / "bin/pip"), "show", "tipg"]).stdout
    version = re.search(r"Version: (\S+)", peers).group(1)
    lines = [
        "# Tiles benchmark: tpa-gis against tipg",
        "",
        "Command: `.venv/bin/python bench/tiles.py` — peer dataset (bench/peer_dataset.sql), WebMercatorQuad, "
        f"{ntiles} random tiles per zoom inside the data extent (the same for both), 2 workers per server, "
        f"wrk -t2 -c16, {seconds} s per run, {reps} interleaved repetitions (median shown); tipg {version} with its "
        "defaults (extent 4096, at most 10,000 features per tile), tpa-gis with its defaults (extent 4096, "
        "buffer 64, at most 10,000 features per tile).",
        "",
        "| table | z | tpa-gis req/s (p99 ms) | tpa-gis cached req/s (p99 ms) | tipg req/s (p99 ms) | tpa-gis / tipg | "
        "cached / tipg | tpa-gis 304 req/s | bytes/tile tpa-gis | bytes/tile tipg | empty tiles (tpa-gis/tipg) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    failures = 0
    for table in TABLES:
        for z in ZOOMS:
            a, c, t, w = (rows.get((n, table, z, k), []) for n, k in (("tpa-gis", "cold"), ("tpa-gis cached", "cold"),
                                                                         ("tipg", "cold"), ("tpa-gis", "warm")))
            failures += sum(r["non2xx"] for r in a + c + t + w)
            ta, tt = sizes.get(("tpa-gis", table, z), (0, 0)), sizes.get(("tipg", table, z), (0, 0))
            lines.append(
                f"| {table} | {z} | {med(a, 'rps'):.1f} ({med(a, 'p99'):.1f}) | {med(c, 'rps'):.1f} "
                f"({med(c, 'p99'):.1f}) | {med(t, 'rps'):.1f} ({med(t, 'p99'):.1f}) | "
                f"{med(a, 'rps') / med(t, 'rps'):.2f}× | {med(c, 'rps') / med(t, 'rps'):.2f}× | {med(w, 'rps'):.1f} | "
                f"{ta[0]:,.0f} | {tt[0]:,.0f} | {ta[1]}/{tt[1]} |")
    lines += ["", f"Responses other than 2xx/304 during the runs: {failures}; statuses seen when probing: "
              f"{sorted(statuses)}.", ""]
    (HERE / "results-tiles.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
