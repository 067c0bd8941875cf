"""The demo registry over time: generation and load times, and how the needs rules discriminate on it.

Usage:  .venv/bin/python bench/demo_panel.py [--runs N]     writes bench/results-demo-panel.md

Generates the demo (seed 42) N times, loads it once into a throwaway database (all-or-nothing, as `tpa demo load`),
and scores the registry of 2016, 2020 and 2025 with the needs rules' defaults, and with the bare formulas (labour
needs for every household, any ill member, the main cause's priors for every status), to show what the data and
what the rules contribute.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from app.analysis import needs as nd  # noqa: E402
from app.demo.generate import _CAUSE_NEEDS, POVERTY_LINE_CNY, generate  # noqa: E402
from app.demo.panel import needs_rows  # noqa: E402


def load_once(data: Any) -> float:
    from tpa_testing import ThrowawayDatabase, settings_for

    from app.db import create_engine, create_sessionmaker
    from app.services.demo import load_data

    async def load(url: str) -> float:
        engine = create_engine(settings_for(url).db)
        t0 = time.perf_counter()
        async with create_sessionmaker(engine)() as session, session.begin():
            await load_data(session, data)
        elapsed = time.perf_counter() - t0
        await engine.dispose()
        return elapsed

    with ThrowawayDatabase("bench_panel") as db:
        db.upgrade()
        return asyncio.run(load(db.url))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    times = []
    data = None
    for _ in range(args.runs):
        t0 = time.perf_counter()
        data = generate(42)
        times.append(time.perf_counter() - t0)
    assert data is not None
    load_s = load_once(data)
    counts = data.counts()
    table = nd.CauseTable({str(c): {str(n) for n in ns} for c, ns in _CAUSE_NEEDS.items()}, {})
    line = float(POVERTY_LINE_CNY)
    variants = {"defaults": nd.NeedRules(poverty_line=line),
                "bare formulas": nd.NeedRules(poverty_line=line, labour_needs=(), illness_term="any",
                                              prior_statuses=())}
    lines = [
        "# The demo registry over time (2016–2025)",
        "",
        f"Measured {dt.date.today().isoformat()} with `.venv/bin/python bench/demo_panel.py --runs {args.runs}` on "
        "this machine (2 cores).",
        "",
        f"- generation (seed 42): median {statistics.median(times):.1f} s, worst {max(times):.1f} s "
        "(target ≤ 60 s)",
        f"- load into PostGIS in one transaction (COPY): {load_s:.1f} s",
        "- rows: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()),
        "",
        "## Share of households with each need active (score ≥ 0.5)",
        "",
        "Registry of the year (the record of year Y holds the income of Y − 1). *Defaults*: labour needs only "
        "with a worker, the illness term without a family doctor, the main cause's priors for poor, returned and "
        "monitored households (docs/methodology.md#needs). *Bare formulas*: without these three rules.",
        "",
    ]
    header = "| need | " + " | ".join(f"{y} {v}" for y in (2016, 2020, 2025) for v in variants) + " |"
    lines += [header, "|---|" + "---:|" * (3 * len(variants))]
    results: dict[tuple[int, str], Any] = {}
    for y in (2016, 2020, 2025):
        rows = needs_rows(data, y)
        for name, rules in variants.items():
            results[(y, name)] = (len(rows), nd.assess(rows, rules, table))
    for k, need in enumerate(nd.NEEDS):
        cells = [f"{results[(y, v)][1].active_matrix[:, k].mean():.1%}" for y in (2016, 2020, 2025) for v in variants]
        lines.append(f"| {need} | " + " | ".join(cells) + " |")
    cells = []
    for y in (2016, 2020, 2025):
        for v in variants:
            n, a = results[(y, v)]
            cells.append(f"{int(a.active_matrix.any(axis=1).sum()):,} / {n:,}")
    lines.append("| households with any need | " + " | ".join(cells) + " |")
    statuses = {y: Counter(r["status"] for r in needs_rows(data, y)) for y in range(2016, 2026)}
    lines += ["", "## Registry status by year", "", "| year | poor | returned | exited | monitored |",
              "|---|---:|---:|---:|---:|"]
    for y, c in statuses.items():
        lines.append(f"| {y} | {c['poor']:,} | {c['returned']:,} | {c['exited']:,} | {c['monitored']:,} |")
    out = ROOT / "bench" / "results-demo-panel.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
