#!/usr/bin/env python3
"""What the shared rate limit costs: one small page (a village by id, with an API key) under wrk, served by two
workers with the limit kept in PostgreSQL (TPA_API_RATE_LIMIT_SHARED=true, the default), counted in each worker
(false), and with no limit at all; the limit is set far above the load so every request is counted and none is
refused. Each configuration runs --rounds times, interleaved, and the medians are written to
bench/results-scale-out.md.

Usage:  .venv/bin/python bench/rate_limit.py [--db tpa] [--seconds 15] [--rounds 3]
Needs the demo database (make demo) and wrk (scripts/ensure-test-tools.sh). Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
PORT = 8112
PATH = "/collections/villages/items/211202001001"
CONFIGS = {
    "shared (PostgreSQL)": {"TPA_API_RATE_LIMIT_SHARED": "true"},
    "per worker (memory)": {"TPA_API_RATE_LIMIT_SHARED": "false"},
    "no limit": {"TPA_API_RATE_LIMIT_PER_MINUTE": "0"},
}


@contextmanager
def served(db: str, env: dict[str, str]):
    full = {**os.environ, "DATABASE_URL": f"{PG}/{db}", "TPA_LOG_LEVEL": "WARNING", "TPA_API_ACCESS_LOG": "false",
            "TPA_JITTER_KEY": os.environ.get("TPA_JITTER_KEY") or secrets.token_urlsafe(16),
            "TPA_API_RATE_LIMIT_PER_MINUTE": "100000000", "TPA_API_RATE_LIMIT_BURST": "100000000", **env}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(PORT), "--workers", "2"],
                            env=full, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{PORT}"
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def wrk(url: str, key: str, seconds: int) -> tuple[float, float, float]:
    out = subprocess.run([shutil.which("wrk") or "wrk", "-t", "2", "-c", "16", "-d", f"{seconds}s", "--latency",
                          "-H", f"Authorization: Bearer {key}", url + PATH], capture_output=True, text=True,
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p: str) -> float:
        v, unit = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)$", out, re.M).groups()
        return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    if "Non-2xx" in out:
        raise RuntimeError("refused or failed requests:\n" + out)
    return rps, pct("50"), pct("99")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="tpa")
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    env = {**os.environ, "DATABASE_URL": f"{PG}/{a.db}"}
    subprocess.run([sys.executable, "-m", "app.cli", "db", "upgrade"], env=env, cwd=ROOT, check=True,
                   capture_output=True)  # the shared limit's table (revision 0018)
    key = subprocess.run([sys.executable, "-m", "app.cli", "keys", "create", "--role", "analyst", "--name",
                          "bench rate limit"], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    key = re.search(r"tpa_[A-Za-z0-9_-]+", key).group(0)
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in CONFIGS}
    for r in range(a.rounds):
        for name, env in CONFIGS.items():
            with served(a.db, env) as url:
                wrk(url, key, 3)  # warm-up: connections, prepared statements, caches
                runs[name].append(wrk(url, key, a.seconds))
                print(f"round {r + 1}, {name}: {runs[name][-1][0]:.0f} req/s, p50 {runs[name][-1][1]:.2f} ms, "
                      f"p99 {runs[name][-1][2]:.2f} ms", flush=True)
    base = statistics.median(x[0] for x in runs["no limit"])
    rows = []
    for name, xs in runs.items():
        rps = statistics.median(x[0] for x in xs)
        rows.append(f"| {name} | {rps:,.0f} | {statistics.median(x[1] for x in xs):.2f} | "
                    f"{statistics.median(x[2] for x in xs):.2f} | {rps / base:.2f} |")
    per_req_ms = 2 * 1000 * (1 / statistics.median(x[0] for x in runs["shared (PostgreSQL)"]) - 1 / base)
    text = (f"# Scale-out: the shared rate limit\n\nMeasured {time.strftime('%Y-%m-%d')} with "
            f"`.venv/bin/python bench/rate_limit.py --seconds {a.seconds} --rounds {a.rounds}` on this machine "
            f"({os.cpu_count()} cores): `tpa serve --workers 2` on the demo database, wrk with 2 threads and 16 "
            f"connections for {a.seconds} s on `GET {PATH}` with an analyst key; the limit far above the load, so "
            "every request is counted and none refused. Medians of the rounds (configurations interleaved).\n\n"
            "| rate limit | req/s | p50 ms | p99 ms | req/s vs no limit |\n|---|---:|---:|---:|---:|\n"
            + "\n".join(rows) + f"\n\nThe shared limit's statement costs about {per_req_ms:.2f} ms of a worker's "
            "time per request (from the throughputs of two workers).\n")
    out = ROOT / "bench" / "results-scale-out.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
