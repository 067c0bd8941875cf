#!/usr/bin/env python3
"""National scale (issue 24): the service on a province-sized region against the demo, in one run.

Two regions from the demo generator (seed 42), each in its own database:

* ``demo``: the demo prefecture (1,200 villages, 25,000 registered households, 61,832 members);
* ``province``: ``tpa demo load --scale 17 --households 5000000`` (20,400 villages, 5,100,000 households, about
  12.6 million members; app/demo/scale.py).

Each is loaded once (the load is timed and its size measured; ``--reuse`` keeps a loaded database), analysed, and
served by uvicorn with 2 workers (tile cache off, no rate limit) with an analyst key. Scenarios, wrk -t2 -c16,
regions interleaved, repeated, median req/s and p99:

* households ``limit=10`` (small page), ``limit=1000`` (big page), random 5 km bbox pages (``limit=1000``) around
  random villages, a CQL2 attribute filter (``status='poor' AND size>=4``, ``limit=100``), a deep page (``limit=100``
  at 80 % of the collection, by its key cursor), a household by id, villages ``limit=10``;
* tiles of households and villages at zoom 6, 10 and 14 (WebMercatorQuad), the tiles holding random villages;
* the first answer of a filter never seen (its count has a budget: ``TPA_API_COUNT_BUDGET_MS``), single requests;
* needs-assessment and MPI of the registry for one county and for the whole region, as jobs (wall time and the
  peak resident memory of the service's processes while it runs).

Usage:  .venv/bin/python bench/scale.py [--quick] [--reuse] [--only demo|province]   writes bench/results-scale.md
(The province database takes about 30 minutes to build and 9 GB of disk.) Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import morecantile

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from app.layers.query import Cursor  # noqa: E402

PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
TPA = str(ROOT / ".venv/bin/tpa")
REGIONS = {
    "demo": ("tpa_bench_scale_demo", []),
    "province": ("tpa_bench_scale_province", ["--scale", "17", "--households", "5000000"]),
}
WEB = morecantile.tms.get("WebMercatorQuad")
ENV = {"TPA_JITTER_KEY": "bench-only jitter key", "TPA_PSEUDONYM_KEY": "bench-only pseudonym key",
       "TPA_LOG_LEVEL": "WARNING", "TPA_API_RATE_LIMIT_PER_MINUTE": "0", "TPA_TILES_CACHE_MB": "0",
       "TPA_API_ACCESS_LOG": "false"}
LUA = """
local paths = {}
init = function(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  math.randomseed(tonumber(args[2]))
  wrk.headers["Authorization"] = "Bearer " .. args[3]
end
request = function()
  return wrk.format("GET", paths[math.random(1, #paths)])
end
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def psql(sql: str, db: str = "postgres") -> str:
    return sh(["psql", f"{PG}/{db}", "-Atqc", sql]).stdout.strip()


def env_for(db: str) -> dict[str, str]:
    return {**os.environ, **ENV, "DATABASE_URL": f"{PG}/{db}", "COLUMNS": "200"}


def prepare(name: str, reuse: bool) -> dict[str, object]:
    """Load the region (unless reused); its load time, rows and size."""
    db, args = REGIONS[name]
    facts: dict[str, object] = {}
    exists = psql(f"SELECT count(*) FROM pg_database WHERE datname = '{db}'") == "1"
    if not (reuse and exists and psql("SELECT count(*) FROM region", db) == "1"):
        psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        psql(f'CREATE DATABASE "{db}"')
        sh([TPA, "db", "upgrade"], env=env_for(db))
        print(f"loading {name} …", flush=True)
        t0 = time.perf_counter()
        out = sh([TPA, "demo", "load", "--no-telecom", *args], env=env_for(db)).stdout
        facts["load_s"] = time.perf_counter() - t0
        for key, pat in (("generate_s", r"generated in ([\d.]+) s"), ("copy_s", r"loaded in ([\d.]+) s"),
                         ("scale_s", r"scaled in ([\d.]+) s")):
            m = re.search(pat, out)
            facts[key] = float(m.group(1)) if m else 0.0
        t0 = time.perf_counter()
        psql("VACUUM ANALYZE", db)
        facts["vacuum_s"] = time.perf_counter() - t0
    sh([TPA, "db", "upgrade"], env=env_for(db))  # a reused database: migrations added since it was built
    for table in ("village", "household", "person"):
        facts[table] = int(psql(f"SELECT count(*) FROM {table}", db))
    facts["db_gb"] = int(psql(f"SELECT pg_database_size('{db}')", db)) / 1e9
    facts["household_gb"] = int(psql("SELECT pg_total_relation_size('household')", db)) / 1e9
    return facts


def analyst_key(db: str) -> str:
    out = sh([TPA, "keys", "create", "--role", "analyst", "--name", "bench-scale"], env=env_for(db)).stdout
    return out.strip().splitlines()[-1].strip()


class Server:
    def __init__(self, db: str, port: int) -> None:
        self.db, self.port = db, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [str(ROOT / ".venv/bin/uvicorn"), "--factory", "app.main:create_app", "--host", "127.0.0.1", "--port",
             str(port), "--workers", "2", "--log-level", "error"], env=env_for(db), cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError(f"the service on {db} did not start")
        # measured once the background work of a start is done (extents of every collection, the public
        # figures): wait until both workers show the households' extent
        t0 = time.time()
        seen = 0
        while time.time() < t0 + 900 and seen < 10:
            r = httpx.get(self.url + "/collections/villages", timeout=60)
            seen = seen + 1 if r.status_code == 200 and r.json().get("extent") else 0
            time.sleep(0.3)
        self.settled_s = time.time() - t0

    def pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-g", str(self.proc.pid)], text=True, capture_output=True).stdout.split()
        return [int(p) for p in out]

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


def rss_mb(pids: list[int]) -> float:
    """The largest resident memory among the processes."""
    peak = 0
    for pid in pids:
        try:
            peak = max(peak, int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)))
        except (OSError, AttributeError):
            pass
    return peak / 1024


def wrk(server: Server, key: str, paths: list[str], seconds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        lua, plist = Path(tmp) / "s.lua", Path(tmp) / "paths.txt"
        lua.write_text(LUA)
        plist.write_text("\n".join(paths) + "\n")
        proc = subprocess.Popen(["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", "--timeout", "60s", "-s",
                                 str(lua), server.url, "--", str(plist), "42", key], text=True,
                                stdout=subprocess.PIPE)
        peak = 0.0
        while proc.poll() is None:
            peak = max(peak, rss_mb(server.pids()))
            time.sleep(0.2)
        out = proc.stdout.read() if proc.stdout else ""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s|m)\b", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p99": float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan"),
            "non2xx": int(errors.group(1)) if errors else 0, "rss": peak}


def scenarios(db: str, n_households: int, seed: int = 7) -> dict[str, list[str]]:
    rng = random.Random(seed)
    villages = [tuple(map(float, r.split("|"))) for r in psql(
        "SELECT ST_X(geom_point), ST_Y(geom_point) FROM village ORDER BY code", db).splitlines()]
    pts = [rng.choice(villages) for _ in range(300)]
    boxes = [f"{x - 0.0305:.5f},{y - 0.0225:.5f},{x + 0.0305:.5f},{y + 0.0225:.5f}" for x, y in pts]
    ids = psql(f"SELECT hh_id FROM household TABLESAMPLE SYSTEM (1) REPEATABLE ({seed}) LIMIT 1000", db).split()
    deep = psql(f"SELECT hh_id FROM household ORDER BY hh_id OFFSET {int(n_households * 0.8)} LIMIT 1", db)
    h = "/collections/households"
    out = {
        "households limit=10": [f"{h}/items?limit=10"],
        "households limit=1000": [f"{h}/items?limit=1000"],
        "households 5 km bbox, limit=1000": [f"{h}/items?limit=1000&bbox={b}" for b in boxes],
        "households CQL2 filter, limit=100": [
            f"{h}/items?filter=status%3D%27poor%27%20AND%20size%3E%3D4&filter-lang=cql2-text&limit=100"],
        "households deep page (80 %), limit=100": [f"{h}/items?limit=100&cursor={Cursor((deep,)).encode()}"],
        "household by id": [f"{h}/items/{i}" for i in ids],
        "villages limit=10": ["/collections/villages/items?limit=10"],
    }
    for z in (6, 10, 14):
        tiles = sorted({WEB.tile(x, y, z) for x, y in pts})
        for coll in ("households", "villages"):
            out[f"tiles {coll} z{z}"] = [f"/collections/{coll}/tiles/WebMercatorQuad/{t.z}/{t.y}/{t.x}"
                                         for t in tiles]
    return out


def first_answers(server: Server, key: str, seed: int) -> dict[str, float]:
    """Single requests: the first answer of filters not seen before (counts not cached), in ms."""
    auth = {"Authorization": f"Bearer {key}"}
    out = {}
    with httpx.Client(base_url=server.url, headers=auth, timeout=120) as c:
        for label, path in (
            ("new filter: datetime + status", f"/collections/households/items?limit=10&status=poor"
                                              f"&datetime=2020-06-{10 + seed % 19:02d}"),
            ("new filter: CQL2 income", f"/collections/households/items?limit=10&filter=net_income_pc%3C{4000 + seed}"
                                        "&filter-lang=cql2-text"),
            ("whole-extent bbox, limit=10", "/collections/households/items?limit=10&bbox=100,20,140,60"),
        ):
            t0 = time.perf_counter()
            r = c.get(path)
            r.raise_for_status()
            out[label] = (time.perf_counter() - t0) * 1000
            out[label + " (numberMatched given)"] = float("numberMatched" in r.json())
    return out


def run_job(server: Server, key: str, process: str, inputs: dict) -> dict[str, float]:
    auth = {"Authorization": f"Bearer {key}", "Prefer": "respond-async"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=120) as c:
        t0 = time.perf_counter()
        r = c.post(f"/processes/{process}/execution", json={"inputs": inputs})
        if r.status_code != 201:
            return {"error": r.status_code, "detail": r.text[:300]}
        job = r.headers["Location"]
        peak = 0.0
        while True:
            peak = max(peak, rss_mb(server.pids()))
            st = c.get(job).json()
            if st["status"] in ("successful", "failed", "dismissed"):
                break
            time.sleep(0.5)
        out = {"s": time.perf_counter() - t0, "status": st["status"], "rss": peak,
               "message": st.get("message", "")[:200]}
        if st["status"] == "successful":
            summary = c.get(f"{job}/results").json().get("summary", {})
            out["households"] = int(summary.get("households") or summary.get("n_households") or 0)
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="5 s per scenario, one repetition")
    ap.add_argument("--reuse", action="store_true", help="keep loaded databases")
    ap.add_argument("--only", choices=tuple(REGIONS))
    args = ap.parse_args()
    seconds, reps = (5, 1) if args.quick else (10, 1)
    names = [args.only] if args.only else list(REGIONS)
    facts = {n: prepare(n, args.reuse) for n in names}
    keys = {n: analyst_key(REGIONS[n][0]) for n in names}
    paths = {n: scenarios(REGIONS[n][0], int(facts[n]["household"])) for n in names}
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    firsts: dict[str, dict[str, float]] = {}
    jobs: dict[tuple[str, str], dict] = {}
    for rep in range(reps):
        for i, n in enumerate(names):
            server = Server(REGIONS[n][0], 8301 + i)
            try:
                if rep == 0:
                    firsts[n] = first_answers(server, keys[n], 1)
                facts[n].setdefault("settled_s", server.settled_s)
                for label, plist in paths[n].items():
                    print(f"{n} {label} ({rep + 1}/{reps})", flush=True)
                    wrk(server, keys[n], plist, 3)  # warm-up: the pages and indexes this scenario reads
                    runs.setdefault((n, label), []).append(wrk(server, keys[n], plist, seconds))
                if rep == 0:
                    county = psql("SELECT code FROM admin_unit WHERE level = 3 ORDER BY code LIMIT 1", REGIONS[n][0])
                    for what, ref in (("one county", {"region": "tieling-demo", "admin_code": county}),
                                      ("one prefecture", {"region": "tieling-demo", "admin_code": "211200"}),
                                      ("the whole region", {"region": "tieling-demo"})):
                        for process, extra in (("needs-assessment", {}), ("mpi", {"group_by": "county_code"})):
                            print(f"{n} {process} {what}", flush=True)
                            jobs[(n, f"{process}, {what}")] = run_job(server, keys[n], process,
                                                                      {"households": ref, **extra})
            finally:
                server.stop()
    write(facts, runs, firsts, jobs, names, seconds, reps)


def med(xs: list[dict[str, float]], k: str) -> float:
    return statistics.median(x[k] for x in xs)


def write(facts, runs, firsts, jobs, names, seconds, reps) -> None:  # noqa: ANN001
    lines = [
        "# National scale: the demo against a province-sized region (`bench/scale.py`)",
        "",
        f"Run {dt.date.today().isoformat()} on this machine (2 cores), PostgreSQL 15 + PostGIS on loopback, uvicorn "
        f"with 2 workers, tile cache off, no rate limit, an analyst key (households are restricted: displaced "
        f"points). wrk -t2 -c16, {seconds} s per run, {reps} interleaved repetition(s), median shown.",
        "",
        "## The regions",
        "",
        "| | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for key, label, fmt in (("village", "villages", "{:,}"), ("household", "households", "{:,}"),
                            ("person", "members", "{:,}"), ("db_gb", "database size (GB)", "{:.2f}"),
                            ("household_gb", "households with indexes (GB)", "{:.2f}"),
                            ("load_s", "`tpa demo load` (s)", "{:.0f}"), ("scale_s", "of which scaling (s)", "{:.0f}"),
                            ("vacuum_s", "VACUUM ANALYZE (s)", "{:.0f}"),
                            ("settled_s", "service start to extents known (s)", "{:.0f}")):
        lines.append(f"| {label} | " + " | ".join(fmt.format(facts[n][key]) if key in facts[n] else "(reused)"
                                                   for n in names) + " |")
    lines += ["", "## Requests", "",
              "| scenario | " + " | ".join(f"{n} req/s | {n} p99 ms" for n in names)
              + (" | ratio req/s |" if len(names) == 2 else " |") + " peak RSS MB |",
              "|---|" + "---:|---:|" * len(names) + ("---:|" if len(names) == 2 else "") + "---:|"]
    for label in dict.fromkeys(lab for _, lab in runs):
        cells = []
        for n in names:
            r = runs.get((n, label))
            cells += [f"{med(r, 'rps'):,.0f}", f"{med(r, 'p99'):,.0f}"] if r else ["", ""]
        ratio = ""
        if len(names) == 2 and all((n, label) in runs for n in names):
            ratio = f" {med(runs[(names[1], label)], 'rps') / med(runs[(names[0], label)], 'rps'):.2f} |"
        bad = sum(x["non2xx"] for n in names for x in runs.get((n, label), []))
        rss = max(x["rss"] for n in names for x in runs.get((n, label), []))
        lines.append(f"| {label}{' (' + str(bad) + ' non-2xx)' if bad else ''} | " + " | ".join(cells) + " |"
                     + ratio + f" {rss:,.0f} |")
    lines += ["", "## First answers of new filters (single requests, ms)", "",
              "| request | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label in firsts[names[0]]:
        if label.endswith("(numberMatched given)"):
            continue
        cells = [f"{firsts[n][label]:,.0f}" + ("" if firsts[n][label + ' (numberMatched given)'] else " (count later)")
                 for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Analyses of the registry (jobs)", "",
              "| analysis | " + " | ".join(f"{n} s | {n} peak RSS MB" for n in names) + " |",
              "|---|" + "---:|---:|" * len(names)]
    for label in dict.fromkeys(lab for _, lab in jobs):
        cells = []
        for n in names:
            j = jobs.get((n, label), {})
            if "s" in j and j["status"] == "successful":
                hh = f" ({j['households']:,} households)" if j.get("households") else ""
                cells += [f"{j['s']:,.1f}{hh}", f"{j['rss']:,.0f}"]
            else:
                cells += [f"{j.get('status', j.get('error', '?'))}: {j.get('message', j.get('detail', ''))}", ""]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    (HERE / "results-scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
