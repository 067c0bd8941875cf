"""Stage 3: entropy weights and the coupling coordination degree model (docs/methodology.md#coupling).

Written with numpy rather than taken from a library: no maintained PyPI package implements the entropy-weight
method and the coupling coordination degree as docs/methodology.md#coupling defines them (min–max normalisation
without the +0.0001 shift, 0·ln 0 := 0, a constant column weighted 0, the classic C), and the formulas are a few lines.
``tests/test_stage23.py`` checks them against the published reference values and a second, loop-based
implementation.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

from app.analysis.spatial import AnalysisError

# D bands: (lower, upper] per class; D = 0 falls in class 1 (地理学报 2021 76(4) Table 1; docs/methodology.md#coupling)
D_BANDS: tuple[tuple[str, str], ...] = (
    ("极度失调", "extreme imbalance"),
    ("严重失调", "serious imbalance"),
    ("中度失调", "moderate imbalance"),
    ("轻度失调", "mild imbalance"),
    ("濒临失调", "verge of imbalance"),
    ("勉强协调", "barely coordinated"),
    ("初级协调", "primary coordination"),
    ("中级协调", "intermediate coordination"),
    ("良好协调", "good coordination"),
    ("优质协调", "quality coordination"),
)
D_CUTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
C_BANDS: tuple[tuple[str, str], ...] = (
    ("低水平耦合", "low-level coupling"),
    ("拮抗", "antagonism"),
    ("磨合", "running-in"),
    ("高水平耦合", "high-level coupling"),
)
C_CUTS = (0.3, 0.5, 0.8)
LAG_TYPES = ("synchronous", "production-lagging", "living-lagging")


def d_band(d: float) -> int:
    """Class 1–10 of a coordination degree. ``round(D, 12)`` first: 0.7 must stay in (0.6, 0.7]
    (a naive ``ceil(10·D)`` puts it in class 8 because 0.7·10 = 7.000000000000001)."""
    return bisect_left(D_CUTS, round(float(d), 12)) + 1


def c_band(c: float) -> int:
    """Class 1–4 of a coupling degree: (0, 0.3], (0.3, 0.5], (0.5, 0.8], (0.8, 1]; C = 0 is class 1."""
    return bisect_left(C_CUTS, round(float(c), 12)) + 1


def standard_scores(u: np.ndarray, blocks: list[np.ndarray]) -> np.ndarray:
    """Each column as z-scores within each block of rows (population standard deviation; a constant column → 0).

    The relative lag basis compares a unit's standing in each subsystem among its peers: min–max scales of
    different subsystems are not comparable when one is skewed (e.g. living deficits concentrated in a few
    villages put most villages' U1 near 1, so every village looks production-lagging)."""
    z = np.zeros_like(u, dtype=float)
    for b in blocks:
        x = u[b]
        sd = x.std(axis=0)
        z[b] = np.where(sd > 0, (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0), 0.0)
    return z


def lag_type(u1: float, u2: float, tol: float) -> str:
    """U1 = living security, U2 = production capacity (docs/methodology.md#coupling, this spec's convention)."""
    if round(abs(u1 - u2), 12) <= tol:
        return "synchronous"
    return "production-lagging" if u2 < u1 else "living-lagging"


def normalise(x: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Min–max normalisation per column; negative indicators reversed; a constant column becomes all 0."""
    x = np.asarray(x, dtype=float)
    lo, hi = x.min(axis=0), x.max(axis=0)
    span = hi - lo
    out = np.zeros_like(x)
    ok = span > 0
    pos = ok & positive
    neg = ok & ~positive
    out[:, pos] = (x[:, pos] - lo[pos]) / span[pos]
    out[:, neg] = (hi[neg] - x[:, neg]) / span[neg]
    return out


@dataclass
class EntropyWeights:
    weights: np.ndarray
    entropy: np.ndarray
    divergence: np.ndarray
    note: str | None = None


def entropy_weights(xn: np.ndarray) -> EntropyWeights:
    """Entropy weights of normalised indicators (m units × n indicators), docs/methodology.md#entropy.

    p_ij = x'_ij / Σ_i x'_ij; e_j = −(1/ln m) Σ_i p_ij ln p_ij with 0·ln 0 = 0; d_j = 1 − e_j; w_j = d_j / Σ d_j.
    A column that sums to 0 (constant before normalisation) carries no information: e_j = 1, weight 0.
    """
    m, n = xn.shape
    if m < 2:
        raise AnalysisError("Entropy weights need at least two units (ln m = 0); give the weights instead.")
    col = xn.sum(axis=0)
    p = np.divide(xn, col, out=np.zeros_like(xn), where=col > 0)
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    e = -plogp.sum(axis=0) / math.log(m)
    e[col <= 0] = 1.0
    d = 1.0 - e
    total = d.sum()
    if total <= 0:  # every indicator constant: all x' = 0, so U = 0 whatever the weights
        return EntropyWeights(np.full(n, 1.0 / n), e, d, "every indicator is constant: equal weights, U = 0")
    return EntropyWeights(d / total, e, d)


def coupling(u: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """C, T and D for m units × n subsystems (docs/methodology.md#coupling).

    C = n·[Π U_i / (Σ U_i)^n]^(1/n) (2√(U1U2)/(U1+U2) for n = 2; C = 0 when ΣU = 0), T = Σ α_i U_i, D = √(C·T).
    """
    u = np.asarray(u, dtype=float)
    n = u.shape[1]
    s = u.sum(axis=1)
    ratio = np.divide(np.prod(u, axis=1), s ** n, out=np.zeros(len(u)), where=s > 0)
    c = np.minimum(n * ratio ** (1.0 / n), 1.0)  # rounding may exceed 1 by an ulp when all U are equal
    t = u @ np.asarray(alpha, dtype=float)
    d = np.sqrt(np.maximum(c * t, 0.0))
    return c, t, d
