"""Coverage gaps (docs/methodology.md#coverage-gaps): demand units whose nearest supply of a type lies beyond a
threshold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from app.analysis.spatial import AnalysisError, chord_to_km, unit_sphere


@dataclass
class GapResult:
    nearest: np.ndarray  # distance (or cost) to the nearest supply of the type; inf when there is none
    nearest_index: np.ndarray  # index into the supply of the type; -1 when there is none
    in_gap: np.ndarray
    affected: float
    total: float

    @property
    def share(self) -> float:
        return self.affected / self.total if self.total else 0.0


def nearest_km(demand_lonlat: np.ndarray, supply_lonlat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Great-circle distance (km) from each demand point to its nearest supply point, with the index.

    A KD-tree on unit-sphere coordinates (scipy ``cKDTree``): the nearest chord is the nearest arc.
    """
    if len(supply_lonlat) == 0:
        return np.full(len(demand_lonlat), np.inf), np.full(len(demand_lonlat), -1)
    chord, idx = cKDTree(unit_sphere(supply_lonlat)).query(unit_sphere(demand_lonlat), k=1)
    return chord_to_km(chord), np.asarray(idx)


def coverage_gap(nearest: np.ndarray, nearest_index: np.ndarray, weight: np.ndarray, threshold: float) -> GapResult:
    """Units with nearest > threshold are in the gap; ``affected`` sums their weight (e.g. the poor)."""
    if not threshold > 0:
        raise AnalysisError("The threshold must be positive.")
    weight = np.asarray(weight, dtype=float)
    if (weight < 0).any() or not np.isfinite(weight).all():
        raise AnalysisError("Demand weights must be finite and non-negative.")
    in_gap = nearest > threshold
    return GapResult(nearest, nearest_index, in_gap, float(weight[in_gap].sum()), float(weight.sum()))


def nearest_from_matrix(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest supply by a given (demand × supply) cost matrix; NaN means unreachable."""
    if cost.shape[1] == 0:
        return np.full(cost.shape[0], np.inf), np.full(cost.shape[0], -1)
    c = np.where(np.isnan(cost), np.inf, cost)
    idx = np.argmin(c, axis=1)
    best = c[np.arange(len(c)), idx]
    return best, np.where(np.isinf(best), -1, idx)
