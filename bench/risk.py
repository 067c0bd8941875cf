#!/usr/bin/env python3
"""The return-risk model at scale (issue 21 part 4): training on 250,000 household-years on two cores.

The region ten times the demo of bench/monitoring.py (250,000 households, registry years 2016-2025) in database
tpa_bench_monitoring10, built once with the demo generator (seed 42). Measured, in the same run:

- **read**: the region's registry records of every year with the rules fired (``app.services.risk.load_records``);
- **train**: the model of the process (LightGBM, the process's defaults, 2 threads) on the 250,000 household-years
  whose outcome year is 2024, then scored on the 250,000 of 2025 (AUC, Brier) and explained (TreeSHAP);
- **peer**: scikit-learn's HistGradientBoostingClassifier with the same trees, depth, leaves, learning rate and
  minimum leaf on the same rows, in the same run (2 threads: OMP_NUM_THREADS);
- **whole**: ``tpa monitoring risk`` on the region (read, three validation years, the final model on every year,
  the 250,000 households of 2025 scored, explained and stored).

Target: training on 250,000 household-years ≤ 120 s on two cores.

Usage:  OMP_NUM_THREADS=2 .venv/bin/python bench/risk.py        writes bench/results-risk.md
Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from monitoring import DB, SIZES  # noqa: E402  (the same region ×10)
from portal import PG, prepare, psql  # noqa: E402

THREADS = 2


def main() -> None:
    prepare(DB, SIZES)
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier

    from app.analysis import risk
    from app.db import create_engine
    from app.services.risk import load_records
    from app.settings import DatabaseSettings, SecuritySettings

    region = psql("SELECT region_id FROM region LIMIT 1", DB)
    security = SecuritySettings(jitter_key="bench-only jitter key")

    async def read():  # noqa: ANN202
        eng = create_engine(DatabaseSettings(url=f"{PG}/{DB}", statement_timeout_ms=0))
        try:
            return await load_records(eng, security, region)
        finally:
            await eng.dispose()

    t = time.perf_counter()
    records = asyncio.run(read())
    t_read = time.perf_counter() - t
    pairs = risk.pairs(records)
    train, test = pairs[pairs["outcome_year"] == 2024], pairs[pairs["outcome_year"] == 2025]
    spec = risk.ModelSpec()

    t = time.perf_counter()
    model = risk.fit(train, spec, THREADS)
    t_fit = time.perf_counter() - t
    t = time.perf_counter()
    p = risk.predict(model, test)
    t_pred = time.perf_counter() - t
    t = time.perf_counter()
    risk.contributions(model, test)
    t_explain = time.perf_counter() - t
    ours = risk.metrics(test["outcome"].to_numpy(), p)

    # the peer: scikit-learn's histogram gradient boosting, same shape of model, categories by their codes
    X_train, X_test = risk.features(train), risk.features(test)
    for c in risk.CATEGORICAL:
        cats = X_train[c].cat.categories
        X_train[c] = X_train[c].cat.codes.replace(-1, np.nan).astype(float)
        X_test[c] = X_test[c].cat.set_categories(cats).cat.codes.replace(-1, np.nan).astype(float)
    peer = HistGradientBoostingClassifier(
        max_iter=spec.n_estimators, learning_rate=spec.learning_rate, max_depth=spec.max_depth,
        max_leaf_nodes=spec.num_leaves, min_samples_leaf=spec.min_child_samples, early_stopping=False,
        random_state=spec.seed, categorical_features=[X_train.columns.get_loc(c) for c in risk.CATEGORICAL])
    t = time.perf_counter()
    peer.fit(X_train, train["outcome"].to_numpy())
    t_peer = time.perf_counter() - t
    theirs = risk.metrics(test["outcome"].to_numpy(), peer.predict_proba(X_test)[:, 1])

    env = {**os.environ, "DATABASE_URL": f"{PG}/{DB}", "TPA_JITTER_KEY": "bench-only jitter key"}
    t = time.perf_counter()
    whole = subprocess.run([str(ROOT / ".venv/bin/tpa"), "monitoring", "risk", "--region", region],
                           env=env, capture_output=True, text=True)
    if whole.returncode:
        raise SystemExit(f"tpa monitoring risk failed:\n{whole.stderr[-3000:]}")
    t_whole = time.perf_counter() - t

    cpu = platform.processor() or platform.machine()
    lines = [
        "# Return-risk model at scale (bench/risk.py)",
        "",
        f"Region ×10 of the demo (database `{DB}`: {SIZES['n_households']:,} households, {len(records):,} registry "
        f"records 2016–2025, {len(pairs):,} household-years with a next year); {THREADS} threads; {cpu}; "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "| step | rows | seconds | result |",
        "|---|---:|---:|---|",
        f"| read the records (rules fired, members, counties) | {len(records):,} | {t_read:.1f} | |",
        f"| **train** (LightGBM, the process's defaults) | {len(train):,} | **{t_fit:.1f}** | target ≤ 120 s |",
        f"| predict the next year | {len(test):,} | {t_pred:.2f} | AUC {ours['auc']:.4f}, Brier {ours['brier']:.5f} |",
        f"| explain (TreeSHAP contributions, top 3) | {len(test):,} | {t_explain:.1f} | |",
        f"| peer: scikit-learn HistGradientBoosting, same shape | {len(train):,} | {t_peer:.1f} | "
        f"AUC {theirs['auc']:.4f}, Brier {theirs['brier']:.5f} |",
        f"| whole `tpa monitoring risk` (3 validation years, final model, score, store) | {len(pairs):,} | "
        f"{t_whole:.1f} | |",
        "",
        f"Training ratio ours / peer: {t_fit / t_peer:.2f}. Outcome rate of the test year: "
        f"{ours['prevalence']:.4f} ({ours['positives']:,} of {ours['n']:,}).",
        "",
        "Output of the command:",
        "",
        "```",
        *(line for line in (whole.stdout + whole.stderr).strip().splitlines()  # the report, not the spinner
          if line.strip() and not line.lstrip().startswith(("⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"))),
        "```",
        "",
    ]
    out = HERE / "results-risk.md"
    out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
