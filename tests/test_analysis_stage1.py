"""Stage 1 analysis functions against published values (esda docstrings), hand-computed cases and spopt."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import shapely

from app.analysis import accessibility as acc
from app.analysis import autocorrelation as ac
from app.analysis import gaps as gp
from app.analysis import location as loc
from app.analysis.spatial import AnalysisError, WeightsSpec, build_weights, great_circle_km

warnings.filterwarnings("ignore")


def _stl():
    import libpysal

    w = libpysal.io.open(libpysal.examples.get_path("stl.gal")).read()
    f = libpysal.io.open(libpysal.examples.get_path("stl_hom.txt"))
    return np.array(f.by_col["HR8893"]), w


def test_moran_matches_esda_docstring():
    # checks the method: methodology#global-moran
    y, w = _stl()
    g = ac.global_autocorrelation(y, w, 999, 12345)
    assert round(g.moran_i, 3) == 0.244
    assert g.p_norm == pytest.approx(0.00027147862770937614, rel=1e-9)
    assert g.expected_i == pytest.approx(-1 / (len(y) - 1))
    assert 0 < g.p_sim <= 0.01


def test_bivariate_moran_matches_esda_docstring():
    # checks the method: methodology#bivariate
    import libpysal

    db = libpysal.io.open(libpysal.examples.get_path("sids2.dbf"))
    x, y = np.array(db.by_col("SIDR79")), np.array(db.by_col("SIDR74"))
    w = libpysal.io.open(libpysal.examples.get_path("sids2.gal")).read()
    r = ac.bivariate(x, y, w, 99, 1)
    assert round(r.i_b, 3) == 0.156
    # I_B = Σ zx_i (W zy)_i / (n − 1), zx and zy standardised with ddof = 1 (DOMAIN §3.2)
    w.transform = "r"
    zx = (x - x.mean()) / x.std(ddof=1)
    zy = (y - y.mean()) / y.std(ddof=1)
    assert r.i_b == pytest.approx(float(zx @ (w.sparse @ zy)) / (len(x) - 1), rel=1e-12)


def _lattice(n: int = 5) -> np.ndarray:
    return np.array([shapely.box(0.01 * i, 0.01 * j, 0.01 * (i + 1), 0.01 * (j + 1))
                     for j in range(n) for i in range(n)], dtype=object)


def test_local_moran_by_hand_on_a_lattice():
    # checks the method: methodology#lisa
    geoms = _lattice()
    xy = shapely.get_coordinates(shapely.centroid(geoms)) * 1e5
    y = np.arange(25, dtype=float) ** 1.5
    w = build_weights(geoms, xy, WeightsSpec("rook")).w
    r = ac.local_moran(y, w, 99, 7)
    z = y - y.mean()
    w.transform = "r"
    hand = (len(y) - 1) * z * (w.sparse @ z) / (z @ z)
    np.testing.assert_allclose(r.local_i, hand, rtol=1e-12)
    assert r.quadrant[0] == "LL" and r.quadrant[24] == "HH"
    assert w.n == 25 and w.cardinalities[0] == 2 and w.cardinalities[12] == 4  # rook on a 5 × 5 grid


def test_gi_star_matches_the_closed_form():
    """Z_i = (Σ_j w_ij x_j − x̄ W_i) / (s √[(n Σ_j w_ij² − W_i²)/(n − 1)]), binary weights with self (DOMAIN §3.2)."""
    # checks the method: methodology#gi-star
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 10_000, (40, 2))
    y = rng.gamma(2.0, 10.0, 40)
    geoms = shapely.points(xy)
    w = build_weights(geoms, xy, WeightsSpec("distance", threshold_km=3.0)).w
    r = ac.getis_ord(y, w, 99, 1)
    wb = (w.sparse > 0).astype(float).toarray()
    np.fill_diagonal(wb, 1.0)
    n = len(y)
    wi = wb.sum(axis=1)
    s = y.std()
    z = (wb @ y - y.mean() * wi) / (s * np.sqrt((n * (wb ** 2).sum(axis=1) - wi ** 2) / (n - 1)))
    np.testing.assert_allclose(r.gi_z, z, atol=1e-8)
    assert ac.gi_class(2.6) == "hot-99" and ac.gi_class(-2.0) == "cold-95" and ac.gi_class(1.7) == "hot-90"
    assert ac.gi_class(1.6) == "not-significant"


def test_constant_variable_is_refused():
    geoms = _lattice(3)
    xy = shapely.get_coordinates(shapely.centroid(geoms))
    w = build_weights(geoms, xy, WeightsSpec()).w
    with pytest.raises(AnalysisError, match="constant"):
        ac.global_autocorrelation(np.ones(9), w, 9, 1)


def test_two_step_fca_by_hand():
    # checks the method: methodology#accessibility
    d = np.array([100.0, 200.0, 50.0])
    s = np.array([10.0, 5.0])
    c = np.array([[5.0, 25.0], [15.0, 8.0], [40.0, 12.0]])
    a, r = acc.accessibility(d, s, c, "2sfca", 30.0)
    np.testing.assert_allclose(r, [10 / 300, 5 / 350])
    np.testing.assert_allclose(a, [10 / 300 + 5 / 350, 10 / 300 + 5 / 350, 5 / 350])
    # E2SFCA, Luo & Qi steps 10/20/30 → 1, 0.68, 0.22 (upper-inclusive)
    a, r = acc.accessibility(d, s, c, "e2sfca", 30.0, [(10, 1.0), (20, 0.68), (30, 0.22)])
    r1, r2 = 10 / (100 + 200 * 0.68), 5 / (100 * 0.22 + 200 + 50 * 0.68)
    np.testing.assert_allclose(r, [r1, r2])
    np.testing.assert_allclose(a, [r1 + 0.22 * r2, 0.68 * r1 + r2, 0.68 * r2])
    # Gaussian weight (e^{-½(d/d0)²} − e^{-½}) / (1 − e^{-½})
    g = acc.gaussian_weight(30.0)
    e = math.exp(-0.5)
    assert float(g(15.0)) == pytest.approx((math.exp(-0.125) - e) / (1 - e))
    assert float(g(30.0)) == pytest.approx(0.0, abs=1e-15) and float(g(31.0)) == 0.0
    a, r = acc.accessibility(d, s, c, "gaussian", 30.0)
    w = np.vectorize(lambda v: float(g(v)))(c)
    rr = s / (d @ w)
    np.testing.assert_allclose(r, rr)
    np.testing.assert_allclose(a, w @ rr)
    # a site whose catchment holds only units of zero demand serves no one: R = 0, and no unit gets infinite access
    d0 = np.array([100.0, 0.0, 0.0])
    c0 = np.array([[5.0, 50.0], [40.0, 10.0], [45.0, 12.0]])
    a, r = acc.accessibility(d0, s, c0, "2sfca", 30.0)
    np.testing.assert_allclose(r, [10 / 100, 0.0])
    np.testing.assert_allclose(a, [10 / 100, 0.0, 0.0])


def test_gaps_by_hand():
    # checks the method: methodology#coverage-gaps
    demand = np.array([[120.0, 40.0], [120.5, 40.0], [121.0, 40.0]])
    supply = np.array([[120.0, 40.0]])
    near, idx = gp.nearest_km(demand, supply)
    np.testing.assert_allclose(near, great_circle_km(demand, supply)[:, 0], rtol=1e-9)
    r = gp.coverage_gap(near, idx, np.array([10.0, 20.0, 30.0]), 50.0)
    assert list(r.in_gap) == [False, False, True]  # 0.5° of longitude at 40° N ≈ 42.6 km; 1° ≈ 85.2 km
    assert r.affected == 30.0 and r.share == pytest.approx(0.5)
    near, idx = gp.nearest_km(demand, np.zeros((0, 2)))
    assert np.isinf(near).all() and (idx == -1).all()


def _instance(n: int, m: int, seed: int):
    rng = np.random.default_rng(seed)
    d = rng.uniform(0, 30, (n, 2))
    s = rng.uniform(0, 30, (m, 2))
    w = rng.integers(1, 50, n).astype(float)
    return np.sqrt(((d[:, None, :] - s[None, :, :]) ** 2).sum(-1)), w


def test_mclp_equals_spopt():
    # checks the method: methodology#location-allocation
    import pulp
    from spopt.locate import MCLP

    cost, w = _instance(120, 25, 1)
    r = loc.mclp(cost, w, 4, 6.0, [], 60)
    ref = MCLP.from_cost_matrix(cost, w, service_radius=6.0, p_facilities=4).solve(pulp.PULP_CBC_CMD(msg=False))
    assert r.status == "optimal" and r.mip_gap == 0.0
    assert r.objective == pytest.approx(pulp.value(ref.problem.objective))
    assert r.coverage_weighted_pct == pytest.approx(100 * r.objective / w.sum())
    assert len(r.selected) == 4


def test_mclp_with_an_existing_site_by_hand():
    # demand on a line at 0, 1, 2, 10; candidates at 0, 2, 10; radius 1.5; p = 2 with site 0 existing
    pos_d = np.array([0.0, 1.0, 2.0, 10.0])
    pos_s = np.array([0.0, 2.0, 10.0])
    cost = np.abs(pos_d[:, None] - pos_s[None, :])
    w = np.array([1.0, 1.0, 1.0, 5.0])
    r = loc.mclp(cost, w, 2, 1.5, [0], 30)
    assert r.selected == [0, 2] and r.objective == 7.0  # 0 covers 0 and 1; 10 (weight 5) beats 2 (weight 1)
    assert r.coverage_weighted_pct == pytest.approx(700 / 8)
    assert list(r.assignment) == [0, 0, -1, 2]


def test_lscp_equals_spopt():
    import pulp
    from spopt.locate import LSCP

    cost, w = _instance(100, 30, 2)
    r = loc.lscp(cost, w, 12.0, [], 60)
    ref = LSCP.from_cost_matrix(cost, service_radius=12.0).solve(pulp.PULP_CBC_CMD(msg=False))
    assert r.status == "optimal" and r.objective == pulp.value(ref.problem.objective)
    assert r.coverage_weighted_pct == pytest.approx(100.0)


def test_pmedian_equals_spopt():
    import pulp
    from spopt.locate import PMedian

    cost, w = _instance(80, 20, 3)
    r = loc.pmedian(cost, w, 4, [], 60)
    ref = PMedian.from_cost_matrix(cost, w, p_facilities=4).solve(pulp.PULP_CBC_CMD(msg=False))
    assert r.status == "optimal" and r.mip_gap <= 1e-9
    assert r.objective == pytest.approx(pulp.value(ref.problem.objective), rel=1e-9)
    assert r.lower_bound <= r.objective + 1e-6


def test_pmedian_at_scale_reports_a_proven_gap():
    # checks the method: methodology#location-allocation
    cost, w = _instance(1500, 150, 4)
    r = loc.pmedian(cost, w, 10, [], 60, exact_limit=0)
    assert r.lower_bound <= r.objective
    assert r.mip_gap == pytest.approx((r.objective - r.lower_bound) / r.objective)
    assert r.mip_gap < 0.01


def test_pcenter_equals_spopt():
    import pulp
    from spopt.locate import PCenter

    cost, w = _instance(60, 15, 5)
    r = loc.pcenter(cost, w, 3, [], 60)
    ref = PCenter.from_cost_matrix(cost, p_facilities=3).solve(pulp.PULP_CBC_CMD(msg=False))
    assert r.status == "optimal"
    assert r.objective == pytest.approx(pulp.value(ref.problem.objective), rel=1e-6)  # CBC writes 6 decimals


def test_time_limited_solve_is_not_called_optimal():
    """PuLP reports "Optimal" after CBC's time limit; the status must come from sol_status and the gap."""
    cost, w = _instance(3000, 300, 6)
    r = loc.mclp(cost, w, 12, 2.5, [], 1)
    assert r.status in ("optimal", "feasible")
    if r.status == "feasible":
        assert r.mip_gap is not None and r.mip_gap > 0 and r.upper_bound >= r.objective
