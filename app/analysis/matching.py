"""Stage 2: households (or villages) matched to projects as a capacitated min-cost flow (docs/methodology.md#matching).

Network: source → unit i (capacity d_i, its demand) → project j (cost c_ij) → sink (capacity = slots of j),
and i → sink directly at the unmet penalty M. Unit i may use project j only when their needs intersect and
d_ij ≤ the project's service radius. Solved by OR-Tools' SimpleMinCostFlow (network simplex, integer costs);
``tests/test_stage23.py`` checks it against networkx.min_cost_flow and hand-solved cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from app.analysis.spatial import AnalysisError, chord_to_km, km_to_chord, unit_sphere

SCALE = 1000  # costs are km (× priority) in integer thousandths


@dataclass
class MatchResult:
    unit: np.ndarray  # per assignment: unit index, project index, flow, distance km, cost
    project: np.ndarray
    flow: np.ndarray
    distance_km: np.ndarray
    cost: np.ndarray
    unmet: np.ndarray  # per unit
    used: np.ndarray  # per project
    compatible: np.ndarray  # per unit: has at least one compatible project in reach
    total_cost: float
    status: str
    pairs: int


def need_masks(needs: list[list[str]], codes: dict[str, int]) -> np.ndarray:
    out = np.zeros(len(needs), dtype=np.int64)
    for i, ns in enumerate(needs):
        for n in ns:
            bit = codes.get(n)
            if bit is not None:
                out[i] |= 1 << bit
    return out


def candidate_pairs(unit_lonlat: np.ndarray, project_lonlat: np.ndarray, radius_km: np.ndarray,
                    unit_mask: np.ndarray, project_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit, project, great-circle km) of every compatible pair within the project's radius."""
    if not len(unit_lonlat) or not len(project_lonlat):
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    uxyz, pxyz = unit_sphere(unit_lonlat), unit_sphere(project_lonlat)
    hits = cKDTree(uxyz).query_ball_point(pxyz, r=km_to_chord(radius_km) * (1 + 1e-9))
    us, ps = [], []
    for j, idx in enumerate(hits):
        if not idx:
            continue
        idx = np.asarray(idx, dtype=int)
        idx = idx[(unit_mask[idx] & project_mask[j]) != 0]
        us.append(idx)
        ps.append(np.full(len(idx), j))
    if not us:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    u = np.concatenate(us)
    p = np.concatenate(ps)
    d = chord_to_km(np.linalg.norm(uxyz[u] - pxyz[p], axis=1))
    keep = d <= radius_km[p] + 1e-9
    return u[keep], p[keep], d[keep]


def pairs_from_matrix(cost: np.ndarray, max_cost: float, unit_mask: np.ndarray, project_mask: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit, project, cost) of every compatible pair whose cost (e.g. network minutes; NaN: unreachable) is at
    most ``max_cost``."""
    c = np.nan_to_num(np.asarray(cost, dtype=float), nan=np.inf)
    ok = (c <= max_cost) & ((unit_mask[:, None] & project_mask[None, :]) != 0)
    u, p = np.nonzero(ok)
    return u, p, c[u, p]


def min_cost_match(demand: np.ndarray, capacity: np.ndarray, u: np.ndarray, p: np.ndarray, dist_km: np.ndarray,
                   cost_factor: np.ndarray, penalty: np.ndarray) -> MatchResult:
    """Solve the flow for the given compatible pairs. ``cost_factor`` (per unit) multiplies distances
    (priority); ``penalty`` (per unit) is the cost of one unit of unmet demand."""
    from ortools.graph.python import min_cost_flow

    demand = np.asarray(demand, dtype=np.int64)
    capacity = np.asarray(capacity, dtype=np.int64)
    m, n = len(demand), len(capacity)
    if (demand < 0).any() or (capacity < 0).any():
        raise AnalysisError("Demands and capacities must not be negative.")
    src, sink = m + n, m + n + 1
    arc_cost = np.rint(dist_km * cost_factor[u] * SCALE).astype(np.int64)
    pen = np.rint(penalty * SCALE).astype(np.int64)
    if len(arc_cost) and arc_cost.max() >= pen.min(initial=np.iinfo(np.int64).max):
        raise AnalysisError("The unmet-demand penalty must exceed every assignment cost; raise 'penalty'.")
    tails = np.concatenate([np.full(m, src), u, np.arange(m, m + n), np.arange(m)])
    heads = np.concatenate([np.arange(m), m + p, np.full(n, sink), np.full(m, sink)])
    caps = np.concatenate([demand, demand[u], capacity, demand])
    costs = np.concatenate([np.zeros(m, np.int64), arc_cost, np.zeros(n, np.int64), pen])
    smcf = min_cost_flow.SimpleMinCostFlow()
    arcs = smcf.add_arcs_with_capacity_and_unit_cost(tails.astype(np.int32), heads.astype(np.int32),
                                                     caps.astype(np.int64), costs.astype(np.int64))
    total = int(demand.sum())
    supplies = np.zeros(m + n + 2, dtype=np.int64)
    supplies[src], supplies[sink] = total, -total
    smcf.set_nodes_supplies(np.arange(m + n + 2, dtype=np.int32), supplies)
    status = smcf.solve()
    if status != smcf.OPTIMAL:
        raise AnalysisError(f"The min-cost flow solver ended with status {status}.")
    flows = smcf.flows(arcs)
    k = len(u)
    f_pairs = flows[m:m + k]
    used_arcs = f_pairs > 0
    unmet = flows[m + k + n:]
    used = np.zeros(n, dtype=np.int64)
    np.add.at(used, p[used_arcs], f_pairs[used_arcs])
    compatible = np.zeros(m, dtype=bool)
    compatible[u] = True
    return MatchResult(u[used_arcs], p[used_arcs], f_pairs[used_arcs], dist_km[used_arcs],
                       arc_cost[used_arcs] / SCALE, unmet, used, compatible, smcf.optimal_cost() / SCALE,
                       "optimal", k)
