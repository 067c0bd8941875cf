"""Early warning of return to poverty (docs/methodology.md#return-risk): the model's metrics against hand
computation, a planted signal the rules cannot see, no leakage from later years (perturbed in the database), the
suppressed village figures, the stored model, and the restricted predictions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from tpa_testing import ThrowawayDatabase, fetch, settings_for

from app.analysis import risk
from app.db import create_engine
from app.models.codes import Role
from app.services import risk as svc


def auth(keys: dict[Role, str], role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[role]}"}


# ------------------------------------------------------------------------------------------- synthetic panel
def synthetic_panel(n: int, years: range, seed: int, signal: float) -> pd.DataFrame:
    """Registry records of ``n`` households out of poverty over ``years``: incomes drift; a household falls into
    poverty the next year with a base chance, raised by the monitoring rules' signal (low income) a little, and by
    a planted signal the rules do not read a lot: high medical costs in a household with no labour."""
    rng = np.random.default_rng(seed)
    rows = []
    earning = rng.lognormal(0.0, 0.3, n)
    labour = rng.integers(0, 3, n)
    for y in years:
        medical = rng.gamma(1.0, 1500.0, n) * (rng.random(n) < 0.5)
        income = 4000.0 * 2.2 * earning * rng.lognormal(0.0, 0.15, n)
        logit = -4.2 + 0.6 * (income < 6000) + signal * ((medical / 4000.0 > 0.25) & (labour == 0))
        fall = rng.random(n) < 1 / (1 + np.exp(-logit))
        for i in range(n):
            rows.append({
                "hh_id": f"h{i:05d}", "year": y, "region": "syn", "village_code": f"v{i % 40:02d}",
                "county": f"c{i % 4}", "status": "exited", "hh_type": "general", "main_cause": "illness",
                "year_exited": 2015, "size": 3, "income_wage": income[i] * 3 * 0.6,
                "income_business": income[i] * 3 * 0.3, "income_property": 0.0,
                "income_transfer": income[i] * 3 * 0.1, "net_income_pc": income[i],
                "income_change": None, "expense_medical": medical[i] * 3, "expense_education": 0.0,
                "loss_disaster": 0.0, "rigid_expense_share": medical[i] / income[i], "poverty_line": 4000.0,
                "house_safety_grade": "B", "water_safe": True, "water_difficulty": False, "arable_mu": 5.0,
                "irrigated_mu": 2.0, "coop_member": False, "microcredit": False, "food_insecure": False,
                "family_doctor": True, "labour": labour[i], "ill": 0, "disabled": 0,
                "rules_fired": int(income[i] < 6000), "_falls_next": bool(fall[i])})
    df = pd.DataFrame(rows)
    # the planted outcome: a household that falls is recorded the next year as returned, with a low income
    nxt = df.groupby("hh_id")["_falls_next"].shift(1).astype("boolean").fillna(False).astype(bool)
    df.loc[nxt, "status"] = "returned"
    df.loc[nxt, "net_income_pc"] = 3000.0
    return df.drop(columns="_falls_next")


def test_metrics_agree_with_hand_computation():
    rng = np.random.default_rng(3)
    y = (rng.random(400) < 0.2).astype(int)
    p = 1 / (1 + np.exp(-(-1.5 + 1.2 * y + rng.normal(0, 1.0, 400))))
    m = risk.metrics(y, p)
    # AUC as the Mann–Whitney probability that a positive outranks a negative (ties count half)
    pos, neg = p[y == 1], p[y == 0]
    auc = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert m["auc"] == pytest.approx(auc, abs=1e-12)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2), abs=1e-12)
    assert (m["n"], m["positives"]) == (400, int(y.sum()))
    table = risk.calibration(y, p)
    assert len(table) == 10 and sum(b["n"] for b in table) == 400
    assert sum(b["observed"] * b["n"] for b in table) == pytest.approx(y.sum())
    assert sum(b["predicted"] * b["n"] for b in table) == pytest.approx(p.sum())
    assert all(b["predicted"] >= a["predicted"] for a, b in zip(table, table[1:], strict=False))
    # the rules baseline: the training outcome rate of households with the same number of rules fired
    train = pd.DataFrame({"rules_fired": [0, 0, 0, 1, 1, 2], "outcome": [0, 0, 1, 1, 0, 1]})
    test = pd.DataFrame({"rules_fired": [0, 1, 2, 3]})
    assert risk.rules_baseline(train, test).tolist() == pytest.approx([1 / 3, 1 / 2, 1.0, 0.5])


def test_the_model_finds_a_planted_signal_the_rules_miss():
    panel = synthetic_panel(3000, range(2016, 2024), seed=7, signal=3.5)
    pairs = risk.pairs(panel)
    assert set(pairs["outcome_year"]) == set(range(2017, 2024))
    checked = risk.validate(pairs, [2021, 2022, 2023], risk.ModelSpec(seed=1), threads=2)
    model, rules = checked.pooled["auc"], checked.baseline["auc"]
    # the margin this test states: the model's time-split AUC beats the rules-only baseline by at least 0.10
    assert model >= rules + 0.10, (model, rules)
    assert checked.pooled["brier"] < checked.baseline["brier"]
    # calibrated on the whole: the mean prediction within 25 % of the observed rate over the test years
    table = checked.calibration
    observed = sum(b["observed"] * b["n"] for b in table)
    predicted = sum(b["predicted"] * b["n"] for b in table)
    assert predicted == pytest.approx(observed, rel=0.25)
    assert [c["county"] for c in checked.by_county] == ["c0", "c1", "c2", "c3"]
    assert all(c["auc"] > c["baseline_auc"] for c in checked.by_county)
    # without the planted signal the model has nothing more than the rules to find
    flat = risk.validate(risk.pairs(synthetic_panel(3000, range(2016, 2024), seed=7, signal=0.0)), [2022, 2023],
                         risk.ModelSpec(seed=1), threads=2)
    assert flat.pooled["auc"] < flat.baseline["auc"] + 0.05


def test_contributions_add_up_to_the_models_log_odds():
    panel = synthetic_panel(600, range(2018, 2022), seed=11, signal=3.0)
    model = risk.fit(risk.pairs(panel), risk.ModelSpec(seed=2), threads=1)
    scored = panel[panel["year"] == 2021].reset_index(drop=True)
    contrib, tops = risk.contributions(model, scored)
    p = risk.predict(model, scored)
    assert contrib.shape == (len(scored), len(risk.FEATURE_NAMES) + 1)
    assert contrib.sum(axis=1) == pytest.approx(np.log(p / (1 - p)), abs=1e-6)
    for row, c in zip(tops, contrib, strict=True):
        assert [t["contribution"] for t in row] == sorted((t["contribution"] for t in row), reverse=True)
        assert all(t["contribution"] > 0 for t in row) and len(row) <= 3
        if row:
            assert row[0]["contribution"] == pytest.approx(c[:-1].max(), abs=1e-4)


def test_village_figures_reveal_no_small_group():
    villages = np.array(["a"] * 4 + ["b"] * 10 + ["c"] * 10 + ["d"] * 10 + ["e"] * 10 + ["f"] * 10)
    p = np.concatenate([[0.9] * 4,                  # a: 4 scored households: nothing
                        [0.9] * 3 + [0.01] * 7,     # b: 3 at high risk: withheld
                        [0.9] * 7 + [0.01] * 3,     # c: 7, leaving 3 not at high risk: withheld
                        [0.9] * 5 + [0.01] * 5,     # d: 5 and 5: published
                        [0.01] * 10,                # e: none at high risk: 0
                        [0.9] * 10])                # f: all ten: published (the other side is empty)
    got = {v["village_code"]: v for v in risk.village_figures(villages, p, 0.5, 5)}
    assert {k: v["high_risk"] for k, v in got.items()} == {"a": None, "b": None, "c": None, "d": 5, "e": 0,
                                                           "f": 10}
    assert {k for k, v in got.items() if v["suppressed"]} == {"a", "b", "c"}
    assert got["a"]["mean_probability"] is None and got["b"]["mean_probability"] == pytest.approx(0.277)


# ------------------------------------------------------------------------------------------- on the demo
@pytest.fixture
async def engine(edit_database: ThrowawayDatabase) -> AsyncIterator:
    settings = settings_for(edit_database.url)
    eng = create_engine(settings.db)
    try:
        yield eng, settings.security
    finally:
        await eng.dispose()


SMALL = risk.ModelSpec(n_estimators=30, seed=5)


async def test_a_model_trained_until_t_never_reads_later_records(engine, edit_database):
    eng, security = engine
    before = await svc.load_records(eng, security, "tieling-demo", until=2022)
    assert svc.years_of(before) == list(range(2016, 2023))
    model = risk.fit(risk.pairs(before), SMALL, threads=2)
    scored = before[before["year"] == 2022]
    # every field of every later record perturbed: statuses, incomes, costs, grades, land
    fetch(edit_database.name, """
        UPDATE household_history SET status = 'returned', net_income_pc = net_income_pc * 0.1 + 17,
          income_wage = 0, expense_medical = 99999, loss_disaster = 12345, house_safety_grade = 'D',
          arable_mu = arable_mu + 7, coop_member = NOT coop_member WHERE valid_from >= DATE '2023-01-01'""")
    fetch(edit_database.name, """
        UPDATE household SET status = 'poor', net_income_pc = 1, microcredit = NOT microcredit, year_exited = NULL
        WHERE valid_from >= DATE '2023-01-01'""")
    # and members changed from 2023: the record until 2023 kept as history, a new one ill and unable to work
    fetch(edit_database.name, """
        WITH changed AS (SELECT * FROM person WHERE labour IN ('ordinary', 'skilled') ORDER BY person_id LIMIT 3000),
        kept AS (INSERT INTO person_history SELECT (jsonb_populate_record(NULL::person_history, to_jsonb(c)
                 || jsonb_build_object('valid_to', DATE '2023-01-01'))).* FROM changed c)
        UPDATE person p SET labour = 'lost', health = 'major_illness', valid_from = DATE '2023-01-01'
        FROM changed c WHERE p.person_id = c.person_id""")
    after = await svc.load_records(eng, security, "tieling-demo", until=2022)
    pd.testing.assert_frame_equal(before, after)
    again = risk.fit(risk.pairs(after), SMALL, threads=2)
    assert again.booster_.model_to_string() == model.booster_.model_to_string()
    assert np.array_equal(risk.predict(again, after[after["year"] == 2022]), risk.predict(model, scored))
    # and the later records did change: a model reading them would differ
    moved = await svc.load_records(eng, security, "tieling-demo", until=2023)
    assert (moved.loc[moved["year"] == 2023, "status"] != "exited").all()
    later, earlier = moved[moved["year"] == 2023], moved[moved["year"] == 2022]
    assert later["labour"].sum() < earlier["labour"].sum() and later["ill"].sum() > earlier["ill"].sum()


async def test_return_risk_stores_the_model_and_restricts_its_predictions(editor: httpx.AsyncClient, edit_keys,
                                                                          edit_database):
    # checks the method: methodology#return-risk
    admin, analyst = auth(edit_keys, Role.admin), auth(edit_keys, Role.analyst)
    url = "/processes/return-risk/execution"
    body = {"inputs": {"region": "tieling-demo", "until": 2021, "validate_years": 2, "trees": 40}}
    r = await editor.post(url, json=body)
    assert r.status_code == 401
    r = await editor.post(url, headers=analyst, json=body)
    assert r.status_code == 403 and "dry_run" in r.json()["detail"]
    r = await editor.post(url, headers=analyst, json={"inputs": {**body["inputs"], "until": 2017, "dry_run": True}})
    assert r.status_code == 400 and "too few years" in r.json()["detail"]
    r = await editor.post(url, headers=admin, json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    model_id = out["model_id"]
    assert out["trained"] == {"trained_from": 2016, "trained_until": 2021, "scored_year": 2021,
                              "household_years": out["trained"]["household_years"],
                              "positives": out["trained"]["positives"]}
    assert [y["outcome_year"] for y in out["validation"]["by_year"]] == [2020, 2021]
    assert all(y["trained_until"] == y["outcome_year"] - 1 for y in out["validation"]["by_year"])
    # the stored model: its period, features, metrics, library versions, and a model that gives the same scores
    row = fetch(edit_database.name, "SELECT trained_from, trained_until, scored_year, features, metrics, libraries, "
                                    "model, threshold FROM risk_model WHERE model_id = $1", model_id)[0]
    assert (row[0], row[1], row[2]) == (2016, 2021, 2021)
    import json

    features, metrics, libraries = json.loads(row[3]), json.loads(row[4]), json.loads(row[5])
    assert [f["name"] for f in features] == list(risk.FEATURE_NAMES)
    assert metrics["validation"] == out["validation"] and metrics["calibration"] == out["calibration"]
    assert libraries["lightgbm"] == lgb.__version__ and "scikit-learn" in libraries
    preds = fetch(edit_database.name, "SELECT hh_id, probability, high_risk, factors FROM risk_prediction "
                                      "WHERE model_id = $1", model_id)
    settings = settings_for(edit_database.url)
    eng = create_engine(settings.db)
    try:
        records = await svc.load_records(eng, settings.security, "tieling-demo", until=2021)
    finally:
        await eng.dispose()
    scored = records[(records["year"] == 2021) & records["status"].isin(risk.WATCHED)].reset_index(drop=True)
    assert len(preds) == len(scored) == out["scored"]["households"]
    booster = lgb.Booster(model_str=row[6])
    again = booster.predict(risk.features(scored))
    stored = dict((p[0], p[1]) for p in preds)
    assert np.allclose([stored[h] for h in scored["hh_id"]], again, atol=1e-12)
    assert sum(p[2] for p in preds) == out["scored"]["high_risk"] == int((again >= row[7]).sum())
    # the village figures: the oracle's suppression of the stored probabilities, published anonymously
    by_village = dict(fetch(edit_database.name, "SELECT hh_id, village_code FROM risk_prediction WHERE model_id = $1",
                            model_id))
    want = {v["village_code"]: v for v in risk.village_figures(
        np.array([by_village[p[0]] for p in preds]), np.array([p[1] for p in preds]), row[7], 5)}
    page = (await editor.get("/collections/village-risk/items", params={"limit": 5000})).json()
    got = {f["id"]: f["properties"] for f in page["features"]}
    assert set(got) == set(want)
    for code, v in want.items():
        assert (got[code]["high_risk"], got[code]["suppressed"]) == (v["high_risk"], v["suppressed"]), code
        assert got[code]["mean_probability"] == pytest.approx(v["mean_probability"])
    # the predictions: analysts (displaced points) and administrators only, through every path
    fid = f"{model_id}:{scored['hh_id'][0]}"
    for path in ("/collections/risk-predictions", "/collections/risk-predictions/items",
                 f"/collections/risk-predictions/items/{fid}", "/collections/risk-predictions/queryables",
                 "/collections/risk-predictions/items?filter=probability > 0.5",
                 "/collections/risk-predictions/tiles/WebMercatorQuad/8/215/94"):
        assert (await editor.get(path)).status_code in (401, 404), path
    assert "risk-predictions" not in {c["id"] for c in (await editor.get("/collections")).json()["collections"]}
    link = out["predictions"]["href"]
    page = (await editor.get(link, headers=analyst, params={"limit": 1})).json()
    assert page["numberMatched"] == len(scored)
    seen = {}
    for role in (Role.analyst, Role.admin):
        for coll, item in (("risk-predictions", fid), ("households", scored["hh_id"][0])):
            r = await editor.get(f"/collections/{coll}/items/{item}", headers=auth(edit_keys, role))
            assert r.status_code == 200, r.text
            seen[role, coll] = r.json()["geometry"]["coordinates"]
    assert seen[Role.analyst, "risk-predictions"] == seen[Role.analyst, "households"]
    assert seen[Role.admin, "risk-predictions"] != seen[Role.analyst, "risk-predictions"]
