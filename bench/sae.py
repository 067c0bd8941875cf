#!/usr/bin/env python3
"""Small-area estimation at the issue's sizes (issue 23), on two cores, with peers in the same run.

- **Fay–Herriot**: 5,000 areas, 4 covariates, REML fit + EBLUP + Prasad–Rao MSE, then the parametric bootstrap
  MSE with 200 replicates (``app.analysis.sae``). Target ≤ 30 s.
  Peer: the same REML fit by scipy's general-purpose bounded minimiser of the restricted likelihood.
- **EBP**: 2,000,000 population households in 4,000 areas, 100,000 sampled (25 in every area), 5 covariates, log
  incomes; fit, EBP of FGT(0, 1, 2) and the mean, and the parametric bootstrap MSE with 100 replicates. Target
  ≤ 5 min.
  Peer: one Molina–Rao Monte Carlo EBP with L = 50 replicates of the whole population (what emdi and povmap compute
  per estimate), timed once; its bootstrap would cost 100 × that.

Usage:  .venv/bin/python bench/sae.py        writes bench/results-sae.md (no database needed)
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
from scipy import optimize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app.analysis import sae  # noqa: E402


def fay_herriot(lines: list[str]) -> None:
    rng = np.random.default_rng(11)
    m = 5000
    X = np.column_stack([np.ones(m), rng.normal(size=(m, 4))])
    psi = rng.uniform(0.2, 2.0, m)
    y = X @ np.array([1.0, 0.5, -0.3, 0.2, 0.1]) + rng.normal(0, 0.8, m) + rng.normal(0, np.sqrt(psi))
    t0 = time.perf_counter()
    fit = sae.fit_fay_herriot(y, X, psi)
    pr = sae.predict_fay_herriot(fit, y, X, psi)
    t1 = time.perf_counter()
    mse = sae.bootstrap_fay_herriot(fit, y, X, psi, "none", 200, rng)
    t2 = time.perf_counter()

    def neg_restricted(s2: float) -> float:
        v = s2 + psi
        A = X.T @ (X / v[:, None])
        beta = np.linalg.solve(A, X.T @ (y / v))
        r = y - X @ beta
        return 0.5 * float(np.log(v).sum() + np.linalg.slogdet(A)[1] + (r * r / v).sum())

    t3 = time.perf_counter()
    peer = optimize.minimize_scalar(neg_restricted, bounds=(0, 10), method="bounded", options={"xatol": 1e-10})
    t4 = time.perf_counter()
    lines += [
        "## Fay–Herriot: 5,000 areas, 4 covariates, 200 bootstrap replicates", "",
        "| step | seconds |", "|---|---:|",
        f"| REML fit ({fit.iterations} Fisher-scoring steps) + EBLUP + Prasad–Rao MSE | {t1 - t0:.3f} |",
        f"| parametric bootstrap MSE, 200 replicates (refit each) | {t2 - t1:.2f} |",
        f"| **total** (target ≤ 30 s) | **{t2 - t0:.2f}** |",
        f"| peer: scipy bounded minimiser of the restricted likelihood (one fit) | {t4 - t3:.3f} |", "",
        f"σ²_u: ours {fit.sigma2_u:.6f}, peer {peer.x:.6f} (true 0.64); mean Prasad–Rao MSE {pr.mse.mean():.4f}, "
        f"mean bootstrap MSE {mse.mean():.4f}.", ""]


def ebp(lines: list[str]) -> None:
    rng = np.random.default_rng(12)
    D, N = 4000, 2_000_000
    area = np.sort(rng.integers(0, D, N))
    X = np.column_stack([np.ones(N), rng.normal(size=(N, 3)), rng.binomial(1, 0.4, N),
                         rng.normal(size=D)[area]])
    beta = np.array([8.6, 0.2, -0.1, 0.15, 0.3, 0.1])
    y = np.exp(X @ beta + rng.normal(0, 0.2, D)[area] + rng.normal(0, 0.5, N))
    sampled_areas = rng.choice(D, 4000, replace=False)
    first = np.searchsorted(area, np.arange(D))
    counts = np.bincount(area, minlength=D)
    idx = np.concatenate([first[d] + rng.choice(counts[d], 25, replace=False) for d in sampled_areas])
    pop = sae.Population(X, area, rng.integers(1, 6, N).astype(float), D)
    z = float(np.exp(8.6))
    t0 = time.perf_counter()
    fit, tr = sae.fit_transformed(y[idx], X[idx], area[idx], D, "log", "REML")
    t1 = time.perf_counter()
    est = sae.ebp(fit, tr, pop, z)
    t2 = time.perf_counter()
    mse, _ = sae.bootstrap_ebp(fit, tr, X[idx], area[idx], pop, z, 100, rng)
    t3 = time.perf_counter()
    # peer: Molina & Rao's Monte Carlo EBP with L = 50 (census EB), one estimate
    L = 50
    m = X @ fit.beta + fit.u_hat[area]
    s = np.sqrt(fit.sigma2_e + fit.sigma2_u * (1 - fit.gamma[area]))
    t4 = time.perf_counter()
    acc = np.zeros(D)
    for _ in range(L):
        yy = tr.inverse(m + s * rng.standard_normal(N))
        acc += np.bincount(area, pop.weight * (yy < z), D) / pop.total
    t5 = time.perf_counter()
    mc = acc / L
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines += [
        "## EBP: 100,000 sampled households, 2,000,000 population households, 100 bootstrap replicates", "",
        "| step | seconds |", "|---|---:|",
        f"| REML fit of the nested-error model on log incomes | {t1 - t0:.2f} |",
        f"| EBP of FGT0, FGT1, FGT2 and mean for 4,000 areas (exact expectations) | {t2 - t1:.2f} |",
        f"| parametric bootstrap MSE, 100 replicates | {t3 - t2:.1f} |",
        f"| **total** (target ≤ 300 s) | **{t3 - t0:.1f}** |",
        f"| peer: one Monte Carlo EBP with L = 50 (FGT0 only) | {t5 - t4:.1f} |",
        f"| peer × 101 (estimate + 100 bootstrap replicates), extrapolated | {(t5 - t4) * 101:.0f} |", "",
        f"Largest difference between the exact FGT0 and the L = 50 Monte Carlo: "
        f"{np.nanmax(np.abs(mc - est['fgt0'])):.4f} (Monte Carlo noise); median CV of FGT0 "
        f"{np.nanmedian(np.sqrt(mse['fgt0']) / est['fgt0']):.3f}. Peak memory {peak:,.0f} MB.", ""]


def main() -> None:
    lines = ["# Small-area estimation (issue 23)", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}, numpy {np.__version__}. Command: `.venv/bin/python bench/sae.py`.", ""]
    fay_herriot(lines)
    ebp(lines)
    out = Path(__file__).with_name("results-sae.md")
    out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
