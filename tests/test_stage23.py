"""Stages 2 and 3: needs assessment, needs–project matching, coupling coordination and the MPI.

Hand-computed oracles, the published reference values of DOMAIN §9, and a second, independent (loop-based)
implementation of each analysis in this file; then the demo region end to end through the HTTP API.
"""

from __future__ import annotations

import math
import random
from typing import Any

import httpx
import numpy as np
import pytest
from tpa_testing import ThrowawayDatabase, fetch

from app.analysis import coupling as cp
from app.analysis import matching as mt
from app.analysis import mpi as af
from app.analysis import needs as nd
from app.analysis.spatial import AnalysisError
from app.models.codes import Role

R_KM = 6371.0088


def _hav(a: tuple[float, float], b: tuple[float, float]) -> float:
    (lo1, la1), (lo2, la2) = a, b
    p1, p2 = math.radians(la1), math.radians(la2)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lo2 - lo1) / 2) ** 2
    return 2 * R_KM * math.asin(math.sqrt(h))


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _items(c: httpx.AsyncClient, href: str, key: str | None = None, **params: Any) -> dict[str, Any]:
    r = await c.get(href.replace("http://testserver", ""), params={"limit": 10000, **params},
                    headers=_auth(key) if key else {})
    assert r.status_code == 200, r.text
    return r.json()


# ============================================================================ coupling coordination (§7)
def test_coupling_reference_values_and_bands():
    # checks the method: methodology#coupling, methodology#coupling-bands, methodology#lag-type
    c, t, d = cp.coupling(np.array([[0.6, 0.4], [0.8, 0.2]]), np.array([0.5, 0.5]))
    assert c[0] == pytest.approx(0.9797958971, abs=1e-10) and t[0] == pytest.approx(0.5)
    assert d[0] == pytest.approx(0.6999271023, abs=1e-10)
    assert c[1] == pytest.approx(0.8, abs=1e-12) and d[1] == pytest.approx(0.6324555320, abs=1e-10)
    assert cp.D_BANDS[cp.d_band(d[0]) - 1] == ("初级协调", "primary coordination")
    assert cp.lag_type(0.8, 0.2, 0.1) == "production-lagging"
    # the band edges: (lower, upper], D = 0 in class 1; a D of 0.7 reached through rounding (0.1·7 =
    # 0.7000000000000001) must stay in class 7, where a naive ceil(10·D) gives 8
    x = 0.1 * 7
    assert x != 0.7 and math.ceil(10 * x) == 8 and cp.d_band(x) == 7 and cp.d_band(0.7) == 7
    assert [cp.d_band(x) for x in (0.0, 0.1, 0.1000001, 0.5, 0.7 + 1e-14, 0.70001, 0.9, 1.0)] == \
        [1, 1, 2, 5, 7, 8, 9, 10]
    assert [cp.c_band(x) for x in (0.0, 0.3, 0.30001, 0.5, 0.8, 0.80001, 1.0)] == [1, 1, 2, 2, 3, 4, 4]
    assert cp.C_BANDS[3] == ("高水平耦合", "high-level coupling")
    assert cp.lag_type(0.7, 0.6, 0.1) == "synchronous"  # 0.7 − 0.6 = 0.09999999999999998
    assert cp.lag_type(0.6, 0.7, 0.1) == "synchronous"
    assert cp.lag_type(0.3, 0.5, 0.1) == "living-lagging"
    # n subsystems: C = n·[ΠU / (ΣU)^n]^(1/n); equal U → C = 1; one U = 0 → C = 0; all 0 → C = 0
    c3, t3, d3 = cp.coupling(np.array([[0.2, 0.4, 0.6], [0.5, 0.5, 0.5], [0.0, 0.5, 0.9], [0, 0, 0]]),
                             np.array([0.2, 0.3, 0.5]))
    assert c3[0] == pytest.approx(3 * (0.2 * 0.4 * 0.6 / 1.2 ** 3) ** (1 / 3), abs=1e-12)
    assert t3[0] == pytest.approx(0.2 * 0.2 + 0.3 * 0.4 + 0.5 * 0.6)
    assert d3[0] == pytest.approx(math.sqrt(c3[0] * t3[0]))
    assert list(c3[1:]) == [1.0, 0.0, 0.0] and d3[3] == 0.0


def test_entropy_weights_by_hand():
    # checks the method: methodology#entropy
    # x = [[1, 10], [2, 20], [3, 10]], both benefit indicators:
    # x'1 = (0, 0.5, 1) → p = (0, 1/3, 2/3); e1 = −(1/ln 3)(1/3 ln 1/3 + 2/3 ln 2/3) = 0.5793801642
    # x'2 = (0, 1, 0) → p = (0, 1, 0); e2 = 0; d = (0.4206198358, 1); w = d / 1.4206198358
    xn = cp.normalise(np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 10.0]]), np.array([True, True]))
    ew = cp.entropy_weights(xn)
    assert ew.entropy == pytest.approx([0.5793801642, 0.0], abs=1e-10)
    assert ew.weights == pytest.approx([0.4206198358 / 1.4206198358, 1 / 1.4206198358], abs=1e-10)
    # a negative indicator is reversed; a constant column gets weight 0
    xn = cp.normalise(np.array([[1.0, 5.0, 4.0], [2.0, 5.0, 2.0], [3.0, 5.0, 0.0]]), np.array([True, True, False]))
    assert xn[:, 1].tolist() == [0, 0, 0] and xn[:, 2].tolist() == [0.0, 0.5, 1.0]
    ew = cp.entropy_weights(xn)
    assert ew.weights[1] == 0.0 and ew.weights[0] == pytest.approx(ew.weights[2])
    assert sum(ew.weights) == pytest.approx(1)
    # every column constant: U = 0 whatever the weights (equal weights, noted)
    ew = cp.entropy_weights(np.zeros((4, 2)))
    assert ew.weights.tolist() == [0.5, 0.5] and "constant" in ew.note
    with pytest.raises(AnalysisError, match="at least two units"):
        cp.entropy_weights(np.ones((1, 2)))


def _ref_coupling(rows: list[dict[str, Any]], subsystems: list[dict[str, Any]], tol: float = 0.1) -> list[dict]:
    """A second implementation with loops and math (entropy over all rows, α = 1/n)."""
    m = len(rows)
    us = []
    for sub in subsystems:
        cols = []
        for ind in sub["indicators"]:
            v = [float(r[ind["property"]]) for r in rows]
            lo, hi = min(v), max(v)
            if hi == lo:
                cols.append([0.0] * m)
            elif ind.get("direction", "+") == "+":
                cols.append([(x - lo) / (hi - lo) for x in v])
            else:
                cols.append([(hi - x) / (hi - lo) for x in v])
        ds = []
        for col in cols:
            s = sum(col)
            if s == 0:
                ds.append(0.0)
                continue
            e = 0.0
            for x in col:
                if x > 0:
                    e -= (x / s) * math.log(x / s)
            ds.append(1 - e / math.log(m))
        ws = [dj / sum(ds) for dj in ds]
        us.append([sum(ws[j] * cols[j][i] for j in range(len(cols))) for i in range(m)])
    out = []
    n = len(subsystems)
    for i in range(m):
        u = [us[k][i] for k in range(n)]
        s = sum(u)
        c = 0.0 if s == 0 else n * (math.prod(u) / s ** n) ** (1 / n)
        t = sum(u) / n
        d = math.sqrt(c * t)
        lag = ("synchronous" if abs(u[0] - u[1]) <= tol + 1e-12 else
               "production-lagging" if u[1] < u[0] else "living-lagging")
        out.append({"u": u, "c": c, "t": t, "d": d, "lag": lag,
                    "band": min(10, max(1, math.ceil(round(d, 12) * 10))) if d > 0 else 1})
    return out


async def test_coupling_process_equals_second_implementation(editor: httpx.AsyncClient):
    rng = random.Random(7)
    rows = [{"unit": f"v{i % 20}", "year": 2018 + i // 20, "food": rng.random(), "house": rng.uniform(0, 5),
             "water": 3.0, "labour": rng.random(), "land": rng.uniform(0, 3), "road": rng.choice([0, 1 / 3, 1]),
             "internet": rng.random()} for i in range(60)]
    subs = [{"name": "living", "indicators": [{"property": "food", "direction": "-"},
                                              {"property": "house", "direction": "-"},
                                              {"property": "water", "direction": "-"}]},
            {"name": "production", "indicators": [{"property": "labour"}, {"property": "land"},
                                                  {"property": "road"}]},
            {"name": "digital", "indicators": [{"property": "internet"}]}]
    r = await editor.post("/processes/coupling-coordination/execution", json={"inputs": {
        "units": rows, "subsystems": subs, "period_property": "year", "unit_property": "unit"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["weights"]["living"]["pooled"]["indicators"]["water"]["weight"] == 0.0  # constant column
    feats = (await _items(editor, body["units"]["href"]))["features"]
    assert len(feats) == 60
    ref = _ref_coupling(rows, subs)
    by_id = {f["id"]: f["properties"] for f in feats}
    for row, want in zip(rows, ref, strict=True):
        got = by_id[f"{row['unit']}:{row['year']}"]
        assert [got["u1"], got["u2"], got["u3"]] == pytest.approx(want["u"], abs=1e-12)
        assert got["c"] == pytest.approx(want["c"], abs=1e-12) and got["t"] == pytest.approx(want["t"], abs=1e-12)
        assert got["d"] == pytest.approx(want["d"], abs=1e-12)
        assert got["d_class"] == want["band"] and got["lag_type"] == want["lag"]
        assert got["d_band_en"] == cp.D_BANDS[want["band"] - 1][1] and got["period"] == str(row["year"])
    assert set(body["summary"]["periods"]) == {"2018", "2019", "2020"}

    # the two-system reference values over HTTP, with given weights
    two = [{"id": "a", "l": 0.6, "p": 0.4}, {"id": "b", "l": 0.8, "p": 0.2}, {"id": "lo", "l": 0.0, "p": 0.0},
           {"id": "hi", "l": 1.0, "p": 1.0}]
    r = await editor.post("/processes/coupling-coordination/execution", json={"inputs": {
        "units": two, "weighting": "given",
        "subsystems": [{"name": "living", "indicators": [{"property": "l", "weight": 1}]},
                       {"name": "production", "indicators": [{"property": "p", "weight": 1}]}]}})
    assert r.status_code == 200, r.text
    props = {f["id"]: f["properties"] for f in (await _items(editor, r.json()["units"]["href"]))["features"]}
    # min–max over the four rows leaves 0.6/0.4 and 0.8/0.2 unchanged (min 0, max 1)
    assert props["a"]["d"] == pytest.approx(0.6999271023, abs=1e-10) and props["a"]["d_band_zh"] == "初级协调"
    assert props["b"]["c"] == pytest.approx(0.8, abs=1e-12) and props["b"]["lag_type"] == "production-lagging"
    assert props["lo"]["d_class"] == 1 and props["lo"]["c"] == 0.0 and props["hi"]["d_class"] == 10


async def test_coupling_edge_cases(editor: httpx.AsyncClient):
    rows = [{"id": str(i), "a": i, "b": 1.0} for i in range(5)]
    one = {"name": "living", "indicators": [{"property": "a"}]}
    for subs in ([], [one]):
        r = await editor.post("/processes/coupling-coordination/execution", json={"inputs": {"units": rows,
                                                                                        "subsystems": subs}})
        assert r.status_code == 400 and "subsystems" in r.text and "at least 2" in r.text
    r = await editor.post("/processes/coupling-coordination/execution", json={"inputs": {"units": rows, "subsystems": [
        one, {"name": "empty", "indicators": []}]}})
    assert r.status_code == 400
    # a subsystem whose only indicator is constant: U2 = 0 everywhere, so C = 0 and D = 0
    r = await editor.post("/processes/coupling-coordination/execution", json={"inputs": {"units": rows, "subsystems": [
        one, {"name": "production", "indicators": [{"property": "b"}]}]}})
    assert r.status_code == 200, r.text
    assert "constant" in r.json()["weights"]["production"]["pooled"]["note"]
    props = [f["properties"] for f in (await _items(editor, r.json()["units"]["href"]))["features"]]
    assert {p["u2"] for p in props} == {0.0} and {p["d"] for p in props} == {0.0}
    r = await editor.post("/processes/coupling-coordination/execution", json={"inputs": {"units": [], "subsystems": [
        one, {"name": "production", "indicators": [{"property": "b"}]}]}})
    assert r.status_code == 400
    r = await editor.post("/processes/coupling-coordination/execution", json={"inputs": {
        "units": rows[:1], "subsystems": [one, {"name": "production", "indicators": [{"property": "b"}]}]}})
    assert r.status_code == 400 and "at least two units" in r.text


# ============================================================================ MPI (§2.5)
def _global_row(**deprived: int) -> dict[str, int]:
    return {ind.code: deprived.get(ind.code, 0) for ind in af.GLOBAL_MPI}


def test_alkire_foster_by_hand():
    # checks the method: methodology#mpi
    rows = [_global_row(nutrition=1, cooking_fuel=1, sanitation=1, drinking_water=1),  # 1/6 + 3/18: poor
            _global_row(school_attendance=1, electricity=1),  # 4/18: vulnerable
            _global_row(nutrition=1, child_mortality=1, years_of_schooling=1),  # 1/2: severe
            _global_row()]
    size = np.array([2.0, 3.0, 1.0, 4.0])
    codes = [i.code for i in af.GLOBAL_MPI]
    g = np.array([[r[c] for c in codes] for r in rows], dtype=float)
    w = np.array([i.weight for i in af.GLOBAL_MPI])
    r = af.alkire_foster(g, w, size, 1 / 3, ["A", "A", "B", "B"], codes)
    assert r.poor.tolist() == [True, False, True, False]
    o = r.overall
    assert o["H"] == pytest.approx(0.3) and o["A"] == pytest.approx((2 / 3 + 0.5) / 3)
    assert o["MPI"] == pytest.approx((2 / 3 + 0.5) / 10) and o["MPI"] == pytest.approx(o["H"] * o["A"])
    assert o["vulnerable"] == pytest.approx(0.3) and o["severe"] == pytest.approx(0.1)
    assert o["censored_headcount"]["nutrition"] == pytest.approx(0.3)
    assert o["censored_headcount"]["school_attendance"] == 0.0  # the household is not poor: censored
    assert o["contribution"]["nutrition"] == pytest.approx((1 / 6 * 0.3) / o["MPI"])
    assert sum(o["contribution"].values()) == pytest.approx(1.0)
    assert r.groups["A"]["H"] == pytest.approx(0.4) and r.groups["A"]["MPI"] == pytest.approx(2 / 15)
    assert r.groups["B"]["A"] == pytest.approx(0.5) and r.groups["B"]["MPI"] == pytest.approx(0.1)
    # the floating-point cut-off: 0.3 + 0.6 = 0.8999999999999999 < 0.9, still poor at k = 0.9
    assert 0.3 + 0.6 < 0.9
    r = af.alkire_foster(np.array([[1.0, 1.0, 0.0]]), np.array([0.3, 0.6, 0.1]), np.array([1.0]), 0.9)
    assert r.poor.tolist() == [True]
    # missing indicators pass their weight within the dimension
    wmap, notes = af.reweight(af.GLOBAL_MPI, {i.code for i in af.GLOBAL_MPI} - {"child_mortality", "assets"})
    assert wmap["nutrition"] == pytest.approx(1 / 3) and wmap["housing"] == pytest.approx(1 / 15)
    assert sum(wmap.values()) == pytest.approx(1.0) and len(notes) == 2


def _ref_mpi(rows: list[dict[str, Any]], codes: list[str], w: dict[str, float], k: float) -> dict[str, float]:
    """Per person, with fractions: a second implementation."""
    from fractions import Fraction

    persons = []
    for r in rows:
        c = sum(Fraction(w[j]).limit_denominator(1000) * r[j] for j in codes)
        persons += [(c, r)] * int(r["size"])
    kf = Fraction(k).limit_denominator(1000)
    poor = [(c, r) for c, r in persons if c >= kf]
    n = len(persons)
    mpi = float(sum(c for c, _ in poor) / n)
    return {"H": len(poor) / n, "MPI": mpi, "A": float(sum(c for c, _ in poor) / len(poor)) if poor else None,
            "vulnerable": sum(1 for c, _ in persons if Fraction(1, 5) <= c < kf) / n,
            "severe": sum(1 for c, _ in persons if c >= Fraction(1, 2)) / n,
            **{f"ch_{j}": sum(r[j] for _, r in poor) / n for j in codes}}


async def test_mpi_process_equals_second_implementation(editor: httpx.AsyncClient):
    # checks the method: methodology#mpi
    rng = random.Random(3)
    codes = [i.code for i in af.GLOBAL_MPI]
    rows = [{"id": f"h{i}", "size": rng.randint(1, 6), "county": rng.choice(["c1", "c2", "c3"]),
             **{c: int(rng.random() < 0.3) for c in codes}} for i in range(300)]
    r = await editor.post("/processes/mpi/execution", json={"inputs": {"households": rows, "group_by": "county"}})
    assert r.status_code == 200, r.text
    body = r.json()
    w = {i.code: i.weight for i in af.GLOBAL_MPI}
    want = _ref_mpi(rows, codes, w, 1 / 3)
    for key in ("H", "MPI", "A", "vulnerable", "severe"):
        assert body["overall"][key] == pytest.approx(want[key], abs=1e-12), key
    for c in codes:
        assert body["overall"]["censored_headcount"][c] == pytest.approx(want[f"ch_{c}"], abs=1e-12)
    units = {f["id"]: f["properties"] for f in (await _items(editor, body["units"]["href"]))["features"]}
    assert set(units) == {"c1", "c2", "c3"}
    for county, p in units.items():
        ref = _ref_mpi([x for x in rows if x["county"] == county], codes, w, 1 / 3)
        assert p["mpi"] == pytest.approx(ref["MPI"], abs=1e-12) and p["h"] == pytest.approx(ref["H"], abs=1e-12)
        assert p["ch_nutrition"] == pytest.approx(ref["ch_nutrition"], abs=1e-12)
        assert sum(p[f"contrib_{c}"] for c in codes) == pytest.approx(1.0)
    # custom indicators and k; a missing value excludes its household; bad values and weights are refused
    custom = [{"code": "a", "dimension": "x", "weight": 0.3}, {"code": "b", "dimension": "x", "weight": 0.6},
              {"code": "c", "dimension": "y", "weight": 0.1}]
    hh = [{"id": "1", "size": 1, "g": "z", "a": 1, "b": 1, "c": 0}, {"id": "2", "size": 3, "g": "z", "a": 1,
                                                                      "b": None, "c": 1}]
    r = await editor.post("/processes/mpi/execution", json={"inputs": {"households": hh, "indicators": custom, "k": 0.9,
                                                                   "group_by": "g"}})
    assert r.status_code == 200, r.text
    assert r.json()["overall"]["H"] == 1.0 and r.json()["overall"]["households_excluded_missing"] == 1
    hh[0]["a"] = 2
    r = await editor.post("/processes/mpi/execution", json={"inputs": {"households": hh, "indicators": custom,
                                                                   "group_by": "g"}})
    assert r.status_code == 400 and "0 or 1" in r.text
    custom[0]["weight"] = 0.5
    r = await editor.post("/processes/mpi/execution", json={"inputs": {"households": hh, "indicators": custom}})
    assert r.status_code == 400 and "sum to 1" in r.text


# ============================================================================ needs (§6.1)
TABLE = nd.CauseTable(
    needs={"lack_water": {"L_WATER", "P_IRRIG"}, "illness": {"L_HEALTH"}, "disaster": {"L_HOUSE", "L_FOOD"}},
    types={"lack_water": ["infrastructure_water"], "illness": ["health", "social_security"],
           "disaster": ["housing_renovation"]})
HH_A = {"id": "A", "size": 4, "net_income_pc": 3000, "ill_members": 1, "uninsured_members": 0, "clinic_km": 30,
        "house_safety_grade": "C", "water_safe": True, "water_difficulty": False, "dropout_children": 0,
        "ordinary_labour": 1, "skilled_labour": 1, "arable_mu": 2.8, "irrigated_mu": 0.7, "access_road": "gravel",
        "market_km": 5, "coop_member": False, "microcredit": True, "main_cause": "lack_water",
        "village_code": "v1"}
HH_B = {"id": "B", "size": 2, "net_income_pc": 5000, "clinic_min": 10, "house_safety_grade": "A", "water_safe": True,
        "ordinary_labour": 2, "skilled_labour": 0, "arable_mu": 0, "access_road": "asphalt", "coop_member": True,
        "microcredit": False, "main_cause": "other", "village_code": "v1", "food_insecure": False}


def test_need_scores_by_hand():
    # checks the method: methodology#living-needs, methodology#production-needs, methodology#priors,
    # methodology#ln, methodology#recommendations
    a = nd.assess([HH_A, HH_B], nd.NeedRules(poverty_line=4000), TABLE)
    s = {n: a.scores[n].tolist() for n in nd.NEEDS}
    # A: income 3000 < 4000 → L_FOOD 1; illness 0.5 + clinic 30 km at 30 km/h = 60 min → 0.2·1 → L_HEALTH 0.7;
    # grade C → 0.7; water fine but the main cause lack_water lifts L_WATER to the prior 0.5
    assert [s[n][0] for n in nd.LIVING] == pytest.approx([1, 0, 0, 0.7, 0.7, 0.5])
    # labour (1+1)/4 → P_JOB 0.5; 1 skilled of 2 workers → P_SKILL 0.5; 2.8 mu / 4 = 0.7 per person / 1.4 → P_LAND 0.5;
    # irrigated 0.7 / 2.8 → P_IRRIG 0.75; gravel → P_ROAD 2/3; 5 km / 20 → P_MARKET 0.25; no coop → P_INDUSTRY 1
    want_a = {"P_JOB": 0.5, "P_SKILL": 0.5, "P_LAND": 0.5, "P_IRRIG": 0.75, "P_ROAD": 2 / 3, "P_MARKET": 0.25,
              "P_INDUSTRY": 1.0, "P_CAPITAL": 0.0, "P_MOTIV": 0.0}
    assert {n: s[n][0] for n in want_a} == pytest.approx(want_a)
    assert a.ln_max[0] == 1.0 and a.ln_mean[0] == pytest.approx(2.9 / 6)
    assert a.active[0] == ["L_FOOD", "L_HEALTH", "L_HOUSE", "L_WATER", "P_SKILL", "P_JOB", "P_LAND", "P_IRRIG",
                           "P_ROAD", "P_INDUSTRY"]
    # recommendations: housing_renovation via L_FOOD (1.0), infrastructure_water via P_IRRIG (0.75), health via
    # L_HEALTH (0.7; ties with social_security, alphabetical)
    assert a.recommended[0] == ["housing_renovation", "infrastructure_water", "health"]
    # B: clinic 10 min → 0; no land → P_LAND 1, P_IRRIG 0; asphalt → 0; no credit → P_CAPITAL 1; no priors
    assert [s[n][1] for n in nd.LIVING] == [0, 0, 0, 0, 0, 0] and a.ln_max[1] == 0
    assert (s["P_LAND"][1], s["P_IRRIG"][1], s["P_ROAD"][1], s["P_CAPITAL"][1], s["P_JOB"][1]) == (1, 0, 0, 1, 0)
    assert a.recommended[1] == []  # P_LAND and P_CAPITAL link to no type in this table
    import orjson

    ex = orjson.loads(a.explain[0])
    assert ex["L_HEALTH"] == {"ill_members": 1, "family_doctor": False, "uninsured_members": 0, "clinic_min": 60.0}
    assert ex["P_SKILL"] == {"skilled_labour": 1, "labour": 2}
    assert ex["prior"] == {"main_cause": "lack_water", "raised": ["L_WATER"]}
    assert ex["recommended_for"]["infrastructure_water"] == "P_IRRIG"
    with pytest.raises(AnalysisError, match="size"):
        nd.assess([{**HH_B, "size": 0}], nd.NeedRules(poverty_line=1), TABLE)


def test_need_rules_for_labour_doctors_and_exited_households():
    # checks the method: methodology#production-needs, methodology#priors, methodology#living-needs
    rules = nd.NeedRules(poverty_line=4000)
    # C: nobody able to work; the main cause (lack_water) would lift P_IRRIG to 0.5: labour needs stay 0
    hh_c = {**HH_A, "id": "C", "ordinary_labour": 0, "skilled_labour": 0}
    # D: as A, exited: no priors (L_WATER back to 0); a family doctor removes the illness term (0.2 left)
    hh_d = {**HH_A, "id": "D", "status": "exited", "family_doctor": True}
    # E: as D, monitored: the priors apply again
    hh_e = {**hh_d, "id": "E", "status": "monitored"}
    a = nd.assess([hh_c, hh_d, hh_e], rules, TABLE)
    s = {n: a.scores[n].tolist() for n in nd.NEEDS}
    assert [s[n][0] for n in nd.labour_dependent(rules)] == [0.0] * 6
    assert s["P_ROAD"][0] == pytest.approx(2 / 3) and s["P_MARKET"][0] == 0.25  # not labour needs
    assert s["L_WATER"][1] == 0.0 and s["L_HEALTH"][1] == pytest.approx(0.2)
    assert s["L_WATER"][2] == 0.5 and s["L_HEALTH"][2] == pytest.approx(0.2)
    # the formulas without these rules: every household, any ill member, every status
    plain = nd.NeedRules(poverty_line=4000, labour_needs=(), illness_term="any", prior_statuses=())
    b = nd.assess([hh_c, hh_d], plain, TABLE)
    assert b.scores["P_IRRIG"][0] == 0.75 and b.scores["P_JOB"][0] == 1.0
    assert b.scores["L_HEALTH"][1] == pytest.approx(0.7) and b.scores["L_WATER"][1] == 0.0
    assert "P_SKILL" in rules.describe()["active"] and "AND NOT family_doctor" in rules.describe()["L_HEALTH"]


def _ref_needs(h: dict[str, Any], line: float, table: nd.CauseTable = TABLE) -> dict[str, float]:
    """The DOMAIN §6.1 rules written out per household (second implementation, default parameters: labour needs
    only with a worker, the illness term without a family doctor, priors for poor, returned and monitored)."""
    size = h["size"]
    workers = (h.get("ordinary_labour") or 0) + (h.get("skilled_labour") or 0)
    clinic = h.get("clinic_min")
    if clinic is None and h.get("clinic_km") is not None:
        clinic = h["clinic_km"] / 30 * 60
    dist = 0.0 if clinic is None else min(1.0, max(0.0, (clinic - 30) / 30))
    arable = h.get("arable_mu") or 0.0
    s = {
        "L_FOOD": 1.0 if (h.get("net_income_pc") is not None and h["net_income_pc"] < line)
        or h.get("food_insecure") else 0.0,
        "L_CLOTH": 1.0 if h.get("clothing_insecure") else 0.0,
        "L_EDU": 1.0 if (h.get("dropout_children") or 0) > 0 else 0.0,
        "L_HEALTH": min(1.0, 0.5 * ((h.get("ill_members") or 0) > 0 and not h.get("family_doctor"))
                        + 0.3 * ((h.get("uninsured_members") or 0) > 0)
                        + 0.2 * dist),
        "L_HOUSE": {"A": 0.0, "B": 0.0, "C": 0.7, "D": 1.0, None: 0.0}[h.get("house_safety_grade")],
        "L_WATER": 1.0 if (h.get("water_safe") is False or h.get("water_difficulty")) else 0.0,
        "P_SKILL": 1 - (h.get("skilled_labour") or 0) / workers if workers else 0.0,
        "P_JOB": 1 - ((h.get("ordinary_labour") or 0) + (h.get("skilled_labour") or 0)) / size,
        "P_CAPITAL": 0.0 if h.get("microcredit") else 1.0,
        "P_LAND": 1 - min(1.0, arable / size / 1.4),
        "P_IRRIG": (1 - min(1.0, (h.get("irrigated_mu") or 0) / arable)) if arable > 0 else 0.0,
        "P_ROAD": 1 - {"dirt": 0, "gravel": 1 / 3, "cement": 2 / 3, "asphalt": 1, None: 1}[h.get("access_road")],
        "P_MARKET": 0.0 if h.get("market_km") is None else min(1.0, h["market_km"] / 20),
        "P_INDUSTRY": 0.0 if h.get("coop_member") else 1.0, "P_MOTIV": 0.0, "P_RELOC": 0.0, "P_RESIL": 0.0,
    }
    if h.get("status") in (None, "poor", "returned", "monitored"):
        for n in table.needs.get(h.get("main_cause"), ()):
            s[n] = max(s[n], 0.5)
    if not workers:
        for n in ("P_SKILL", "P_JOB", "P_CAPITAL", "P_INDUSTRY", "P_LAND", "P_IRRIG"):
            s[n] = 0.0
    return s


async def test_needs_process_inline_equals_second_implementation(editor: httpx.AsyncClient):
    # checks the method: methodology#needs-groups
    rng = random.Random(11)
    rows = []
    for i in range(200):
        size = rng.randint(1, 6)
        ordinary = rng.randint(0, size)
        rows.append({"id": f"h{i}", "size": size, "net_income_pc": rng.uniform(2000, 8000),
                     "food_insecure": rng.random() < 0.1, "clothing_insecure": rng.random() < 0.05,
                     "dropout_children": rng.choice([0, 0, 0, 1]), "ill_members": rng.choice([0, 0, 1, 2]),
                     "uninsured_members": rng.choice([0, 0, 0, 1]),
                     "clinic_km": rng.choice([None, rng.uniform(0, 60)]),
                     "house_safety_grade": rng.choice(["A", "B", "C", "D", None]),
                     "water_safe": rng.choice([True, True, False]), "water_difficulty": rng.random() < 0.2,
                     "ordinary_labour": ordinary, "skilled_labour": rng.randint(0, size - ordinary),
                     "arable_mu": rng.choice([0, rng.uniform(0, 10)]), "irrigated_mu": rng.uniform(0, 3),
                     "access_road": rng.choice(["dirt", "gravel", "cement", "asphalt", None]),
                     "market_km": rng.choice([None, rng.uniform(0, 40)]), "coop_member": rng.random() < 0.3,
                     "microcredit": rng.random() < 0.3, "main_cause": rng.choice(["lack_water", "illness", "other"]),
                     "status": rng.choice([None, "poor", "exited", "monitored"]),
                     "family_doctor": rng.random() < 0.4, "village_code": f"v{i % 7}"})
    table = [{"cause": c, "need": n} for c, ns in TABLE.needs.items() for n in sorted(ns)] + \
            [{"cause": c, "project_type": t} for c, ts in TABLE.types.items() for t in ts]
    r = await editor.post("/processes/needs-assessment/execution", json={"inputs": {
        "households": rows, "poverty_line": 4000, "cause_table": table}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rules"]["L_FOOD"] == "[net_income_pc < 4000] OR food_insecure"
    feats = {f["id"]: f["properties"] for f in (await _items(editor, body["households"]["href"]))["features"]}
    for h in rows:
        want = _ref_needs(h, 4000)
        got = feats[h["id"]]
        assert {n: got[n.lower()] for n in nd.NEEDS} == pytest.approx(want, abs=1e-12), h["id"]
        assert got["ln"] == pytest.approx(max(want[n] for n in nd.LIVING), abs=1e-12)
        assert got["needs"].split(",") == [n for n in nd.NEEDS if want[n] >= 0.5] or got["needs"] == ""
        assert isinstance(got["explain"], dict) and "L_HEALTH" in got["explain"]
    villages = {f["id"]: f["properties"] for f in (await _items(editor, body["villages"]["href"]))["features"]}
    assert set(villages) == {f"v{i}" for i in range(7)}
    members = [h for h in rows if h["village_code"] == "v3"]
    assert villages["v3"]["households"] == len(members)
    assert villages["v3"]["l_health"] == pytest.approx(np.mean([_ref_needs(h, 4000)["L_HEALTH"] for h in members]))
    assert villages["v3"]["l_water_share"] == pytest.approx(
        np.mean([_ref_needs(h, 4000)["L_WATER"] >= 0.5 for h in members]))
    # inline households need a poverty line; unknown codes are refused
    r = await editor.post("/processes/needs-assessment/execution", json={"inputs": {"households": rows[:3]}})
    assert r.status_code == 400 and "poverty_line" in r.text
    r = await editor.post("/processes/needs-assessment/execution", json={"inputs": {
        "households": [{**rows[0], "house_safety_grade": "Z"}], "poverty_line": 1}})
    assert r.status_code == 400 and "house_safety_grade" in r.text


# ============================================================================ matching (§6.2)
def _point(lon: float, lat: float, **props: Any) -> dict[str, Any]:
    return {"type": "Feature", "id": props.pop("id"), "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": props}


async def test_matching_by_hand(editor: httpx.AsyncClient):
    # checks the method: methodology#matching
    # h1 and h2 at one spot both need health; project P (1 slot, 5 km) 0.02° east. h1 (LN 0.9) wins the slot:
    # its cost d·(1.5 − 0.9) beats d·(1.5 − 0.1). h3 needs jobs only: no compatible project. Q is out of reach.
    units = {"type": "FeatureCollection", "features": [
        _point(120.0, 40.0, id="h1", needs="L_HEALTH", ln=0.9, village_code="v"),
        _point(120.0, 40.0, id="h2", needs="L_HEALTH,P_JOB", ln=0.1, village_code="v"),
        _point(120.0, 40.0, id="h3", needs="P_JOB", ln=0.0, village_code="w")]}
    projects = {"type": "FeatureCollection", "features": [
        _point(120.02, 40.0, id="P", addresses_needs=["L_HEALTH"], capacity=1, service_radius_km=5, type="health"),
        _point(120.2, 40.0, id="Q", addresses_needs=["P_JOB"], capacity=5, service_radius_km=5,
               type="employment")]}
    r = await editor.post("/processes/needs-matching/execution", json={"inputs": {"units": units,
                                                                               "projects": projects}})
    assert r.status_code == 200, r.text
    body = r.json()
    d = _hav((120.0, 40.0), (120.02, 40.0))
    assert body["total_cost"] == pytest.approx(round(d * 0.6 * 1000) / 1000 + 2 * 1000, abs=1e-9)
    s = body["summary"]
    assert (s["demand"], s["served"], s["unmet"]) == (3, 1, 2) and s["status"] == "optimal"
    lines = (await _items(editor, body["assignments"]["href"]))["features"]
    assert [(f["properties"]["unit_id"], f["properties"]["project_id"]) for f in lines] == [("h1", "P")]
    assert lines[0]["geometry"]["type"] == "LineString"
    assert lines[0]["properties"]["distance_km"] == pytest.approx(d, rel=1e-9)
    unmet = {f["id"]: f["properties"] for f in (await _items(editor, body["unmet"]["href"]))["features"]}
    assert unmet["v"]["unmet"] == 1 and unmet["w"] == {**unmet["w"], "demand": 1, "unmet": 1,
                                                       "units_without_compatible_project": 1}
    util = {f["id"]: f["properties"] for f in (await _items(editor, body["utilisation"]["href"]))["features"]}
    assert util["P"]["used"] == 1 and util["P"]["utilisation"] == 1.0 and util["Q"]["used"] == 0
    # no priority: the tie breaks on cost alone (equal), still one served; penalty priority also serves h1
    r = await editor.post("/processes/needs-matching/execution", json={"inputs": {
        "units": units, "projects": projects, "priority": "penalty"}})
    lines = (await _items(editor, r.json()["assignments"]["href"]))["features"]
    assert [f["properties"]["unit_id"] for f in lines] == ["h1"]
    # infeasible: no project at all → every unit unmet at the penalty
    r = await editor.post("/processes/needs-matching/execution", json={"inputs": {
        "units": units, "projects": {"type": "FeatureCollection", "features": []}, "penalty": 50}})
    assert r.status_code == 200 and r.json()["total_cost"] == 150.0 and r.json()["summary"]["served"] == 0
    # a penalty below an assignment cost would make serving pointless: refused
    r = await editor.post("/processes/needs-matching/execution", json={"inputs": {
        "units": units, "projects": projects, "penalty": 0.5}})
    assert r.status_code == 400 and "penalty" in r.text


def test_matching_equals_networkx_and_assignment():
    # checks the method: methodology#matching
    import networkx as nx
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(5)
    m, n = 60, 8
    ull = np.column_stack([rng.uniform(120, 120.3, m), rng.uniform(40, 40.3, m)])
    pll = np.column_stack([rng.uniform(120, 120.3, n), rng.uniform(40, 40.3, n)])
    codes = {"L_HEALTH": 0, "P_JOB": 1, "L_EDU": 2}
    umask = mt.need_masks([list(rng.choice(list(codes), rng.integers(1, 3), replace=False)) for _ in range(m)], codes)
    pmask = mt.need_masks([list(rng.choice(list(codes), rng.integers(1, 3), replace=False)) for _ in range(n)], codes)
    radius = rng.uniform(8, 20, n)
    demand = rng.integers(1, 4, m)
    cap = rng.integers(2, 15, n)
    ln = rng.uniform(0, 1, m)
    u, p, d = mt.candidate_pairs(ull, pll, radius, umask, pmask)
    # the pairs are exactly the compatible ones within reach (haversine, independently)
    want = {(i, j) for i in range(m) for j in range(n)
            if umask[i] & pmask[j] and _hav(tuple(ull[i]), tuple(pll[j])) <= radius[j]}
    assert set(zip(u.tolist(), p.tolist(), strict=True)) == want
    for i, j, dk in zip(u, p, d, strict=True):
        assert dk == pytest.approx(_hav(tuple(ull[i]), tuple(pll[j])), rel=1e-9)
    r = mt.min_cost_match(demand, cap, u, p, d, 1.5 - ln, np.full(m, 1000.0))
    g = nx.DiGraph()
    g.add_node("s", demand=-int(demand.sum()))
    g.add_node("t", demand=int(demand.sum()))
    for i in range(m):
        g.add_edge("s", ("u", i), capacity=int(demand[i]), weight=0)
        g.add_edge(("u", i), "t", capacity=int(demand[i]), weight=1000 * 1000)
    for i, j, dk in zip(u, p, d, strict=True):
        g.add_edge(("u", int(i)), ("p", int(j)), capacity=int(demand[i]), weight=int(round(dk * (1.5 - ln[i]) * 1000)))
    for j in range(n):
        g.add_edge(("p", j), "t", capacity=int(cap[j]), weight=0)
    cost_nx = nx.cost_of_flow(g, nx.min_cost_flow(g))
    assert r.total_cost == pytest.approx(cost_nx / 1000, abs=1e-9)
    assert (r.used <= cap).all() and int(r.unmet.sum() + r.flow.sum()) == int(demand.sum())
    # one-to-one with everything compatible and in reach: the assignment problem
    k = 6
    cost = np.array([[_hav(tuple(ull[i]), tuple(pll[j])) for j in range(n)] for i in range(k)])
    uu, pp = np.repeat(np.arange(k), n), np.tile(np.arange(n), k)
    r = mt.min_cost_match(np.ones(k, int), np.ones(n, int), uu, pp, cost[uu, pp], np.ones(k), np.full(k, 1e4))
    rows, cols = linear_sum_assignment(np.rint(cost * 1000))
    assert r.total_cost == pytest.approx(np.rint(cost * 1000)[rows, cols].sum() / 1000, abs=1e-9)


# ============================================================================ the demo region end to end
# The demo's default year: the registry processes read its snapshot unless told another year.
DEMO_SNAPSHOT = "2020-01-01"
REGISTRY = "(SELECT * FROM household UNION ALL SELECT * FROM household_history)"


def _latest_households(db: ThrowawayDatabase) -> int:
    return fetch(db.name, f"SELECT count(*) FROM {REGISTRY} h WHERE valid_from <= '{DEMO_SNAPSHOT}' "
                 f"AND (valid_to IS NULL OR valid_to > '{DEMO_SNAPSHOT}')")[0][0]


async def test_demo_end_to_end(editor: httpx.AsyncClient, edit_database: ThrowawayDatabase, edit_keys: dict[Role, str]):
    key = edit_keys[Role.analyst]
    reg = {"region": "tieling-demo"}
    r = await editor.post("/processes/needs-assessment/execution", json={"inputs": {"households": reg}})
    assert r.status_code == 401
    r = await editor.post("/processes/needs-assessment/execution", json={"inputs": {"households": {"region": "nope"}}},
                      headers=_auth(key))
    assert r.status_code == 400 and "no region" in r.text
    r = await editor.post("/processes/needs-assessment/execution", json={"inputs": {
        "households": {**reg, "admin_code": "no-such-unit"}}}, headers=_auth(key))
    assert r.status_code == 400 and "no households" in r.text  # an empty region

    # released telecom aggregates: one for the H3 cell (res 8) holding a village, one per admin unit
    import h3

    (v1, lon1, lat1), (v2, _, _) = [tuple(x) for x in fetch(edit_database.name, (
        "SELECT code, ST_X(geom_point), ST_Y(geom_point) FROM village ORDER BY code LIMIT 2"))]
    cell = h3.latlng_to_cell(lat1, lon1, 8)
    for unit_type, unit, res, ind in (("h3", cell, 8, "median_radius_of_gyration"), ("admin", v2, None,
                                                                                    "smartphone_share")):
        fetch(edit_database.name, "INSERT INTO telecom_agg (region_id, unit_type, unit_id, h3_res, period, indicator, "
              "value, n_subscribers, suppressed, valid_from, source) VALUES ('tieling-demo', $1, $2, $3, "
              "daterange('2020-10-01', '2020-11-01'), $4, 7.5, 40, false, '2020-10-01', 'test')",
              unit_type, unit, res, ind)
    r = await editor.post("/processes/needs-assessment/execution", json={"inputs": {"households": reg}},
                          headers=_auth(key))
    assert r.status_code == 200, r.text
    needs = r.json()
    n_hh = _latest_households(edit_database)
    assert needs["summary"]["households"] == n_hh
    hh_href, v_href = needs["households"]["href"], needs["villages"]["href"]
    # restricted like the registry: anonymous readers do not see the results
    anon = await editor.get(hh_href.replace("http://testserver", ""))
    assert anon.status_code in (401, 404)
    first = (await _items(editor, hh_href, key, limit=5))
    assert first["numberMatched"] == n_hh
    ex = first["features"][0]["properties"]["explain"]
    assert set(ex) >= {"L_FOOD", "L_HEALTH", "P_JOB", "prior"}
    # the point an analyst sees is the households collection's displaced point
    hid = first["features"][0]["id"]
    same = (await editor.get(f"/collections/households/items/{hid}", headers=_auth(key))).json()
    assert first["features"][0]["geometry"]["coordinates"] == pytest.approx(same["geometry"]["coordinates"],
                                                                          abs=1e-12)
    # one household re-scored from the database by the second implementation
    hid = first["features"][0]["id"]
    row = fetch(edit_database.name, """
        SELECT h.size, h.net_income_pc::float8 AS net_income_pc, h.food_insecure, h.clothing_insecure,
               h.house_safety_grade::text AS house_safety_grade, h.water_safe, h.water_difficulty,
               h.access_road::text AS access_road, h.arable_mu::float8 AS arable_mu,
               h.irrigated_mu::float8 AS irrigated_mu, h.coop_member, h.microcredit, h.main_cause::text AS main_cause,
               h.status::text AS status, h.family_doctor,
               (SELECT count(*) FROM person p WHERE p.hh_id = h.hh_id AND p.labour = 'ordinary') AS ordinary_labour,
               (SELECT count(*) FROM person p WHERE p.hh_id = h.hh_id AND p.labour = 'skilled') AS skilled_labour
        FROM """ + REGISTRY + """ h WHERE h.hh_id = $1 AND h.valid_from <= '""" + DEMO_SNAPSHOT + """'
          AND (h.valid_to IS NULL OR h.valid_to > '""" + DEMO_SNAPSHOT + """')""", hid)[0]
    got = first["features"][0]["properties"]
    causes = fetch(edit_database.name, "SELECT cause::text, need::text FROM cause_need_project "
                   "WHERE region_id IS NULL AND need IS NOT NULL")
    table = nd.CauseTable({}, {})
    for c, n in causes:
        table.needs.setdefault(c, set()).add(n)
    want = _ref_needs({**dict(row), "market_km": None}, 4000.0, table)
    for n in ("L_FOOD", "L_CLOTH", "L_HOUSE", "L_WATER", "P_SKILL", "P_JOB", "P_CAPITAL", "P_LAND", "P_IRRIG",
              "P_ROAD", "P_INDUSTRY", "P_MOTIV", "P_RELOC", "P_RESIL"):
        assert got[n.lower()] == pytest.approx(want[n], abs=1e-12), n
    villages = (await _items(editor, v_href, key))["features"]
    assert sum(f["properties"]["households"] for f in villages) == n_hh
    by_code = {f["id"]: f["properties"] for f in villages}
    assert by_code[v1]["tc_median_radius_of_gyration"] == 7.5 and by_code[v1]["tc_smartphone_share"] is None
    assert by_code[v2]["tc_smartphone_share"] == 7.5
    assert all(f["geometry"] is not None for f in villages)

    # match the households in need to the demo projects
    r = await editor.post("/processes/needs-matching/execution", json={"inputs": {
        "units": {"href": hh_href.replace("http://testserver", "") + "?filter=n_needs > 0"},
        "projects": {"href": "/collections/projects/items"}}}, headers=_auth(key))
    assert r.status_code == 200, r.text
    m = r.json()
    assert m["summary"]["served"] + m["summary"]["unmet"] == m["summary"]["demand"] > 0
    util = (await _items(editor, m["utilisation"]["href"], key))["features"]
    assert all(f["properties"]["capacity"] is None or f["properties"]["used"] <= f["properties"]["capacity"]
               for f in util)
    assert sum(f["properties"]["used"] for f in util) == m["summary"]["served"]
    lines = (await _items(editor, m["assignments"]["href"], key, limit=500))["features"]
    radius = {f["id"]: f["properties"]["radius_km"] for f in util}
    assert lines and all(f["properties"]["distance_km"] <= radius[f["properties"]["project_id"]] + 1e-9
                         for f in lines)

    # villages as units: their households in need are the demand; an explicit null overrides a default
    r = await editor.post("/processes/needs-matching/execution", json={"inputs": {
        "units": {"href": v_href.replace("http://testserver", "")}, "projects": {"href": "/collections/projects/items"},
        "demand_property": "households_in_need", "group_property": None}}, headers=_auth(key))
    assert r.status_code == 200, r.text
    want = sum(f["properties"]["households_in_need"] for f in villages if f["properties"]["needs"])
    assert r.json()["summary"]["demand"] == want
    unmet = (await _items(editor, r.json()["unmet"]["href"], key))["features"]
    assert {f["id"] for f in unmet} == {f["id"] for f in villages}

    # coupling of the villages' living security and production capacity
    r = await editor.post("/processes/coupling-coordination/execution", json={"inputs": {
        "units": {"href": v_href.replace("http://testserver", "")},
        "subsystems": [
            {"name": "living", "indicators": [{"property": p, "direction": "-"} for p in (
                "l_food_share", "l_health_share", "l_house_share", "l_water_share", "l_edu_share")]},
            {"name": "production", "indicators": [{"property": p} for p in (
                "labour_share", "skilled_share", "arable_pc", "coop_credit", "road_quality")]}]}},
        headers=_auth(key))
    assert r.status_code == 200, r.text
    cc = r.json()
    assert sum(cc["summary"]["lag_types"].values()) == len(villages)
    feats = (await _items(editor, cc["units"]["href"], key))["features"]
    for f in feats[:50]:
        p = f["properties"]
        assert p["d"] == pytest.approx(math.sqrt(p["c"] * p["t"]), abs=1e-12)
        assert p["d_class"] == cp.d_band(p["d"])

    # the MPI per county from the registry
    r = await editor.post("/processes/mpi/execution", json={"inputs": {"households": reg, "group_by": "county_code"}},
                      headers=_auth(key))
    assert r.status_code == 200, r.text
    mpi = r.json()
    assert mpi["overall"]["households"] + mpi["overall"]["households_excluded_missing"] == n_hh
    assert mpi["weights"]["weights"]["nutrition"] == pytest.approx(1 / 3)  # child mortality has no data
    counties = (await _items(editor, mpi["units"]["href"], key))["features"]
    persons = sum(f["properties"]["persons"] for f in counties)
    assert sum(f["properties"]["mpi"] * f["properties"]["persons"] for f in counties) / persons == \
        pytest.approx(mpi["overall"]["MPI"], rel=1e-12)
    assert all(f["geometry"]["type"] in ("MultiPolygon", "Polygon") for f in counties)


async def test_the_registry_of_one_unit_is_the_regions_restricted_to_it(demo_settings) -> None:  # noqa: ANN001
    """A registry reference with ``admin_code`` reads the unit's households through its villages (the index, not a
    test of every household of the region) and only their members: the same rows, members and distances as the
    whole region's registry cut to the unit."""
    from app.main import create_app
    from app.processes.registry import RegistryRef, load_registry

    app = create_app(demo_settings)
    async with app.router.lifespan_context(app):
        whole = (await load_registry(app, RegistryRef(region="tieling-demo"), Role.admin))["households"].props
        first = whole[len(whole) // 2]
        units = (("211200", None), (first["county_code"], "county_code"), (first["township_code"], "township_code"),
                 (first["village_code"], "village_code"))
        for code, key in units:
            part = await load_registry(app, RegistryRef(region="tieling-demo", admin_code=code), Role.admin)
            expected = [p for p in whole if key is None or p[key] == code]
            assert 0 < len(expected) <= len(whole)
            assert part["households"].props == expected, code
        poor = await load_registry(app, RegistryRef(region="tieling-demo", admin_code=first["county_code"],
                                                    statuses=["poor"]), Role.admin)
        assert poor["households"].props == [p for p in whole if p["county_code"] == first["county_code"]
                                             and p["status"] == "poor"]


async def test_a_registry_larger_than_an_analysis_may_hold_is_refused_with_the_way_out(demo_settings,  # noqa: ANN001
                                                                                      api_keys) -> None:  # noqa: ANN001
    """More households than TPA_PROCESSES_MAX_REGISTRY_HOUSEHOLDS: 400 naming the limit and admin_code, before the
    job's memory fills; a unit under the limit still runs."""
    from tpa_testing import client_for

    small = demo_settings.model_copy(update={"processes": demo_settings.processes.model_copy(
        update={"max_registry_households": 1000})})
    town = fetch(demo_settings.db.url.rsplit("/", 1)[1], "SELECT code FROM admin_unit WHERE level = 4 "
                 "ORDER BY code LIMIT 1")[0][0]
    async with client_for(small) as client:
        key = _auth(api_keys[Role.analyst])
        r = await client.post("/processes/needs-assessment/execution",
                              json={"inputs": {"households": {"region": "tieling-demo"}}}, headers=key)
        assert r.status_code == 400, r.text
        assert "more than 1,000 households" in r.json()["detail"] and "admin_code" in r.json()["detail"]
        r = await client.post("/processes/needs-assessment/execution",
                              json={"inputs": {"households": {"region": "tieling-demo", "admin_code": town}}},
                              headers=key)
        assert r.status_code == 200, r.text
        assert 0 < r.json()["summary"]["households"] <= 1000
