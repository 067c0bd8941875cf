#!/usr/bin/env python3
"""Dynamic monitoring at scale (issue 21 part 3): screening 1,000,000 household-years with the default rules.

A region ten times the demo (250,000 households, registry years 2016-2025: 2.5 million household-years) is built
once with the demo generator (seed 42) in database tpa_bench_monitoring10. Measured, in the same run:

- **service**: ``app.services.monitoring.screen`` on four registry years (2022-2025: 1,000,000 household-years),
  rules translated by the CQL2 engine and evaluated in one SQL statement per year over household-records, the
  alerts written (upsert, one transaction per year) — the work of ``tpa monitoring run``;
- **peer**: the same four years read from PostgreSQL (the raw registry columns with the previous record's income
  and the members valid on each record's and the previous record's first day) and the rules evaluated with pandas
  (the test oracle, tests/test_monitoring.py), nothing written.

Both must find the same alerts. Target: the service ≤ 60 s for the 1,000,000 household-years.

Usage:  .venv/bin/python bench/monitoring.py        writes bench/results-monitoring.md
Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from monitoring_oracle import RECORDS_SQL, REGISTRY, default_rules  # noqa: E402  (the tests' oracle is the peer)
from portal import PG, prepare, psql  # noqa: E402  (the same way of building a region ×10)

DB = "tpa_bench_monitoring10"
SIZES = {"n_villages": 12_000, "n_households": 250_000, "n_projects": 3_000, "n_facilities": 20_000}
YEARS = (2022, 2023, 2024, 2025)


def main() -> None:
    prepare(DB, SIZES)
    from app.db import create_engine
    from app.services.monitoring import screen
    from app.settings import DatabaseSettings, SecuritySettings

    security = SecuritySettings(jitter_key="bench-only jitter key")
    region = psql("SELECT region_id FROM region LIMIT 1", DB)
    per_year = {int(y): int(n) for y, n in (line.split("|") for line in psql(
        f"SELECT extract(year FROM valid_from)::int, count(*) FROM {REGISTRY} r GROUP BY 1 ORDER BY 1",
        DB).splitlines())}
    psql("DELETE FROM alert", DB)

    async def service() -> tuple[float, dict[int, dict[str, list[str]]], dict[int, float]]:
        eng = create_engine(DatabaseSettings(url=f"{PG}/{DB}", statement_timeout_ms=0))
        found, times = {}, {}
        try:
            t0 = time.perf_counter()
            for y in YEARS:
                t = time.perf_counter()
                r = await screen(eng, security, region, y)
                times[y] = time.perf_counter() - t
                found[y] = {a["hh_id"]: a["rules"] for a in r.alerts}
            return time.perf_counter() - t0, found, times
        finally:
            await eng.dispose()

    total, found, times = asyncio.run(service())

    async def peer_run() -> tuple[float, dict[int, dict[str, list[str]]]]:
        import asyncpg

        conn = await asyncpg.connect(f"{PG}/{DB}")
        try:
            t0 = time.perf_counter()
            out = {y: default_rules(await conn.fetch(RECORDS_SQL, y)) for y in YEARS}
            return time.perf_counter() - t0, out
        finally:
            await conn.close()

    peer_total, peer = asyncio.run(peer_run())
    same = all(peer[y] == found[y] for y in YEARS)
    records = sum(per_year[y] for y in YEARS)
    alerts = {y: len(found[y]) for y in YEARS}
    stamp = dt.date.today().isoformat()
    lines = [
        "# Dynamic monitoring: screening at scale",
        "",
        f"Measured {stamp} with `.venv/bin/python bench/monitoring.py` on this machine (2 cores), PostgreSQL 15 on "
        f"loopback. Region: the demo generator ×10 (seed 42; {SIZES['n_households']:,} households, "
        f"{sum(per_year.values()):,} household-years 2016–2025). Screened: {', '.join(map(str, YEARS))} "
        f"({records:,} household-years) with the five default rules.",
        "",
        "| | time (s) | household-years / s | alerts | same alerts as the peer | target |",
        "|---|---:|---:|---:|---|---|",
        f"| service: `screen` (CQL2 → one SQL statement per year, alerts written) | {total:.1f} | "
        f"{records / total:,.0f} | {sum(alerts.values()):,} | {'yes' if same else 'NO'} | ≤ 60 s |",
        f"| peer: raw columns read, rules in pandas, nothing written | {peer_total:.1f} | "
        f"{records / peer_total:,.0f} | {sum(len(p) for p in peer.values()):,} | | |",
        "",
        f"Ratio service / peer: {total / peer_total:.2f}.",
        "",
        "| year | household-years | alerts | service (s) |",
        "|---|---:|---:|---:|",
        *(f"| {y} | {per_year[y]:,} | {alerts[y]:,} | {times[y]:.1f} |" for y in YEARS),
        "",
    ]
    out = HERE / "results-monitoring.md"
    out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    if not same:
        raise SystemExit("the service and the peer disagree")


if __name__ == "__main__":
    main()
