"""Stage 1 bench: location-allocation and local statistics at county scale, against peers in the same run.

Instances: random uniform points in a 100 km square (seeded), as DOMAIN §10; demand weights 1–99.

* MCLP 5,000 × 500, p = 20, r = 10 km: ours (sparse PuLP model, merged rows) vs spopt ``MCLP.from_cost_matrix``.
* p-median 5,000 × 500, p = 20: ours (interchange + Lagrangian bound) — target a proven gap ≤ 1 % in ≤ 120 s;
  peer: spopt ``PMedian.from_cost_matrix`` on 500 × 50, p = 5 (what exact CBC manages), ours on the same.
* LISA and Gi* on 5,000 units (KNN-8 / 5 km band), 999 permutations: ours vs esda called directly.
* the spatial-autocorrelation process end to end over HTTP (5,000 inline features, sync, results published).

Writes ``bench/results-stage1.md``. Run: ``.venv/bin/python bench/stage1.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")
OUT = Path(__file__).with_name("results-stage1.md")


def instance(n: int, m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = rng.uniform(0, 100, (n, 2))
    s = rng.uniform(0, 100, (m, 2))
    w = rng.integers(1, 100, n).astype(float)
    return np.sqrt(((d[:, None, :] - s[None, :, :]) ** 2).sum(-1)), w, d, s


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    import esda
    import pulp
    from libpysal.weights import KNN, DistanceBand
    from spopt.locate import MCLP, PMedian

    from app.analysis import autocorrelation as ac
    from app.analysis import location as loc

    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-peers", action="store_true")
    args = ap.parse_args()
    rows: list[tuple[str, str, str]] = []
    cost, w, d, _ = instance(5000, 500)

    r, t = timed(lambda: loc.mclp(cost, w, 20, 10.0, [], 120))
    rows.append(("MCLP 5,000 × 500, p = 20, r = 10 km (ours)", f"{t:.1f} s",
                 f"{r.status}, objective {r.objective:.0f}, gap {r.mip_gap}, "
                 f"weighted cover {r.coverage_weighted_pct:.2f} %"))
    print(rows[-1], flush=True)
    if not args.skip_peers:
        def spopt_mclp():
            m = MCLP.from_cost_matrix(cost, w, service_radius=10.0, p_facilities=20)
            return m.solve(pulp.PULP_CBC_CMD(msg=False, timeLimit=300, threads=2))
        m, t2 = timed(spopt_mclp)
        rows.append(("MCLP same instance (spopt, build + solve)", f"{t2:.1f} s",
                     f"sol_status {m.problem.sol_status}, objective {pulp.value(m.problem.objective):.0f}; "
                     f"ratio spopt/ours {t2 / t:.1f}"))
        print(rows[-1], flush=True)

    r, t = timed(lambda: loc.pmedian(cost, w, 20, [], 120))
    rows.append(("p-median 5,000 × 500, p = 20 (ours)", f"{t:.1f} s",
                 f"{r.status}, cost {r.objective:.1f}, lower bound {r.lower_bound:.1f}, "
                 f"proven gap {100 * r.mip_gap:.4f} %"))
    print(rows[-1], flush=True)
    small, ws, _, _ = instance(500, 50, 1)
    r, t = timed(lambda: loc.pmedian(small, ws, 5, [], 120))
    rows.append(("p-median 500 × 50, p = 5 (ours)", f"{t:.2f} s", f"{r.status}, cost {r.objective:.3f}"))
    print(rows[-1], flush=True)
    if not args.skip_peers:
        def spopt_pmedian():
            m = PMedian.from_cost_matrix(small, ws, p_facilities=5)
            return m.solve(pulp.PULP_CBC_CMD(msg=False, timeLimit=300, threads=2))
        m, t2 = timed(spopt_pmedian)
        rows.append(("p-median 500 × 50, p = 5 (spopt, exact CBC)", f"{t2:.1f} s",
                     f"sol_status {m.problem.sol_status}, cost {pulp.value(m.problem.objective):.3f}; ratio "
                     f"spopt/ours {t2 / t:.0f}"))
        print(rows[-1], flush=True)

    rng = np.random.default_rng(1)
    y = rng.gamma(2, 50, 5000)
    wk = KNN.from_array(d * 1000, k=8)
    r, t = timed(lambda: ac.local_moran(y, wk, 999, 1))
    rows.append(("LISA 5,000 units, KNN-8, 999 permutations (ours)", f"{t:.2f} s",
                 f"{int(r.significant.sum())} significant"))
    _, t2 = timed(lambda: esda.Moran_Local(y, wk, permutations=999, seed=1, n_jobs=1))
    rows.append(("LISA same (esda directly)", f"{t2:.2f} s", f"ratio ours/esda {t / t2:.2f}"))
    wb = DistanceBand.from_array(d * 1000, threshold=5000, binary=True, silence_warnings=True)
    r, t = timed(lambda: ac.getis_ord(y, wb, 999, 1))
    rows.append((f"Gi* 5,000 units, 5 km band ({wb.mean_neighbors:.1f} neighbours), 999 permutations (ours)",
                 f"{t:.2f} s", f"{sum(c != 'not-significant' for c in r.classes)} in a hot/cold class"))
    _, t2 = timed(lambda: esda.G_Local(y, wb, transform="B", star=True, permutations=999, seed=1, n_jobs=1))
    rows.append(("Gi* same (esda directly)", f"{t2:.2f} s", f"ratio ours/esda {t / t2:.2f}"))
    for row in rows[-4:]:
        print(row, flush=True)

    rows.append(asyncio.run(http_process(d, y)))
    print(rows[-1], flush=True)

    lines = ["# Stage 1 bench", "", f"Machine: {platform.machine()}, 2 cores; CBC threads 2; "
             f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (bench process).",
             "Command: `.venv/bin/python bench/stage1.py`", "", "| case | time | result |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


async def http_process(d: np.ndarray, y: np.ndarray) -> tuple[str, str, str]:
    """The process end to end through the API, in a throwaway database (results are published)."""

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tpa_testing import ThrowawayDatabase, client_for, settings_for

    lon = 123.0 + d[:, 0] / 85.0
    lat = 42.0 + d[:, 1] / 111.0
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": str(i), "geometry": {"type": "Point", "coordinates": [float(lon[i]), float(lat[i])]},
         "properties": {"poor": float(y[i])}} for i in range(len(y))]}
    with ThrowawayDatabase("bench") as db:
        db.upgrade()
        async with client_for(settings_for(db.url)) as c:
            t = time.perf_counter()
            r = await c.post("/processes/spatial-autocorrelation/execution", json={"inputs": {
                "features": fc, "variable": "poor", "permutations": 999}}, timeout=120)
            el = time.perf_counter() - t
            assert r.status_code == 200, r.text
            items = (await c.get(r.json()["features"]["href"].replace("http://testserver", ""),
                                 params={"limit": 1})).json()
    return ("spatial-autocorrelation process over HTTP, 5,000 inline points, 999 permutations (sync)",
            f"{el:.2f} s", f"Moran I {r.json()['global']['moran_i']:.4f}; published {items['numberMatched']} features")


if __name__ == "__main__":
    main()
