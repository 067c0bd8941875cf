"""Location-allocation (docs/methodology.md#location-allocation): LSCP, MCLP, p-median and p-center with PuLP
and its bundled CBC.

The models follow spopt's formulations (``spopt.locate``), and the tests check them against spopt on
small instances. They are built here directly with PuLP because spopt builds the dense n × m model in
Python loops (14 s for MCLP at 5,000 × 500 on this machine) and p-median/p-center over every
demand–candidate pair stall beyond ~10^5 variables. The reductions used are exact:

* MCLP/LSCP: only coverage pairs (d_ij ≤ r) become terms; demand rows with the same coverage set are
  merged (weights summed); demand already covered by existing sites, or coverable by no site, leaves
  the model. Coverage variables z_i are continuous: with binary y they are 0/1 at the optimum.
* p-median: a heuristic with a lower bound. Sites come from greedy addition and Teitz–Bart vertex
  substitution (Whitaker's fast interchange, vectorised); the bound from the Lagrangian relaxation of
  the assignment constraints (Beasley 1993). Their distance is the proven gap. Small instances are then
  solved exactly with CBC. (spopt's KNearestPMedian needs GeoDataFrames, not a cost matrix, and its
  near–far bound is weak when p is small against the candidates: at 5,000 × 500, p = 20, k = 12 it
  left an 11 % gap after 180 s.)
* p-center: the optimum is one of the distinct costs; a bisection over them asks CBC whether p sites
  cover every demand within that cost (Daskin 1995, §4.3).

CBC's own bound is read from its log: PuLP reports "Optimal" after a time limit too, so ``status`` is
taken from ``problem.sol_status`` and the gap from the bound.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from app.analysis.spatial import AnalysisError

Model = Literal["lscp", "mclp", "pmedian", "pcenter"]


@dataclass
class Solve:
    status: Literal["optimal", "feasible", "infeasible", "not-solved"]
    objective: float | None
    bound: float | None
    seconds: float


@dataclass
class LocationResult:
    model: str
    selected: list[int]  # candidate indices open (existing ones included)
    assignment: np.ndarray  # per demand: the candidate serving it, or -1
    cost_to_site: np.ndarray  # per demand: cost to the assigned site (NaN when unassigned)
    objective: float
    lower_bound: float | None
    upper_bound: float | None
    status: Literal["optimal", "feasible"]
    mip_gap: float | None
    coverage_weighted_pct: float | None
    covered: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    solver_seconds: float = 0.0


_LOG_VALUE = re.compile(r"^(Objective value|Lower bound|Upper bound):\s+(-?[\d.eE+]+)", re.M)


def solve_cbc(problem: object, time_limit: float, threads: int = 2, gap_rel: float | None = None) -> Solve:
    """Solve with PuLP's bundled CBC; status from ``sol_status`` and the best bound from CBC's log."""
    import pulp

    t0 = time.perf_counter()
    fd, log = tempfile.mkstemp(prefix="cbc-", suffix=".log")
    os.close(fd)
    try:
        kwargs: dict = {"msg": False, "timeLimit": max(1, math.ceil(time_limit)), "threads": threads, "logPath": log}
        if gap_rel:
            kwargs["gapRel"] = gap_rel
        with warnings.catch_warnings():  # PuLP 3.3 flags its bundled CBC for 4.0; pinned < 4 (pyproject)
            warnings.simplefilter("ignore", DeprecationWarning)
            problem.solve(pulp.PULP_CBC_CMD(**kwargs))  # type: ignore[attr-defined]
        with open(log, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    finally:
        os.unlink(log)
    seconds = time.perf_counter() - t0
    values = dict(_LOG_VALUE.findall(text))
    sol = problem.sol_status  # type: ignore[attr-defined]
    if sol not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        infeasible = sol == pulp.LpSolutionInfeasible or problem.status == pulp.LpStatusInfeasible  # type: ignore[attr-defined]
        return Solve("infeasible" if infeasible else "not-solved", None, None, seconds)
    obj = float(pulp.value(problem.objective) or 0.0)  # type: ignore[attr-defined]
    stopped = "Stopped on" in text
    tolerance = "within gap tolerance" in text
    if sol == pulp.LpSolutionOptimal and not stopped and not tolerance:
        return Solve("optimal", obj, obj, seconds)
    maximize = problem.sense == pulp.LpMaximize  # type: ignore[attr-defined]
    key = "Upper bound" if maximize else "Lower bound"
    bound: float | None = float(values[key]) if key in values else None
    if bound is None and tolerance and gap_rel:  # CBC stopped at gapRel without printing its bound
        bound = obj * (1 + gap_rel) if maximize else obj * (1 - gap_rel)
    return Solve("optimal" if bound == obj else "feasible", obj, bound, seconds)


def _relative_gap(upper: float, lower: float) -> float:
    if upper == lower:
        return 0.0
    return abs(upper - lower) / max(abs(upper), 1e-12)


def _check_inputs(cost: np.ndarray, weights: np.ndarray, existing: list[int]) -> None:
    n, m = cost.shape
    if n == 0 or m == 0:
        raise AnalysisError("Location-allocation needs at least one demand unit and one candidate site.")
    if len(weights) != n:
        raise AnalysisError("One demand weight per demand unit is needed.")
    if (weights < 0).any() or not np.isfinite(weights).all():
        raise AnalysisError("Demand weights must be finite and non-negative.")
    if (np.nan_to_num(cost, nan=0.0) < 0).any():
        raise AnalysisError("Costs must be non-negative.")
    bad = [j for j in existing if not 0 <= j < m]
    if bad:
        raise AnalysisError(f"Existing sites {bad} are not among the candidates.")


def _assign_nearest(cost: np.ndarray, open_sites: list[int],
                    radius: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    if not open_sites:
        return np.full(len(cost), -1), np.full(len(cost), np.nan)
    sub = np.where(np.isnan(cost[:, open_sites]), np.inf, cost[:, open_sites])
    k = np.argmin(sub, axis=1)
    best = sub[np.arange(len(sub)), k]
    ok = np.isfinite(best) if radius is None else best <= radius
    site = np.where(ok, np.asarray(open_sites)[k], -1)
    return site, np.where(ok, best, np.nan)


def _weighted_cover(cost: np.ndarray, weights: np.ndarray, open_sites: list[int],
                    radius: float) -> tuple[np.ndarray, float]:
    site, _ = _assign_nearest(cost, open_sites, radius)
    covered = site >= 0
    total = float(weights.sum())
    return covered, (100.0 * float(weights[covered].sum()) / total) if total else 0.0


def _merge_rows(cover: list[np.ndarray], weights: np.ndarray) -> tuple[list[tuple[int, ...]], np.ndarray]:
    groups: dict[tuple[int, ...], float] = {}
    for row, w in zip(cover, weights, strict=True):
        key = tuple(row.tolist())
        groups[key] = groups.get(key, 0.0) + float(w)
    return list(groups), np.fromiter(groups.values(), dtype=float, count=len(groups))


def _coverage_sets(cost: np.ndarray, radius: float) -> list[np.ndarray]:
    within = np.nan_to_num(cost, nan=np.inf) <= radius
    return [np.flatnonzero(r) for r in within]


def _open_rows(cost: np.ndarray, weights: np.ndarray, radius: float,
               fixed: set[int]) -> tuple[list[np.ndarray], list[int], list[tuple[int, ...]], np.ndarray]:
    """Coverage sets; the demand still to cover (coverable and not covered by a fixed site), merged into one
    row per distinct coverage set with the weights summed."""
    sets = _coverage_sets(cost, radius)
    free = [i for i in range(len(sets)) if len(sets[i]) and not fixed.intersection(sets[i].tolist())]
    keys, w = _merge_rows([sets[i] for i in free], weights[free])
    return sets, free, keys, w


def _site_vars(prob: object, m: int, fixed: set[int]) -> list[object]:
    """One binary variable per candidate site; fixed (existing) sites are open."""
    y = [prob.add_variable(f"y{j}", cat="Binary") for j in range(m)]  # type: ignore[attr-defined]
    for j in fixed:
        prob += y[j] == 1  # type: ignore[operator]
    return y


def _cover_solution(s: Solve, y: list[object], cost: np.ndarray, weights: np.ndarray, radius: float, model: str,
                    time_limit: float) -> tuple[list[int], np.ndarray, float, np.ndarray, np.ndarray]:
    """Open sites of a solved coverage model, the demand they cover within the radius and its assignment."""
    if s.status in ("infeasible", "not-solved"):
        raise AnalysisError(f"{model}: no solution found within {time_limit:g} s.")
    chosen = sorted(j for j, v in enumerate(y) if (v.value() or 0) > 0.5)  # type: ignore[attr-defined]
    covered, pct = _weighted_cover(cost, weights, chosen, radius)
    site, dist = _assign_nearest(cost, chosen, radius)
    return chosen, covered, pct, site, dist


def mclp(cost: np.ndarray, weights: np.ndarray, p: int, radius: float, existing: list[int], time_limit: float,
         threads: int = 2) -> LocationResult:
    import pulp

    _check_inputs(cost, weights, existing)
    n, m = cost.shape
    if not len(set(existing)) <= p <= m:
        raise AnalysisError(f"p must be between the number of existing sites ({len(set(existing))}) and {m}.")
    fixed = set(existing)
    _, free, keys, w = _open_rows(cost, weights, radius, fixed)
    prob = pulp.LpProblem("mclp", pulp.LpMaximize)
    y = _site_vars(prob, m, fixed)
    z = [prob.add_variable(f"z{g}", 0, 1) for g in range(len(keys))]
    prob += pulp.LpAffineExpression([(z[g], w[g]) for g in range(len(keys))])
    for g, key in enumerate(keys):
        prob += pulp.LpAffineExpression([(y[j], 1) for j in key] + [(z[g], -1)]) >= 0
    prob += pulp.lpSum(y) == p
    s = solve_cbc(prob, time_limit, threads)
    chosen, covered, pct, site, dist = _cover_solution(s, y, cost, weights, radius, "MCLP", time_limit)
    obj = float(weights[covered].sum())
    const = obj - (s.objective or 0.0)  # weight covered by existing sites (outside the model)
    upper = None if s.bound is None else s.bound + const
    gap = None if upper is None else _relative_gap(upper, obj)
    notes = [f"{n - len(free)} demand units left the model (covered by existing sites or by none); "
             f"{len(free)} merged into {len(keys)} rows with distinct coverage sets."]
    return LocationResult("mclp", chosen, site, dist, obj, obj, upper, _status(s.status, gap), gap, pct,
                          covered, notes, s.seconds)


def _status(status: str, gap: float | None) -> Literal["optimal", "feasible"]:
    return "optimal" if status == "optimal" and (gap is None or gap <= 1e-9) else "feasible"


def lscp(cost: np.ndarray, weights: np.ndarray, radius: float, existing: list[int], time_limit: float,
         threads: int = 2) -> LocationResult:
    import pulp

    _check_inputs(cost, weights, existing)
    n, m = cost.shape
    fixed = set(existing)
    sets, _, keys, _ = _open_rows(cost, weights, radius, fixed)
    uncoverable = [i for i in range(n) if not len(sets[i])]
    prob = pulp.LpProblem("lscp", pulp.LpMinimize)
    y = _site_vars(prob, m, fixed)
    prob += pulp.lpSum(y)
    for key in keys:
        prob += pulp.LpAffineExpression([(y[j], 1) for j in key]) >= 1
    s = solve_cbc(prob, time_limit, threads)
    chosen, covered, pct, site, dist = _cover_solution(s, y, cost, weights, radius, "LSCP", time_limit)
    obj = float(len(chosen))
    lower = None if s.bound is None else float(math.ceil(s.bound - 1e-9))  # site counts are integers
    gap = None if lower is None else _relative_gap(obj, lower)
    notes = []
    if uncoverable:
        notes.append(f"{len(uncoverable)} demand units have no candidate within the service radius and stay "
                     "uncovered.")
    return LocationResult("lscp", chosen, site, dist, obj, lower, obj, _status(s.status, gap), gap, pct, covered,
                          notes, s.seconds)


def _interchange(c: np.ndarray, a: np.ndarray, sites: list[int], fixed: set[int]) -> tuple[float, list[int]]:
    """Teitz–Bart vertex substitution with Whitaker's fast interchange, vectorised over every
    (insert, remove) pair per sweep; the best improving swap is made until none improves."""
    m = c.shape[1]
    s = list(sites)
    while True:
        sub = c[:, s]
        order = np.argsort(sub, axis=1)[:, :2]
        near = np.asarray(s)[order[:, 0]]
        d1 = sub[np.arange(len(c)), order[:, 0]]
        d2 = sub[np.arange(len(c)), order[:, 1]] if len(s) > 1 else np.full(len(c), np.inf)
        cost = float((a * d1).sum())
        m1 = np.minimum(d1[:, None], c)  # nearest after inserting j, if nothing is removed
        base = a @ m1  # (m,)
        # loss of removing site r: demand served by r falls back to min(d2, c_ij) instead of min(d1, c_ij)
        extra = a[:, None] * (np.minimum(d2[:, None], c) - m1)
        pos = {j: k for k, j in enumerate(s)}
        group = np.array([pos[j] for j in near])
        loss = np.zeros((len(s), m))
        np.add.at(loss, group, extra)
        total = base[None, :] + loss  # cost after swapping remove r (row) for insert j (column)
        total[:, s] = np.inf
        for j in fixed:
            total[pos[j], :] = np.inf
        r, j = np.unravel_index(np.argmin(total), total.shape)
        if not total[r, j] < cost * (1 - 1e-12):
            return cost, sorted(s)
        s[r] = int(j)


def _lagrangian_bound(c: np.ndarray, a: np.ndarray, p: int, fixed: set[int], upper: float, iterations: int,
                      deadline: float) -> tuple[float, list[list[int]]]:
    """Lagrangian relaxation of the assignment constraints (Beasley 1993) by subgradient optimisation:
    L(λ) = Σλ_i + min_{|S|=p} Σ_{j∈S} Σ_i min(0, a_i d_ij − λ_i) is a lower bound of the p-median."""
    cost = a[:, None] * c
    lam = np.sort(cost, axis=1)[:, min(1, c.shape[1] - 1)].copy()
    best = -np.inf
    pi = 2.0
    stall = 0
    tried: list[list[int]] = []
    fixed_list = sorted(fixed)
    for it in range(iterations):
        red = np.minimum(0.0, cost - lam[:, None])
        rho = red.sum(axis=0)
        order = [j for j in np.argsort(rho, kind="stable") if j not in fixed]
        chosen = fixed_list + [int(j) for j in order[: p - len(fixed_list)]]
        value = float(lam.sum() + rho[chosen].sum())
        if not math.isfinite(best) or value > best + 1e-9 * max(1.0, abs(best)):
            best, stall = value, 0
        else:
            stall += 1
            if stall >= 20:
                pi, stall = pi / 2, 0
        if it % 25 == 0:
            tried.append(sorted(chosen))
        g = 1.0 - (red[:, chosen] < 0).sum(axis=1)
        norm = float((g * g).sum())
        if norm == 0 or pi < 1e-4 or upper - best <= 1e-9 * upper or time.perf_counter() > deadline:
            break
        lam = lam + pi * (upper - value) / norm * g
    return best, tried


def pmedian(cost: np.ndarray, weights: np.ndarray, p: int, existing: list[int], time_limit: float,
            threads: int = 2, radius: float | None = None, gap_target: float = 0.0,
            exact_limit: int = 50_000) -> LocationResult:
    """p-median: a fast-interchange heuristic for the sites and a Lagrangian lower bound for the proven gap;
    instances with at most ``exact_limit`` demand–candidate pairs are then solved exactly with CBC (the
    full formulation, as spopt's PMedian) when the bounds have not met."""
    _check_inputs(cost, weights, existing)
    n, m = cost.shape
    fixed = set(existing)
    if not len(fixed) <= p <= m or p < 1:
        raise AnalysisError(f"p must be between max(1, existing sites = {len(fixed)}) and {m}.")
    c = np.where(np.isnan(cost), np.inf, cost)
    if np.isinf(c).all(axis=1).any():
        raise AnalysisError("Some demand units can reach no candidate site.")
    big = np.nanmax(np.where(np.isinf(c), np.nan, c)) * 10 + 1  # unreachable pairs priced out
    c = np.where(np.isinf(c), big, c)
    a = np.asarray(weights, dtype=float)
    t0 = time.perf_counter()
    deadline = t0 + time_limit
    # greedy start (add the site that lowers the cost most), then interchange
    chosen = sorted(fixed)
    cur = c[:, chosen].min(axis=1) if chosen else np.full(n, np.inf)
    while len(chosen) < p:
        gain = a @ np.minimum(cur[:, None], c) if chosen else a @ c
        gain[chosen] = np.inf
        j = int(np.argmin(gain))
        chosen.append(j)
        cur = np.minimum(cur, c[:, j])
    upper, chosen = _interchange(c, a, sorted(chosen), fixed)
    lower, tried = _lagrangian_bound(c, a, p, fixed, upper, 3000, deadline)
    for sites in tried[-4:]:  # the relaxation's site sets are good starts too
        if time.perf_counter() > deadline:
            break
        u, s2 = _interchange(c, a, sites, fixed)
        if u < upper:
            upper, chosen = u, s2
    notes = [f"greedy + fast interchange {upper:.6g}; Lagrangian lower bound {lower:.6g}"]
    status: Literal["optimal", "feasible"] = "optimal" if _relative_gap(upper, lower) <= 1e-9 else "feasible"
    if status != "optimal" and n * m <= exact_limit and time.perf_counter() < deadline:
        exact = _pmedian_mip(c, a, p, fixed, deadline - time.perf_counter(), threads)
        if exact is not None:
            value, sites, bound, st = exact
            if value <= upper + 1e-9:
                upper, chosen = value, sites
            lower = max(lower, bound)
            notes.append(f"exact CBC model over all {n * m} pairs: {st}")
    lower = min(lower, upper)  # the bound may exceed the cost by rounding only
    gap = _relative_gap(upper, lower)
    if gap <= 1e-9:
        status = "optimal"
    site, dist = _assign_nearest(cost, chosen)
    covered, pct = (None, None) if radius is None else _weighted_cover(cost, weights, chosen, radius)
    return LocationResult("pmedian", chosen, site, dist, upper, lower, upper, status, gap, pct, covered, notes,
                          time.perf_counter() - t0)


def _pmedian_mip(c: np.ndarray, a: np.ndarray, p: int, fixed: set[int], time_limit: float,
                 threads: int) -> tuple[float, list[int], float, str] | None:
    import pulp

    n, m = c.shape
    prob = pulp.LpProblem("pmedian", pulp.LpMinimize)
    y = _site_vars(prob, m, fixed)
    x = [[prob.add_variable(f"x{i}_{j}", 0, 1) for j in range(m)] for i in range(n)]
    prob += pulp.LpAffineExpression([(x[i][j], float(a[i] * c[i, j])) for i in range(n) for j in range(m)])
    for i in range(n):
        prob += pulp.lpSum(x[i]) == 1
        for j in range(m):
            prob += x[i][j] - y[j] <= 0
    prob += pulp.lpSum(y) == p
    s = solve_cbc(prob, max(time_limit, 1.0), threads)
    if s.objective is None:
        return None
    sites = sorted(j for j in range(m) if (y[j].value() or 0) > 0.5)
    value = float((a * c[:, sites].min(axis=1)).sum())
    return value, sites, s.bound if s.bound is not None else -math.inf, s.status


def _cover_feasible(c: np.ndarray, p: int, radius: float, fixed: set[int], time_limit: float,
                    threads: int) -> tuple[str, list[int]]:
    import pulp

    sets, _, keys, _ = _open_rows(c, np.ones(len(c)), radius, fixed)
    if any(not len(s) for s in sets):
        return "infeasible", []
    m = c.shape[1]
    prob = pulp.LpProblem("pcenter_cover", pulp.LpMinimize)
    y = _site_vars(prob, m, fixed)
    prob += pulp.lpSum(y)
    for key in keys:
        prob += pulp.LpAffineExpression([(y[j], 1) for j in key]) >= 1
    prob += pulp.lpSum(y) <= p
    s = solve_cbc(prob, time_limit, threads)
    if s.status in ("optimal", "feasible"):
        return "feasible", sorted(j for j in range(m) if (y[j].value() or 0) > 0.5)
    return s.status, []


def pcenter(cost: np.ndarray, weights: np.ndarray, p: int, existing: list[int], time_limit: float,
            threads: int = 2, radius: float | None = None) -> LocationResult:
    """p-center by bisection over the distinct costs, each step a set-cover feasibility problem."""
    _check_inputs(cost, weights, existing)
    n, m = cost.shape
    fixed = set(existing)
    if not len(fixed) <= p <= m:
        raise AnalysisError(f"p must be between the number of existing sites ({len(fixed)}) and {m}.")
    c = np.where(np.isnan(cost), np.inf, cost)
    if np.isinf(c).all(axis=1).any():
        raise AnalysisError("Some demand units can reach no candidate site.")
    active = weights > 0  # demand without weight does not constrain the centre
    ca = c[active] if active.any() else c
    # upper bound: greedy (open the site that most reduces the current maximum), then bisection
    chosen = sorted(fixed)
    while len(chosen) < p:
        cur = ca[:, chosen].min(axis=1) if chosen else np.full(len(ca), np.inf)
        cand = [j for j in range(m) if j not in chosen]
        worst = [np.max(np.minimum(cur, ca[:, j])) for j in cand]
        chosen.append(cand[int(np.argmin(worst))])
        chosen.sort()
    upper = float(ca[:, chosen].min(axis=1).max())
    lower_val = float(ca.min(axis=1).max())
    values = np.unique(ca[np.isfinite(ca)])
    values = values[(values >= lower_val) & (values <= upper)]
    lo, hi = 0, len(values) - 1  # the optimum is values[k] for some lo <= k <= hi
    deadline = time.perf_counter() + time_limit
    t0 = time.perf_counter()
    notes = [f"greedy start {upper:.6g}; bisection over {len(values)} distinct costs"]
    unknown = False
    while lo < hi:
        mid = (lo + hi) // 2
        left = deadline - time.perf_counter()
        if left <= 0:
            unknown = True
            break
        status, sites = _cover_feasible(ca, p, float(values[mid]), fixed, left, threads)
        if status == "feasible":
            chosen = sites
            upper = float(ca[:, chosen].min(axis=1).max())
            hi = int(np.searchsorted(values, upper))
        elif status == "infeasible":
            lo = mid + 1
        else:
            unknown = True
            break
    lower = float(values[lo]) if len(values) else upper
    gap = _relative_gap(upper, lower)
    site, dist = _assign_nearest(cost, chosen)
    pct = None
    covered = None
    if radius is not None:
        covered, pct = _weighted_cover(cost, weights, chosen, radius)
    if unknown:
        notes.append("time limit reached before the bisection closed")
    return LocationResult("pcenter", chosen, site, dist, upper, lower, upper,
                          "optimal" if gap <= 1e-9 else "feasible", gap, pct, covered, notes,
                          time.perf_counter() - t0)
