"""Spatial autocorrelation (docs/methodology.md#global-moran) with esda: global and local Moran, Geary, Getis-Ord Gi*,
bivariate Moran and the Assunção–Reis empirical-Bayes rate."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from app.analysis.spatial import AnalysisError

QUADRANTS = {1: "HH", 2: "LH", 3: "LL", 4: "HL"}  # PySAL's codes (geoda_quads=False)
# Gi* classes by the normal z-score (two-sided 99/95/90 %): the ArcGIS Hot Spot Analysis convention.
GI_LEVELS = ((2.5758293035489, 99), (1.9599639845401, 95), (1.6448536269515, 90))


def _check(y: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    if not np.isfinite(y).all():
        raise AnalysisError(f"{name} has missing or non-finite values.")
    if np.ptp(y) == 0:
        raise AnalysisError(f"{name} is constant: spatial autocorrelation is undefined.")
    return y


def eb_rate(events: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Assunção–Reis empirical-Bayes standardised rate (what ``esda.Moran_Rate(adjusted=True)`` tests)."""
    from esda.smoothing import assuncao_rate

    e = np.asarray(events, dtype=float)
    b = np.asarray(base, dtype=float)
    if (b <= 0).any() or not np.isfinite(b).all():
        raise AnalysisError("The rate base must be positive for every feature.")
    if (e < 0).any() or not np.isfinite(e).all():
        raise AnalysisError("Event counts must be finite and non-negative.")
    if e.sum() == 0:  # the overall rate is 0 and the standardisation divides by it
        raise AnalysisError("There are no events: the rate is zero everywhere.")
    return np.asarray(assuncao_rate(e, b), dtype=float).ravel()


@dataclass
class GlobalResult:
    moran_i: float
    expected_i: float
    z_norm: float
    p_norm: float
    p_sim: float | None
    geary_c: float
    geary_p_sim: float | None


def global_autocorrelation(y: np.ndarray, w: object, permutations: int, seed: int) -> GlobalResult:
    """Global Moran's I (row-standardised weights) and Geary's C; permutation p-values reproducible by seed."""
    import esda

    y = _check(y, "The variable")
    w.transform = "r"  # type: ignore[attr-defined]
    np.random.seed(seed)  # esda.Moran and Geary draw from numpy's global generator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = esda.Moran(y, w, permutations=permutations)
        g = esda.Geary(y, w, permutations=permutations)
    return GlobalResult(float(m.I), float(m.EI), float(m.z_norm), float(m.p_norm),
                        float(m.p_sim) if permutations else None, float(g.C),
                        float(g.p_sim) if permutations else None)


@dataclass
class LocalResult:
    local_i: np.ndarray
    quadrant: list[str]
    p_sim: np.ndarray
    significant: np.ndarray
    lag: np.ndarray


def significance(p: np.ndarray, alpha: float, fdr: bool) -> np.ndarray:
    import esda

    if fdr:
        bound = float(esda.fdr(p, alpha))
        return p <= bound
    return p < alpha


def local_moran(y: np.ndarray, w: object, permutations: int, seed: int, alpha: float = 0.05,
                fdr: bool = False) -> LocalResult:
    """LISA (``esda.Moran_Local``): I_i, PySAL quadrant (HH, LH, LL, HL), pseudo p-value, significance."""
    import esda

    y = _check(y, "The variable")
    w.transform = "r"  # type: ignore[attr-defined]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = esda.Moran_Local(y, w, permutations=max(permutations, 1), seed=seed, n_jobs=1)
    p = np.asarray(lm.p_sim, dtype=float)
    z = y - y.mean()
    return LocalResult(np.asarray(lm.Is, dtype=float), [QUADRANTS[int(q)] for q in lm.q], p,
                       significance(p, alpha, fdr), np.asarray(w.sparse @ z + y.mean()))  # type: ignore[attr-defined]


@dataclass
class HotspotResult:
    gi_z: np.ndarray
    p_norm: np.ndarray
    p_sim: np.ndarray
    classes: list[str]


def gi_class(z: float) -> str:
    for bound, level in GI_LEVELS:
        if z >= bound:
            return f"hot-{level}"
        if z <= -bound:
            return f"cold-{level}"
    return "not-significant"


def getis_ord(y: np.ndarray, w: object, permutations: int, seed: int) -> HotspotResult:
    """Getis-Ord Gi* (``esda.G_Local`` with binary weights and the unit itself included)."""
    import esda

    y = _check(y, "The variable")
    if (y < 0).any():
        raise AnalysisError("Getis-Ord Gi* needs a non-negative variable.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = esda.G_Local(y, w, transform="B", star=True, permutations=max(permutations, 1), seed=seed, n_jobs=1)
    z = np.asarray(g.Zs, dtype=float)
    return HotspotResult(z, _two_sided(z), np.asarray(g.p_sim, dtype=float), [gi_class(v) for v in z])


def _two_sided(z: np.ndarray) -> np.ndarray:
    from scipy.stats import norm

    return 2 * norm.sf(np.abs(z))


@dataclass
class BivariateResult:
    i_b: float
    p_sim: float
    z_sim: float
    local_i: np.ndarray
    quadrant: list[str]
    p_sim_local: np.ndarray
    significant: np.ndarray


def bivariate(x: np.ndarray, y: np.ndarray, w: object, permutations: int, seed: int, alpha: float = 0.05,
              fdr: bool = False) -> BivariateResult:
    """Bivariate Moran (``esda.Moran_BV``, ``esda.Moran_Local_BV``): x against the spatial lag of y."""
    import esda

    x = _check(x, "The first variable")
    y = _check(y, "The second variable")
    w.transform = "r"  # type: ignore[attr-defined]
    np.random.seed(seed)  # Moran_BV permutes with numpy's global generator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = esda.Moran_BV(x, y, w, permutations=max(permutations, 1))
        lo = esda.Moran_Local_BV(x, y, w, permutations=max(permutations, 1), seed=seed, n_jobs=1)
    p = np.asarray(lo.p_sim, dtype=float)
    return BivariateResult(float(g.I), float(g.p_sim), float(g.z_sim), np.asarray(lo.Is, dtype=float),
                           [QUADRANTS[int(q)] for q in lo.q], p, significance(p, alpha, fdr))
