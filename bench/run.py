#!/usr/bin/env python3
"""OGC API - Features benchmark: tpa-gis against tipg and pygeoapi on the same PostGIS data, in one run.

What it does (see bench/README.md):
  1. builds the peer dataset (bench/peer_dataset.sql: 20,000 village polygons, 500,000 household points)
     in its own database, migrates tpa-gis's schema next to it and publishes both tables;
  2. installs the peers (tipg, pygeoapi) in bench/.venv-peers;
  3. serves all three with the same number of workers on loopback ports;
  4. drives each scenario with wrk (-t2 -c16, warm-up first), servers interleaved, every scenario repeated;
  5. measures the database floor with pgbench, GDAL's default-settings pull, and peak RSS per worker;
  6. writes bench/results.md (and results.json).

Only 127.0.0.1 is contacted. Usage:  .venv/bin/python bench/run.py [--quick] [--skip-gdal-peers]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = HERE / ".venv-peers"
PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
DB = os.environ.get("BENCH_DB", "tpa_bench")
WORKERS = 2
PORTS = {"tpa-gis": 8101, "tipg": 8102, "pygeoapi": 8103}
# collection ids on each server
VILLAGES = {"tpa-gis": "peer-villages", "tipg": "public.villages", "pygeoapi": "villages"}
HOUSEHOLDS = {"tpa-gis": "peer-households", "tipg": "public.households", "pygeoapi": "households"}
GEOM_QUERYABLE = {"tpa-gis": "geometry", "tipg": "geom", "pygeoapi": "geometry"}
SELF_ONLY = {"g0", "g"}  # scenarios compared within tpa-gis (reprojection cost), not against peers
EXTENT = (123.3, 41.9, 124.9, 43.2)


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def psql(sql: str, db: str = DB) -> str:
    return sh(["psql", f"{PG}/{db}", "-Atqc", sql]).stdout.strip()


# --------------------------------------------------------------------------------------------- setup
def prepare_database() -> None:
    if psql(f"SELECT count(*) FROM pg_database WHERE datname = '{DB}'", "postgres") == "0":
        psql(f'CREATE DATABASE "{DB}"', "postgres")
    if psql("SELECT to_regclass('public.households') IS NULL") == "t":
        print("loading the peer dataset (about 10 s) …", flush=True)
        sh(["psql", f"{PG}/{DB}", "-q", "-f", str(HERE / "peer_dataset.sql")])
    env = {**os.environ, "DATABASE_URL": f"{PG}/{DB}"}
    sh([str(ROOT / ".venv/bin/tpa"), "db", "upgrade"], env=env)
    for table in ("villages", "households"):
        sh([str(ROOT / ".venv/bin/tpa"), "layers", "publish", table, "--id", f"peer-{table}", "--title", table.title(),
            "--datetime-column", "registered"], env=env)
    for table in ("villages", "households"):
        psql(f"VACUUM ANALYZE {table}")


def prepare_peers() -> None:
    needed = ("tipg", "pygeoapi", "starlette", "geoalchemy2")
    if not all(list(PEERS.glob(f"lib/*/site-packages/{pkg}")) for pkg in needed):
        print("installing tipg and pygeoapi in bench/.venv-peers …", flush=True)
        sh([sys.executable, "-m", "venv", str(PEERS)])
        sh([str(PEERS / "bin/pip"), "install", "-q", "tipg", "pygeoapi", "starlette", "psycopg2-binary", "GeoAlchemy2",
            "uvicorn[standard]"])


PYGEOAPI_CONFIG = """
server:
  bind: {{host: 127.0.0.1, port: {port}}}
  url: http://127.0.0.1:{port}
  mimetype: application/json; charset=UTF-8
  encoding: utf-8
  languages: [en-US]
  limits: {{default_items: 10, max_items: 10000}}
  map: {{url: 'http://127.0.0.1/tiles/{{z}}/{{x}}/{{y}}.png', attribution: none}}
logging: {{level: ERROR}}
metadata:
  identification: {{title: bench, description: bench, keywords: [bench], keywords_type: theme, terms_of_service: none,
                   url: http://127.0.0.1}}
  license: {{name: CC-BY 4.0, url: https://creativecommons.org/licenses/by/4.0/}}
  provider: {{name: bench, url: http://127.0.0.1}}
  contact: {{name: bench}}
resources:
{resources}
"""
PYGEOAPI_RESOURCE = """  {name}:
    type: collection
    title: {name}
    description: {name}
    keywords: [{name}]
    extents: {{spatial: {{bbox: [123.3, 41.9, 124.9, 43.2], crs: http://www.opengis.net/def/crs/OGC/1.3/CRS84}}}}
    providers:
      - type: feature
        name: PostgreSQL
        data: {{host: 127.0.0.1, port: 5432, dbname: {db}, user: postgres, password: '', search_path: [public]}}
        id_field: id
        table: {name}
        geom_field: geom
        time_field: registered
"""


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen | None = None
    workdir: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "DATABASE_URL": f"{PG}/{DB}", **self.extra_env}
        if self.name == "tpa-gis":
            cmd = [str(ROOT / ".venv/bin/uvicorn"), "--factory", "app.main:create_app"]
            env.update(TPA_LOG_LEVEL="WARNING")
            env.setdefault("TPA_JITTER_KEY", "bench-only jitter key")  # secrets come from the environment
        elif self.name == "tipg":
            cmd = [str(PEERS / "bin/uvicorn"), "tipg.main:app"]
            env.update(TIPG_DB_SCHEMAS='["public"]', TIPG_MAX_FEATURES_PER_QUERY="10000")
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="pygeoapi-"))
            resources = "".join(PYGEOAPI_RESOURCE.format(name=n, db=DB) for n in ("villages", "households"))
            cfg = self.workdir / "config.yml"
            cfg.write_text(PYGEOAPI_CONFIG.format(port=self.port, resources=resources))
            oas = self.workdir / "openapi.yml"
            sh([str(PEERS / "bin/pygeoapi"), "openapi", "generate", str(cfg), "--output-file", str(oas)])
            env.update(PYGEOAPI_CONFIG=str(cfg), PYGEOAPI_OPENAPI=str(oas))
            cmd = [str(PEERS / "bin/uvicorn"), "pygeoapi.starlette_app:APP"]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", str(WORKERS), "--log-level", "error"]
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/collections", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} did not start: {self.proc.stderr.read()[-2000:] if self.proc.stderr else ''}")

    def stop(self) -> None:
        if self.proc:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def worker_pids(self) -> list[int]:
        if not self.proc:
            return []
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], text=True, capture_output=True).stdout.split()
        return [int(p) for p in out]


# --------------------------------------------------------------------------------------------- scenarios
LUA = """
local paths = {}
init = function(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  math.randomseed(tonumber(args[2]))
end
request = function()
  return wrk.format("GET", paths[math.random(1, #paths)])
end
"""


def scenario_paths(server: str, seed: int = 7) -> dict[str, list[str]]:
    rng = random.Random(seed)
    v, h = VILLAGES[server], HOUSEHOLDS[server]
    boxes = []
    for _ in range(300):
        x = rng.uniform(EXTENT[0], EXTENT[2] - 0.062)  # 5 km ≈ 0.061° of longitude at 42.5° N
        y = rng.uniform(EXTENT[1], EXTENT[3] - 0.045)
        boxes.append(f"{x:.5f},{y:.5f},{x + 0.0609:.5f},{y + 0.045:.5f}")
    ids = [rng.randint(1, 20000) for _ in range(1000)]
    return {
        "a": [f"/collections/{v}/items?limit=10&f=json"],
        "b": [f"/collections/{h}/items?limit=1000&offset={o}&f=json" for o in range(0, 10000, 1000)],
        "c": [f"/collections/{h}/items?limit=1000&bbox={b}&f=json" for b in boxes],
        "d": [f"/collections/{v}/items/{i}?f=json" for i in ids],
        "f1": [f"/collections/{v}/items?county=Kaiyuan%20City&terrain=hill&limit=10&f=json"],
        # CQL2 (issue 4): an attribute filter, a spatial filter over random 5 km boxes (the geometry
        # queryable is "geometry" here and in pygeoapi, the column name "geom" in tipg), and the bbox
        # pages of (c) reprojected to Web Mercator against the same pages in CRS84 (tpa-gis only).
        "f2": [f"/collections/{v}/items?filter=poverty_rate%3E0.3&filter-lang=cql2-text&limit=10&f=json"],
        "f3": [f"/collections/{v}/items?filter=S_INTERSECTS({GEOM_QUERYABLE[server]},BBOX({b}))"
               "&filter-lang=cql2-text&limit=100&f=json" for b in boxes[:100]],
        "g0": [f"/collections/{h}/items?limit=1000&bbox={b}&f=json" for b in boxes],
        "g": [f"/collections/{h}/items?limit=1000&bbox={b}&crs=http://www.opengis.net/def/crs/EPSG/0/3857&f=json"
              for b in boxes],
    }


def deep_page_paths(server: Server) -> tuple[str, str]:
    """(first page, the page starting at feature 400,000) with limit 100: by next link where offered."""
    h = HOUSEHOLDS[server.name]
    first = f"/collections/{h}/items?limit=100&f=json"
    if server.name == "tpa-gis":
        body = httpx.get(f"{server.url}/collections/{h}/items?limit=100&offset=399900&f=json", timeout=60).json()
        nxt = next(lk["href"] for lk in body["links"] if lk["rel"] == "next")
        return first, nxt.replace(server.url, "")
    return first, f"/collections/{h}/items?limit=100&offset=400000&f=json"


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def wrk(url: str, paths: list[str], seconds: int, connections: int = 16) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        lua = Path(tmp) / "s.lua"
        lua.write_text(LUA)
        plist = Path(tmp) / "paths.txt"
        plist.write_text("\n".join(paths) + "\n")
        out = sh(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "60s", "-s", str(lua),
                  url, "--", str(plist), "42"]).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"50%\s+([\d.]+)(us|ms|s|m)\b", out)
    p50 = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": p50, "non2xx": int(errors.group(1)) if errors else 0}


FLOOR_SQL = {
    "a": "SELECT json_build_object('type','FeatureCollection','features',json_agg(f)) FROM (SELECT "
         "json_build_object('type','Feature','id',id,'geometry',ST_AsGeoJSON(geom)::json,'properties',"
         "to_jsonb(v) - 'geom') f FROM villages v ORDER BY id LIMIT 10) s;",
    # the page's keys first, then GeoJSON for those rows only (else the skipped rows are serialised too)
    "b": "\\set o random(0, 9) * 1000\nSELECT json_build_object('type','FeatureCollection','features',json_agg(f)) "
         "FROM (SELECT json_build_object('type','Feature','id',h.id,'geometry',ST_AsGeoJSON(h.geom)::json,"
         "'properties',json_build_object('hh_code',hh_code,'village_id',village_id,'head_name',head_name,'members',"
         "members,'annual_income',annual_income,'is_poor',is_poor,'poverty_cause',poverty_cause,'subsidy_cny',"
         "subsidy_cny,'registered',registered,'has_4g',has_4g)) f FROM households h JOIN (SELECT id FROM households "
         "ORDER BY id LIMIT 1000 OFFSET :o) k ON k.id = h.id ORDER BY h.id) s;",
    "d": "\\set i random(1, 20000)\nSELECT json_build_object('type','Feature','id',id,'geometry',"
         "ST_AsGeoJSON(geom)::json,'properties',to_jsonb(v) - 'geom') FROM villages v WHERE id = :i;",
}


def pgbench(sql: str, seconds: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(sql)
    try:
        out = sh(["pgbench", "-n", "-c16", "-j2", f"-T{seconds}", "-f", f.name, f"{PG}/{DB}"]).stdout
    finally:
        os.unlink(f.name)
    return float(re.search(r"tps = ([\d.]+)", out).group(1))


def gdal_pull(server: Server, timeout: int) -> float | None:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            subprocess.run(["ogr2ogr", "-f", "GPKG", f"{tmp}/out.gpkg", f"OAPIF:{server.url}", VILLAGES[server.name]],
                           check=True, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        elapsed = time.perf_counter() - t0
        n = sh(["ogrinfo", "-ro", "-so", "-al", f"{tmp}/out.gpkg"]).stdout
        count = int(re.search(r"Feature Count: (\d+)", n).group(1))
        assert count == 20000, f"{server.name}: GDAL got {count} features"
    return elapsed


def peak_rss_mb(server: Server, path: str, seconds: int) -> float:
    """Peak resident memory of any worker while serving ``path`` under load."""
    pids = server.worker_pids() or [server.proc.pid]
    proc = subprocess.Popen(["wrk", "-t2", "-c4", f"-d{seconds}s", "--timeout", "60s", server.url + path],
                            stdout=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                peak = max(peak, int(re.search(r"VmRSS:\s+(\d+)", status).group(1)))
            except (OSError, AttributeError):
                pass
        time.sleep(0.1)
    return peak / 1024


@dataclass
class Results:
    scenarios: dict[str, dict[str, list[dict[str, float]]]] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter runs (5 s, one repetition)")
    ap.add_argument("--skip-gdal-peers", action="store_true", help="GDAL pull only for tpa-gis")
    ap.add_argument("--servers", default="tpa-gis,tipg,pygeoapi")
    ap.add_argument("--scenarios", default="a,b,c,d,f1,f2,f3,g0,g", help="comma-separated subset")
    ap.add_argument("--only-scenarios", action="store_true",
                    help="skip the deep-page, DB-floor, memory and GDAL measurements")
    args = ap.parse_args()
    seconds, reps, warm = (5, 1, 2) if args.quick else (10, 2, 3)
    prepare_database()
    prepare_peers()
    servers = [Server(n, PORTS[n]) for n in args.servers.split(",")]
    res = Results()
    try:
        for s in servers:
            print(f"starting {s.name} on {s.url}", flush=True)
            s.start()
        paths = {s.name: scenario_paths(s.name) for s in servers}
        for sc in args.scenarios.split(","):
            these = [s for s in servers if s.name == "tpa-gis" or sc not in SELF_ONLY]
            res.scenarios[sc] = {s.name: [] for s in these}
            for s in these:  # warm-up
                wrk(s.url, paths[s.name][sc], warm)
            for _ in range(reps):
                for s in these:  # interleaved A/B/C
                    r = wrk(s.url, paths[s.name][sc], seconds)
                    res.scenarios[sc][s.name].append(r)
                    print(f"{sc:3} {s.name:9} {r['rps']:9.1f} req/s  p50 {r['p50_ms']:8.1f} ms  non-2xx {r['non2xx']}",
                          flush=True)
        if args.only_scenarios:
            return
        deep = {}
        for s in servers:
            first, deep_path = deep_page_paths(s)
            wrk(s.url, [first], warm, 4)
            f0 = wrk(s.url, [first], seconds, 4)
            d0 = wrk(s.url, [deep_path], seconds, 4)
            deep[s.name] = {"first_p50_ms": f0["p50_ms"], "deep_p50_ms": d0["p50_ms"], "deep_rps": d0["rps"]}
            print(f"e   {s.name:9} first p50 {f0['p50_ms']:.1f} ms, deep p50 {d0['p50_ms']:.1f} ms", flush=True)
        res.extra["deep"] = deep
        res.extra["floor"] = {sc: pgbench(sql, seconds) for sc, sql in FLOOR_SQL.items()}
        print("db floor", res.extra["floor"], flush=True)
        rss = {}
        for s in servers:
            rss[s.name] = peak_rss_mb(s, f"/collections/{HOUSEHOLDS[s.name]}/items?limit=10000&f=json", seconds)
            print(f"rss {s.name}: {rss[s.name]:.0f} MB", flush=True)
        res.extra["rss_mb"] = rss
        gdal = {}
        for s in servers:
            if args.skip_gdal_peers and s.name != "tpa-gis":
                continue
            gdal[s.name] = gdal_pull(s, timeout=400)
            print(f"gdal {s.name}: {gdal[s.name]}", flush=True)
        res.extra["gdal_s"] = gdal
    finally:
        for s in servers:
            s.stop()
        write_report(res, servers, seconds, reps, "results-scenarios" if args.only_scenarios else "results")


def med(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs) if runs else float("nan")


def write_report(res: Results, servers: list[Server], seconds: int, reps: int, stem: str = "results") -> None:
    (HERE / f"{stem}.json").write_text(json.dumps({"scenarios": res.scenarios, **res.extra}, indent=2))
    names = [s.name for s in servers]
    floor = res.extra.get("floor", {})
    lines = [
        "# Benchmark results",
        "",
        f"Command: `.venv/bin/python bench/run.py` — {WORKERS} workers per server, wrk -t2 -c16, {seconds} s per run, "
        f"{reps} interleaved repetitions (median shown), same database, same machine, one run.",
        "",
        "| scenario | " + " | ".join(f"{n} req/s (p50 ms)" for n in names) + " | tpa-gis / tipg | DB floor req/s |",
        "|---|" + "---|" * (len(names) + 2),
    ]
    for sc, by in res.scenarios.items():
        cells = [f"{med(by[n], 'rps'):.1f} ({med(by[n], 'p50_ms'):.1f})" if n in by else "–" for n in names]
        peer = med(by["tipg"], "rps") if "tipg" in by else 0.0
        ratio = med(by.get("tpa-gis", []), "rps") / peer if peer else float("nan")  # nan: tipg did not answer
        lines.append(f"| {sc} | " + " | ".join(cells) + f" | {ratio:.2f}× | {floor.get(sc, float('nan')):.1f} |")
    deep = res.extra.get("deep", {})
    lines += ["", "Deep page (e): p50 of the page starting at feature 400,000 vs the first page (limit 100).", "",
              "| server | first page p50 ms | deep page p50 ms | ratio |", "|---|---|---|---|"]
    for n, d in deep.items():
        lines.append(f"| {n} | {d['first_p50_ms']:.1f} | {d['deep_p50_ms']:.1f} | "
                     f"{d['deep_p50_ms'] / d['first_p50_ms']:.2f}× |")
    lines += ["", "| server | peak RSS per worker, limit=10000 pages (MB) | GDAL default pull of 20,000 villages (s) |",
              "|---|---|---|"]
    for n in names:
        g = res.extra.get("gdal_s", {}).get(n, "not run")
        g = "timeout" if g is None else (f"{g:.1f}" if isinstance(g, float) else g)
        lines.append(f"| {n} | {res.extra.get('rss_mb', {}).get(n, float('nan')):.0f} | {g} |")
    if "g" in res.scenarios and "g0" in res.scenarios:
        lines += ["", f"(g) crs=EPSG:3857 / the same pages in CRS84 (g0), tpa-gis: "
                      f"{med(res.scenarios['g']['tpa-gis'], 'rps') / med(res.scenarios['g0']['tpa-gis'], 'rps'):.2f}×"]
    if "b" in res.scenarios and "b" in floor:
        lines += ["", f"(b) tpa-gis / DB floor: {med(res.scenarios['b']['tpa-gis'], 'rps') / floor['b']:.2f}×"]
    (HERE / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
