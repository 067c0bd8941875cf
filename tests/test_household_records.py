"""The registry over time as a restricted collection (household-records): one record per household and year."""

from __future__ import annotations

import httpx
import pytest
from tpa_testing import ThrowawayDatabase, fetch

from app.models.codes import Role

REGISTRY = "(SELECT * FROM household UNION ALL SELECT * FROM household_history)"


async def test_records_are_restricted(editor: httpx.AsyncClient):
    for path in ("/collections/household-records/items", "/collections/household-records",
                 "/collections/household-records/items?datetime=2020-06-30&filter=status = 'poor'"):
        r = await editor.get(path)
        assert r.status_code in (401, 404), (path, r.status_code)
    listed = (await editor.get("/collections")).json()["collections"]
    assert "household-records" not in {c["id"] for c in listed}


async def test_a_year_of_records_is_that_year_of_the_registry(editor: httpx.AsyncClient, edit_keys: dict[Role, str],
                                                            edit_database: ThrowawayDatabase):
    key = {"Authorization": f"Bearer {edit_keys[Role.analyst]}"}
    want = dict(fetch(edit_database.name, f"SELECT extract(year FROM valid_from)::int, count(*) FROM {REGISTRY} r "
                                          "GROUP BY 1"))
    assert set(want) == set(range(2016, 2026))
    for year in (2016, 2020, 2025):
        r = await editor.get("/collections/household-records/items", headers=key,
                             params={"datetime": f"{year}-06-30", "limit": 1})
        assert r.status_code == 200, r.text
        assert r.json()["numberMatched"] == want[year]
    # a CQL2 filter over the derived properties equals the same question in SQL
    sql = fetch(edit_database.name, f"""
        SELECT count(*) FROM {REGISTRY} r JOIN {REGISTRY} p ON p.hh_id = r.hh_id AND p.valid_to = r.valid_from
        WHERE extract(year FROM r.valid_from) = 2022 AND r.status = 'exited'
          AND r.net_income_pc::float8 / p.net_income_pc::float8 - 1 < -0.3""")[0][0]
    r = await editor.get("/collections/household-records/items", headers=key, params={
        "filter": "year = 2022 AND status = 'exited' AND income_change < -0.3", "limit": 1})
    assert r.status_code == 200, r.text
    assert r.json()["numberMatched"] == sql > 0
    # rigid expenditure over net income: medical, schooling and disaster losses against the household's income
    sql = fetch(edit_database.name, f"""
        SELECT count(*) FROM {REGISTRY} r WHERE extract(year FROM valid_from) = 2021
          AND (coalesce(expense_medical, 0) + coalesce(expense_education, 0) + coalesce(loss_disaster, 0))::float8
              / nullif((net_income_pc * size)::float8, 0) > 0.5""")[0][0]
    r = await editor.get("/collections/household-records/items", headers=key, params={
        "filter": "year = 2021 AND rigid_expense_share > 0.5", "limit": 1})
    assert r.status_code == 200, r.text
    assert r.json()["numberMatched"] == sql > 0


async def test_a_household_over_time(editor: httpx.AsyncClient, edit_keys: dict[Role, str],
                                     edit_database: ThrowawayDatabase):
    key = {"Authorization": f"Bearer {edit_keys[Role.analyst]}"}
    hh = (await editor.get("/collections/households/items", headers=key, params={"limit": 1})).json()["features"][0]
    rows = fetch(edit_database.name, f"SELECT extract(year FROM valid_from)::int AS y, net_income_pc::float8 AS inc, "
                                     f"status::text AS status FROM {REGISTRY} r WHERE hh_id = $1 ORDER BY 1", hh["id"])
    r = await editor.get("/collections/household-records/items", headers=key,
                         params={"filter": f"hh_id = '{hh['id']}'", "limit": 20, "sortby": "year"})
    assert r.status_code == 200, r.text
    feats = r.json()["features"]
    assert [f["properties"]["year"] for f in feats] == [x["y"] for x in rows]
    for i, f in enumerate(feats):
        p = f["properties"]
        assert f["id"] == f"{hh['id']}-{p['year']}"
        assert p["net_income_pc"] == pytest.approx(rows[i]["inc"]) and p["status"] == rows[i]["status"]
        if i == 0:
            assert p["previous_net_income_pc"] is None and p["income_change"] is None
        else:
            assert p["previous_net_income_pc"] == pytest.approx(rows[i - 1]["inc"])
            assert p["income_change"] == pytest.approx(rows[i]["inc"] / rows[i - 1]["inc"] - 1)
        # the analyst's point is the households collection's displaced point, every year
        assert f["geometry"]["coordinates"] == pytest.approx(hh["geometry"]["coordinates"], abs=1e-9)
    one = await editor.get(f"/collections/household-records/items/{feats[-1]['id']}", headers=key)
    assert one.status_code == 200 and one.json()["properties"]["year"] == feats[-1]["properties"]["year"]
