"""Small-area estimation (docs/methodology.md#small-area-estimation): Fay–Herriot against the published
milk-expenditure example, ML and the nested-error REML fit against independent fits, the EBP's closed forms against
brute-force simulation, simulation studies of the MSE estimators and interval coverage, and the process on the
demo's survey (restricted data, errors, layers)."""

from __future__ import annotations

import warnings

import httpx
import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import optimize

from app.analysis import sae
from app.analysis.spatial import AnalysisError
from app.models.codes import Role


def auth(keys: dict[Role, str], role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[role]}"}


def milk() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expenditure on fresh milk, 1989 (Arora & Lahiri 1997; Rao & Molina 2015, Example 6.1.2), as shipped with
    samplics (its data set, not copied here): 43 small areas in 4 major areas."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from samplics.datasets import load_expenditure_milk

        d = load_expenditure_milk()["data"]
    y = d["direct_est"].to_numpy(float)
    psi = d["std_error"].to_numpy(float) ** 2
    major = d["major_area"].to_numpy()
    X = np.column_stack([np.ones(len(y))] + [(major == k).astype(float) for k in (2, 3, 4)])
    return y, X, psi


# --------------------------------------------------------------------------------------- Fay–Herriot
def test_fay_herriot_reml_reproduces_the_published_milk_example():
    """methodology#small-area-estimation: REML, EBLUP and Prasad–Rao MSE as printed in the samplics documentation
    ("Area Level Modeling" tutorial, EblupAreaModel with REML on the milk data; the same fit as R sae's eblupFH)."""
    y, X, psi = milk()
    f = sae.fit_fay_herriot(y, X, psi, "REML")
    assert f.converged
    assert_allclose(f.beta, [0.96818899, 0.13278031, 0.22694622, -0.24130104], atol=1e-7)
    assert np.sqrt(f.sigma2_u) == pytest.approx(0.1361996136767915, abs=1e-8)
    pr = sae.predict_fay_herriot(f, y, X, psi)
    assert_allclose(pr.estimate[[0, 1, 2, 3, 29, 36, 42]],
                    [1.0219705441558895, 1.047601951445677, 1.0679514263086396, 0.7608165650758552,
                     0.6134416233555452, 0.5298863364482942, 0.6810868850580024], atol=1e-8)
    assert_allclose(pr.mse[[0, 1, 2, 3, 29, 33, 42]],
                    [0.013460, 0.005373, 0.005702, 0.008542, 0.006099, 0.003871, 0.009904], atol=6e-7)


def test_fay_herriot_ml_maximises_the_likelihood():
    """ML by Fisher scoring = a direct numerical maximisation of the profile likelihood (scipy); samplics 0.6
    stops its ML scoring after two steps (0.12468), so its ML figures are not an oracle."""
    y, X, psi = milk()

    def nll(s2: float) -> float:
        v = s2 + psi
        beta = np.linalg.solve(X.T @ (X / v[:, None]), X.T @ (y / v))
        r = y - X @ beta
        return 0.5 * float(np.log(v).sum() + (r * r / v).sum())

    best = optimize.minimize_scalar(nll, bounds=(0, 1), method="bounded", options={"xatol": 1e-12})
    f = sae.fit_fay_herriot(y, X, psi, "ML")
    assert f.sigma2_u == pytest.approx(best.x, rel=1e-6)
    assert f.loglik == pytest.approx(-best.fun - 0.5 * len(y) * np.log(2 * np.pi), rel=1e-9)
    # the ML MSE adds Datta & Lahiri's bias term: larger than REML's g1 + g2 + 2 g3 at the same estimate
    pr = sae.predict_fay_herriot(f, y, X, psi)
    assert np.all(pr.mse > pr.g1 + pr.g2 + 2 * pr.g3)


def test_fay_herriot_hand_case_and_out_of_sample_areas():
    X = np.column_stack([np.ones(5), [0.0, 1.0, 2.0, 3.0, 4.0]])
    y = np.array([1.0, 2.2, 2.8, 4.1, np.nan])
    psi = np.array([0.5, 0.5, 0.5, 0.5, np.nan])
    f = sae.fit_fay_herriot(y[:4], X[:4], psi[:4])
    # residuals of a near-perfect line are far smaller than psi: s2u is truncated at 0 and the EBLUP is the
    # regression (GLS = OLS with equal psi)
    assert f.sigma2_u == 0.0
    ols = np.linalg.lstsq(X[:4], y[:4], rcond=None)[0]
    assert_allclose(f.beta, ols, atol=1e-12)
    pr = sae.predict_fay_herriot(f, y, X, psi)
    assert_allclose(pr.estimate, X @ ols, atol=1e-12)
    assert pr.gamma[4] == 0 and pr.g1[4] == 0.0  # synthetic: s2u + x'cov x
    assert pr.mse[4] == pytest.approx(float(X[4] @ f.cov_beta @ X[4]))


def test_transformations_and_benchmarking():
    # log: delta-method variances, crude back-transformation exp(theta + mse / 2)
    y, psi = sae.fh_to_model_scale(np.array([2.0, 4.0]), np.array([0.4, 0.8]), "log")
    assert_allclose(y, np.log([2.0, 4.0]))
    assert_allclose(psi, [0.1, 0.05])
    est, mse = sae.fh_back(np.log(np.array([2.0])), np.array([0.02]), np.array([0.02]), "log")
    assert est[0] == pytest.approx(2.0 * np.exp(0.01))
    assert mse[0] == pytest.approx(4.0 * np.exp(0.02) * np.expm1(0.02))
    # arcsine: variance 1 / (4 n_eff); E[sin^2 t] for t ~ N(theta, g1) against numerical integration
    _, psi = sae.fh_to_model_scale(np.array([0.3]), np.array([0.01]), "arcsine", np.array([21.0]))
    assert psi[0] == pytest.approx(1 / 84)
    theta, g1 = 0.6, 0.03
    grid = np.linspace(theta - 10 * np.sqrt(g1), theta + 10 * np.sqrt(g1), 200_001)
    dens = np.exp(-(grid - theta) ** 2 / (2 * g1)) / np.sqrt(2 * np.pi * g1)
    expected = np.trapezoid(np.sin(grid) ** 2 * dens, grid)
    est, _ = sae.fh_back(np.array([theta]), np.array([g1]), np.array([g1]), "arcsine")
    assert est[0] == pytest.approx(expected, abs=1e-9)
    with pytest.raises(AnalysisError, match="above 0"):
        sae.fh_to_model_scale(np.array([0.0]), np.array([1.0]), "log")
    # benchmarking: the share-weighted mean of each group equals its total
    est = np.array([0.1, 0.3, 0.2, 0.4])
    share = np.array([1.0, 3.0, 1.0, 1.0])
    groups = np.array([0, 0, 1, 1])
    b = sae.benchmark(est, share, groups, np.array([0.5, 0.3]), "ratio")
    assert (share[:2] @ b[:2]) / 4 == pytest.approx(0.5) and (b[2:].mean()) == pytest.approx(0.3)
    assert_allclose(b[:2] / est[:2], [0.5 / 0.25] * 2)
    d = sae.benchmark(est, share, groups, np.array([0.5, 0.3]), "difference")
    assert_allclose(d - est, [0.25, 0.25, 0.0, 0.0], atol=1e-12)


def test_direct_estimates_by_hand():
    # area 0: weights 1, 1, 2 with values 0, 1, 1 -> 3/4; each unit its own PSU
    value = np.array([0.0, 1.0, 1.0, 1.0])
    weight = np.array([1.0, 1.0, 2.0, 5.0])
    area = np.array([0, 0, 0, 1])
    d = sae.direct_estimates(value, weight, area, 2, proportion=True)
    assert d.estimate[0] == pytest.approx(0.75)
    z = weight[:3] * (value[:3] - 0.75) / 4
    assert d.variance[0] == pytest.approx(3 / 2 * ((z - z.mean()) ** 2).sum())
    assert np.isnan(d.variance[1]) and d.n.tolist() == [3, 1]
    assert d.effective_n[0] == pytest.approx(0.75 * 0.25 / d.variance[0])


# --------------------------------------------------------------------------------------- unit model
def test_nested_error_reml_and_ml_match_statsmodels():
    """The survey data of Battese, Harter & Fuller (1988), corn hectares of 37 segments in 12 Iowa counties, as
    shipped with samplics; statsmodels' MixedLM is an independent REML/ML fit."""
    import statsmodels.formula.api as smf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from samplics.datasets import load_county_crop

        d = load_county_crop()["data"]
    codes, area = np.unique(d["county_id"].to_numpy(), return_inverse=True)
    X = np.column_stack([np.ones(len(d)), d["corn_pixel"], d["soybeans_pixel"]]).astype(float)
    y = d["corn_area"].to_numpy(float)
    for method in ("REML", "ML"):
        f = sae.fit_nested_error(y, X, area, len(codes), method)  # type: ignore[arg-type]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = smf.mixedlm("corn_area ~ corn_pixel + soybeans_pixel", d, groups=d["county_id"]).fit(
                reml=method == "REML", method=["bfgs"])
        assert_allclose(f.beta, ref.fe_params.to_numpy(), rtol=2e-4)
        assert f.sigma2_e == pytest.approx(ref.scale, rel=2e-4)
        assert f.sigma2_u == pytest.approx(float(ref.cov_re.iloc[0, 0]), rel=2e-3)
        assert f.loglik == pytest.approx(ref.llf, rel=1e-5)
        assert_allclose(f.u_hat, [ref.random_effects[c].iloc[0] for c in codes], atol=2e-2)


@pytest.mark.parametrize("kind", ["none", "log", "box-cox"])
def test_ebp_closed_forms_match_brute_force(kind: str):
    """The EBP of FGT(0, 1, 2) and the mean = the average over many draws of each household's income given the
    data (Molina & Rao's Monte Carlo with a million replicates)."""
    rng = np.random.default_rng(7)
    tr = {"none": sae.Transform(), "log": sae.Transform("log", 0.0, 50.0),
          "box-cox": sae.Transform("box-cox", 0.25, 0.0)}[kind]
    z = 4000.0
    m = np.array(tr.forward(np.array([3000.0, 4500.0, 9000.0])), dtype=float)
    s = np.array([0.3, 0.5, 0.4]) * (1000.0 if kind == "none" else 1.0) * (6.0 if kind == "box-cox" else 1.0)
    got = sae._unit_expectations(m, s, z, tr)
    draws = tr.inverse(m[:, None] + s[:, None] * rng.standard_normal((3, 1_000_000)))
    gap = np.clip(1 - draws / z, 0, None) * (draws < z)
    expected = ((draws < z).mean(1), gap.mean(1), (gap ** 2).mean(1), draws.mean(1))
    for g, e in zip(got, expected, strict=True):
        assert_allclose(g, e, rtol=0.01, atol=2e-3)


def test_box_cox_lambda_recovers_a_log_normal_income():
    rng = np.random.default_rng(3)
    area = np.repeat(np.arange(40), 25)
    X = np.column_stack([np.ones(1000), rng.normal(size=1000)])
    y = np.exp(8 + 0.3 * X[:, 1] + rng.normal(0, 0.2, 40)[area] + rng.normal(0, 0.5, 1000))
    fit, tr = sae.fit_transformed(y, X, area, 40, "box-cox", "REML")
    assert abs(tr.lam) < 0.08  # log is Box-Cox's lambda = 0
    assert fit.beta[1] == pytest.approx(0.3, abs=0.05)


# --------------------------------------------------------------------------------------- simulation studies
def test_fay_herriot_mse_simulation_study():
    """200 replications of a known Fay–Herriot model: the Prasad–Rao MSE averages within 15 % of the empirical
    MSE and its 95 % intervals cover 92–98 %. The bias-corrected bootstrap MSE (100 replications of 50 replicates)
    averages within 15 % too; its intervals cover less (0.91–0.93 over seeds with 200 replicates: the Monte Carlo
    noise of a bootstrap MSE shortens some intervals), so the bar for them is 0.88."""
    rng = np.random.default_rng(1)
    m = 50
    X = np.column_stack([np.ones(m), rng.uniform(0, 1, m)])
    psi = np.linspace(0.3, 1.5, m)
    beta, s2u = np.array([1.0, 2.0]), 0.5

    def study(reps: int, boot: int) -> tuple[float, float]:
        est, mse, truth = np.zeros((reps, m)), np.zeros((reps, m)), np.zeros((reps, m))
        for r in range(reps):
            theta = X @ beta + rng.normal(0, np.sqrt(s2u), m)
            y = theta + rng.normal(0, np.sqrt(psi))
            f = sae.fit_fay_herriot(y, X, psi)
            pr = sae.predict_fay_herriot(f, y, X, psi)
            est[r], truth[r] = pr.estimate, theta
            mse[r] = pr.mse if not boot else sae.bootstrap_fay_herriot(f, y, X, psi, "none", boot, rng)
        emp = ((est - truth) ** 2).mean(0)
        return float((mse.mean(0) / emp).mean()), float((np.abs(est - truth) <= 1.96 * np.sqrt(mse)).mean())

    ratio, coverage = study(200, 0)
    assert abs(ratio - 1) <= 0.15 and 0.92 <= coverage <= 0.98, (ratio, coverage)
    ratio, coverage = study(100, 50)
    assert abs(ratio - 1) <= 0.15 and 0.88 <= coverage <= 0.98, (ratio, coverage)


def test_ebp_mse_simulation_study():
    """200 replications of a known nested-error model of log incomes (25 areas of 120 households, 4–14 sampled in
    each, drawn from the population): the bootstrap MSE of the headcount (100 replicates) averages within 15 % of
    the empirical MSE, and its 95 % intervals cover 92–98 %."""
    rng = np.random.default_rng(6)
    D, Nd = 25, 120
    area = np.repeat(np.arange(D), Nd)
    N = D * Nd
    X = np.column_stack([np.ones(N), rng.binomial(1, np.repeat(rng.uniform(0.2, 0.8, D), Nd)), rng.normal(0, 1, N)])
    beta, s2u, s2e = np.array([8.5, 0.5, 0.3]), 0.15 ** 2, 0.5 ** 2
    nd = rng.integers(3, 13, D)
    z = float(np.exp(8.5))
    pop = sae.Population(X, area, np.ones(N), D)
    est, truth, mse = [], [], []
    for _ in range(200):
        y = np.exp(X @ beta + rng.normal(0, np.sqrt(s2u), D)[area] + rng.normal(0, np.sqrt(s2e), N))
        idx = np.concatenate([rng.choice(np.flatnonzero(area == d), nd[d], replace=False) for d in range(D)])
        fit, tr = sae.fit_transformed(y[idx], X[idx], area[idx], D, "log", "REML")
        est.append(sae.ebp(fit, tr, pop, z)["fgt0"])
        mse.append(sae.bootstrap_ebp(fit, tr, X[idx], area[idx], pop, z, 100, rng)[0]["fgt0"])
        truth.append(np.bincount(area, y < z, D) / Nd)
    e, t, m = np.array(est), np.array(truth), np.array(mse)
    emp = ((e - t) ** 2).mean(0)
    ratio = float((m.mean(0) / emp).mean())
    coverage = float((np.abs(e - t) <= 1.96 * np.sqrt(m)).mean())
    assert abs(ratio - 1) <= 0.15 and 0.92 <= coverage <= 0.98, (ratio, coverage)


# --------------------------------------------------------------------------------------- the process
# the registry's own figure for the snapshot the survey was drawn from (the region's default year, 2020)
TRUTH = """
WITH r AS (SELECT * FROM household UNION ALL SELECT * FROM household_history),
at AS (SELECT max(valid_from) AS d FROM r WHERE region_id = 'tieling-demo'
       AND extract(year FROM valid_from) = (SELECT default_year FROM region WHERE region_id = 'tieling-demo'))
SELECT r.village_code, sum(r.size * (r.net_income_pc < $1)::int)::float8 / sum(r.size) AS fgt0
FROM r, at WHERE r.region_id = 'tieling-demo' AND r.valid_from <= at.d AND (r.valid_to IS NULL OR r.valid_to > at.d)
GROUP BY 1
"""


async def test_survey_households_are_restricted(api: httpx.AsyncClient, api_keys: dict[Role, str], demo_database):
    from tpa_testing import fetch

    n = fetch(demo_database.name, "SELECT count(*) FROM survey_household")[0][0]
    assert n > 500
    r = await api.get("/collections/survey-households/items")
    assert r.status_code == 401
    assert (await api.get("/collections")).json()["collections"]  # listed only for roles that may read it
    assert "survey-households" not in {c["id"] for c in (await api.get("/collections")).json()["collections"]}
    r = await api.get("/collections/survey-households/items", params={"limit": 2},
                      headers=auth(api_keys, Role.analyst))
    assert r.status_code == 200 and r.json()["numberMatched"] == n
    props = r.json()["features"][0]["properties"]
    assert props["survey"] == "demo-survey-2020" and props["weight"] > 0 and "township_code" in props
    anon = await api.post("/processes/small-area-estimation/execution", json={"inputs": {
        "model": "ebp", "sample": {"href": "/collections/survey-households/items"},
        "population": {"region": "tieling-demo"}, "unit_covariates": ["size"], "poverty_line": 6000}})
    assert anon.status_code == 401


async def test_the_demo_poverty_map_beats_the_direct_estimates(editor: httpx.AsyncClient, edit_keys, edit_database):
    """EBP of the demo's villages from its survey (the process's example with 30 bootstrap replicates): every
    village estimated, flags where the CV exceeds 20 %, township aggregates; against the registry's own figures the
    EBP's error is smaller than the direct estimates' where the survey has a village."""
    from tpa_testing import fetch

    from app.processes.sae import SmallAreaEstimation

    body = {**SmallAreaEstimation.example, "bootstrap": 30}
    r = await editor.post("/processes/small-area-estimation/execution", json={"inputs": body},
                          headers=auth(edit_keys, Role.analyst))
    assert r.status_code == 200, r.text
    res = r.json()
    model, summary = res["model"], res["summary"]
    assert model["transform"]["type"] == "log" and model["variance_components"]["sigma2_e"] > 0
    assert [c["name"] for c in model["coefficients"]][:2] == ["intercept", "size"]
    feats = (await editor.get(res["areas"]["href"], params={"limit": 5000},
                              headers=auth(edit_keys, Role.analyst))).json()["features"]
    truth = {v: p for v, p in fetch(edit_database.name, TRUTH, 6000.0)}
    assert {f["id"] for f in feats} == set(truth) and summary["areas"] == len(truth)
    for f in feats:
        p = f["properties"]
        assert 0 <= p["fgt2"] <= p["fgt1"] <= p["fgt0"] <= 1 and p["estimate"] == p["fgt0"]
        assert p["reliable"] == (p["cv"] <= 0.20)
        assert f["geometry"]["type"] == "Point"
    sampled = [f["properties"] | {"id": f["id"]} for f in feats if f["properties"]["sample_n"] > 0]
    assert len(sampled) == summary["areas_in_sample"] > 50
    err_ebp = np.sqrt(np.mean([(p["fgt0"] - truth[p["id"]]) ** 2 for p in sampled]))
    err_direct = np.sqrt(np.mean([(p["direct"] - truth[p["id"]]) ** 2 for p in sampled]))
    assert err_ebp < 0.85 * err_direct, (err_ebp, err_direct)
    inside = np.mean([f["properties"]["lower"] <= truth[f["id"]] <= f["properties"]["upper"] for f in feats])
    assert inside >= 0.9, inside
    towns = (await editor.get(res["aggregates"]["href"], params={"limit": 500},
                              headers=auth(edit_keys, Role.analyst))).json()["features"]
    assert len(towns) == len({fetch(edit_database.name, "SELECT parent_code FROM admin_unit WHERE code = $1",
                                    v)[0][0] for v in truth})
    assert np.nanmedian([t["properties"]["cv"] for t in towns]) < np.nanmedian([f["properties"]["cv"]
                                                                                for f in feats])


async def test_fay_herriot_for_townships_and_errors(editor: httpx.AsyncClient, edit_keys):
    """Fay–Herriot of township headcounts (arcsine, bootstrap) with county census covariates joined by reference,
    benchmarked to the survey's overall headcount; then clear 400s for inconsistent inputs."""
    key = auth(edit_keys, Role.analyst)
    body = {"model": "fay-herriot", "areas": {"href": "/collections/admin-units/items?level=4"},
            "sample": {"href": "/collections/survey-households/items"}, "sample_area": "township_code",
            "psu": "psu", "poverty_line": 6000, "transform": "arcsine", "bootstrap": 30,
            "covariate_sources": [{"data": {"href": "/collections/admin-units/items?level=3"}, "on": "parent_code",
                                   "properties": {"census2020.EDUC_AVGY": "schooling",
                                                  "census2020.POPU_URB": "urban"}}],
            "benchmark": {"value": 0.4, "share": None}}
    r = await editor.post("/processes/small-area-estimation/execution", json={"inputs": body}, headers=key)
    assert r.status_code == 200, r.text
    res = r.json()
    assert [c["name"] for c in res["model"]["coefficients"]] == ["intercept", "schooling", "urban"]
    assert res["model"]["mse_method"] == "bootstrap"
    feats = (await editor.get(res["areas"]["href"], params={"limit": 500}, headers=key)).json()["features"]
    est = np.array([f["properties"]["estimate"] for f in feats])
    assert est.mean() == pytest.approx(0.4, abs=1e-9)  # benchmarked, equal shares
    assert all(f["properties"]["mse"] > 0 for f in feats)
    bad = [({**body, "transform": "box-cox"}, "box-cox"),
           ({"model": "ebp", "sample": body["sample"], "unit_covariates": ["size"]}, "population"),
           ({**body, "covariates": ["no_such_covariate"]}, "no_such_covariate"),
           ({**body, "sample_area": "county_code"}, "not among the areas"),
           ({"model": "fay-herriot", "direct": "d", "variance": "v", "covariates": ["x"],
             "areas": [{"id": f"a{i}", "d": 1e300 * (i % 3 + 1), "v": 1e300, "x": i} for i in range(8)]},
            "extreme size")]
    for inputs, words in bad:
        r = await editor.post("/processes/small-area-estimation/execution", json={"inputs": inputs}, headers=key)
        assert r.status_code == 400, r.text
        assert r.headers["content-type"].startswith("application/problem+json") and words in r.text


def test_import_survey_is_all_or_nothing(edit_database, tmp_path):
    """`tpa import survey`: a file with bad rows writes nothing and says which; a good one is stored whole and
    replaces the survey of the same id; codes outside the region are refused."""
    from tpa_testing import fetch, tpa_cli

    village = fetch(edit_database.name, "SELECT code FROM admin_unit WHERE level = 5 ORDER BY code LIMIT 1")[0][0]
    good = tmp_path / "survey.csv"
    good.write_text("hh_id,area_code,weight,income_pc,psu,size,owns_phone\n"
                    f"a1,{village},12.5,5100,p1,3,1\na2,{village},12.5,8100.5,p1,2,0\n", encoding="utf-8")
    bad = tmp_path / "bad.csv"
    bad.write_text("hh_id,area_code,weight,income_pc\n"
                   f"b1,{village},10,5000\nb2,{village},0,5000\nb1,{village},3,x\n", encoding="utf-8")
    args = ("import", "survey", "--region", "tieling-demo", "--survey", "test-2024", "--year", "2024")
    done = tpa_cli(edit_database, *args, str(bad), check=False)
    assert done.returncode == 1
    said = " ".join((done.stdout + done.stderr).split())
    assert "line 3: weight must be above 0" in said and "line 4: hh_id b1 appears twice" in said, said
    assert "line 4: weight, income_pc and size must be numbers" in said and "Nothing was written" in said
    assert fetch(edit_database.name, "SELECT count(*) FROM survey WHERE survey_id = 'test-2024'")[0][0] == 0
    tpa_cli(edit_database, *args, str(good))
    rows = fetch(edit_database.name, "SELECT hh_id, weight, income_pc, size, properties->>'owns_phone' FROM "
                 "survey_household WHERE survey_id = 'test-2024' ORDER BY hh_id")
    assert [tuple(r) for r in rows] == [("a1", 12.5, 5100.0, 3, "1"), ("a2", 12.5, 8100.5, 2, "0")]
    outside = tmp_path / "outside.csv"
    outside.write_text("hh_id,area_code,weight,income_pc\nc1,999999999999,1,1\n", encoding="utf-8")
    done = tpa_cli(edit_database, *args, str(outside), check=False)
    assert done.returncode == 1 and "not units of the region" in " ".join((done.stdout + done.stderr).split())
    assert fetch(edit_database.name, "SELECT count(*) FROM survey_household WHERE survey_id = 'test-2024'")[0][0] == 2
