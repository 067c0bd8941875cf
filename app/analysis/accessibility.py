"""Accessibility by two-step floating catchment area (docs/methodology.md#accessibility) with the ``access`` package:
classic 2SFCA, enhanced 2SFCA (stepped weights, Luo & Qi 2009) and the Gaussian weight."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from app.analysis.spatial import AnalysisError

Method = Literal["2sfca", "e2sfca", "gaussian"]
# Luo & Qi (2009) zone weights over thirds of the catchment: 0–10/10–20/20–30 minutes → 1, 0.68, 0.22.
LUO_QI_STEPS = ((1 / 3, 1.0), (2 / 3, 0.68), (1.0, 0.22))
_EXP_HALF = math.exp(-0.5)


def gaussian_weight(d0: float) -> Callable[[np.ndarray], np.ndarray]:
    """W(d) = (e^{-½(d/d0)²} − e^{-½}) / (1 − e^{-½}) for d ≤ d0, else 0 (docs/methodology.md#accessibility)."""

    def fn(d: np.ndarray) -> np.ndarray:
        d = np.asarray(d, dtype=float)
        w = (np.exp(-0.5 * (d / d0) ** 2) - _EXP_HALF) / (1 - _EXP_HALF)
        return np.where(d <= d0, w, 0.0)

    return fn


def default_steps(max_cost: float) -> list[tuple[float, float]]:
    return [(max_cost * f, w) for f, w in LUO_QI_STEPS]


def accessibility(
    demand: np.ndarray, supply: np.ndarray, cost: np.ndarray, method: Method, max_cost: float,
    steps: Sequence[tuple[float, float]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Accessibility A_i of every demand unit and the supply-to-demand ratio R_j of every supply site.

    ``cost`` is the (demand × supply) matrix; pairs beyond ``max_cost`` (or NaN: unreachable) are left out.
    Step weights are upper-inclusive (``access.weights.step_fn`` tests d <= k).
    """
    import pandas as pd
    from access import Access, weights

    demand = np.asarray(demand, dtype=float)
    supply = np.asarray(supply, dtype=float)
    if cost.shape != (len(demand), len(supply)):
        raise AnalysisError(f"The cost matrix must be {len(demand)} × {len(supply)} (demand × supply).")
    if (demand < 0).any() or (supply < 0).any() or not (np.isfinite(demand).all() and np.isfinite(supply).all()):
        raise AnalysisError("Demand weights and supply capacities must be finite and non-negative.")
    if not max_cost > 0:
        raise AnalysisError("max_cost must be positive.")
    i, j = np.nonzero(np.nan_to_num(cost, nan=np.inf) <= max_cost)
    if method == "2sfca":
        fn = None
    elif method == "e2sfca":
        steps = sorted(steps or default_steps(max_cost))
        if steps[-1][0] > max_cost:
            raise AnalysisError("Step bounds must not exceed max_cost.")
        fn = weights.step_fn(dict(steps))
    elif method == "gaussian":
        fn = gaussian_weight(max_cost)
    else:
        raise AnalysisError(f"Unknown method {method!r}.")
    # access logs every call at INFO; keep the service log readable
    logging.getLogger("access").setLevel(logging.WARNING)
    demand_df = pd.DataFrame({"d": np.arange(len(demand)), "w": demand})
    supply_df = pd.DataFrame({"s": np.arange(len(supply)), "c": supply})
    cost_df = pd.DataFrame({"o": i, "t": j, "cost": cost[i, j]})
    a = Access(demand_df=demand_df, demand_index="d", demand_value="w", supply_df=supply_df, supply_index="s",
               supply_value="c", cost_df=cost_df, cost_origin="o", cost_dest="t", cost_name="cost")
    if len(cost_df) == 0:
        return np.zeros(len(demand)), np.zeros(len(supply))
    if method == "e2sfca":
        out = a.enhanced_two_stage_fca(name="a", max_cost=max_cost, weight_fn=fn)
    else:
        out = a.two_stage_fca(name="a", max_cost=max_cost, weight_fn=fn)
    acc = out["a_c"].reindex(range(len(demand))).fillna(0.0).to_numpy(dtype=float)
    # R_j (step 1) reported beside A_i: the same weights, computed on the sparse pairs
    wij = np.ones(len(i)) if fn is None else np.array([float(fn(v)) for v in cost[i, j]])
    load = np.bincount(j, weights=demand[i] * wij, minlength=len(supply))
    ratio = np.divide(supply, load, out=np.zeros(len(supply)), where=load > 0)
    # A site whose catchment holds no demand serves no one (R_j = 0); access divides by that zero and gives the
    # units of zero demand around it an infinite A_i. Those units get the sum over the sites that do serve someone.
    bad = ~np.isfinite(acc)
    if bad.any():
        acc[bad] = np.bincount(i, weights=wij * ratio[j], minlength=len(demand))[bad]
    return acc, ratio
