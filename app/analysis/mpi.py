"""The Alkire–Foster multidimensional poverty measure (docs/methodology.md#mpi).

Hand-written on numpy: the AF method is a weighted sum, a cut-off and means; the Python packages that
compute it are unmaintained or tied to one survey format. Checked in ``tests/test_stage23.py`` against
hand-computed cases and a loop-based second implementation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from app.analysis.spatial import AnalysisError

EPS = 1e-9  # c_i >= k − 1e-9: 1/6 + 3/18 is 0.33333333333333331 < 1/3 in floating point


@dataclass(frozen=True)
class Indicator:
    code: str
    dimension: str
    weight: float
    description: str = ""


# The global MPI (OPHI/UNDP): 3 dimensions, 10 indicators (docs/methodology.md#mpi)
GLOBAL_MPI: tuple[Indicator, ...] = (
    Indicator("nutrition", "health", 1 / 6, "any undernourished member"),
    Indicator("child_mortality", "health", 1 / 6, "a child under 18 died in the last 5 years"),
    Indicator("years_of_schooling", "education", 1 / 6, "no eligible member has 6 years of schooling"),
    Indicator("school_attendance", "education", 1 / 6, "a school-age child is not attending school"),
    Indicator("cooking_fuel", "living standards", 1 / 18, "cooks with solid fuel"),
    Indicator("sanitation", "living standards", 1 / 18, "unimproved or shared sanitation"),
    Indicator("drinking_water", "living standards", 1 / 18, "unsafe water or a round trip of 30 minutes or more"),
    Indicator("electricity", "living standards", 1 / 18, "no electricity"),
    Indicator("housing", "living standards", 1 / 18, "inadequate floor, roof or walls"),
    Indicator("assets", "living standards", 1 / 18, "at most one small asset and no car"),
)


def reweight(indicators: tuple[Indicator, ...], available: set[str]) -> tuple[dict[str, float], list[str]]:
    """Weights when some indicators have no data at all: a missing indicator's weight goes to the other
    indicators of its dimension in proportion to their weights (the global MPI's practice). A dimension with no
    indicator left is dropped and the remaining weights rescaled to sum to 1."""
    weights: dict[str, float] = {}
    notes: list[str] = []
    dims: dict[str, list[Indicator]] = {}
    for ind in indicators:
        dims.setdefault(ind.dimension, []).append(ind)
    for dim, inds in dims.items():
        have = [i for i in inds if i.code in available]
        total = sum(i.weight for i in inds)
        if not have:
            notes.append(f"dimension '{dim}' has no indicator with data and is left out")
            continue
        share = sum(i.weight for i in have)
        for i in have:
            weights[i.code] = i.weight * total / share
        missing = [i.code for i in inds if i.code not in available]
        if missing:
            notes.append(f"no data for {', '.join(missing)}: weight moved to {', '.join(i.code for i in have)}")
    s = sum(weights.values())
    if s <= 0:
        raise AnalysisError("No MPI indicator has data.")
    return {k: v / s for k, v in weights.items()}, notes


@dataclass
class AFResult:
    score: np.ndarray  # c_i per household
    poor: np.ndarray
    groups: dict[str, dict[str, float | int | None | dict[str, float | None]]] = field(default_factory=dict)
    overall: dict[str, float | int | None | dict[str, float | None]] = field(default_factory=dict)


def _summary(g: np.ndarray, w: np.ndarray, codes: list[str], size: np.ndarray, score: np.ndarray,
             poor: np.ndarray, k: float, vulnerable_from: float, severe_from: float) -> dict:
    n = float(size.sum())
    q = float(size[poor].sum())
    if n <= 0:
        return {"households": int(len(size)), "persons": 0, "poor_persons": 0, "H": None, "A": None, "MPI": None,
                "vulnerable": None, "severe": None, "censored_headcount": {c: None for c in codes},
                "contribution": {c: None for c in codes}}
    censored = np.where(poor, score, 0.0)
    mpi = float((size * censored).sum() / n)
    ch = (size[:, None] * g * poor[:, None]).sum(axis=0) / n
    vulnerable = (score >= vulnerable_from - EPS) & ~poor
    severe = score >= severe_from - EPS
    return {
        "households": int(len(size)), "persons": n, "poor_persons": q,
        "H": q / n, "A": float((size * censored).sum() / q) if q > 0 else None, "MPI": mpi,
        "vulnerable": float(size[vulnerable].sum() / n), "severe": float(size[severe].sum() / n),
        "censored_headcount": {c: float(v) for c, v in zip(codes, ch, strict=True)},
        "contribution": {c: (float(wj * v / mpi) if mpi > 0 else None)
                         for c, wj, v in zip(codes, w, ch, strict=True)},
    }


def alkire_foster(g: np.ndarray, weights: np.ndarray, size: np.ndarray, k: float, groups: list[str] | None = None,
                  codes: list[str] | None = None, vulnerable_from: float = 0.2,
                  severe_from: float = 0.5) -> AFResult:
    """AF over households (rows) × indicators (0/1 deprivations); each household counts ``size`` persons.

    c_i = Σ_j w_j g_ij; poor ⇔ c_i ≥ k − 1e-9; H = q/n; A = Σ c_i(k) / q; MPI = H·A; CH_j = Σ g_ij [poor_i] / n;
    contribution_j = w_j CH_j / MPI; vulnerable: vulnerable_from ≤ c_i < k; severe: c_i ≥ severe_from.
    """
    g = np.asarray(g, dtype=float)
    w = np.asarray(weights, dtype=float)
    size = np.asarray(size, dtype=float)
    codes = codes or [f"i{j}" for j in range(g.shape[1])]
    if g.size and not np.isin(g, (0.0, 1.0)).all():
        raise AnalysisError("Deprivations must be 0 or 1.")
    if (size < 0).any():
        raise AnalysisError("Household sizes must not be negative.")
    score = g @ w if g.size else np.zeros(len(size))
    poor = score >= k - EPS
    out = AFResult(score, poor)
    out.overall = _summary(g, w, codes, size, score, poor, k, vulnerable_from, severe_from)
    if groups is not None:
        labels = np.asarray(groups, dtype=object)
        for key in sorted(set(groups)):
            m = labels == key
            out.groups[key] = _summary(g[m], w, codes, size[m], score[m], poor[m], k, vulnerable_from, severe_from)
    return out
