"""Results people can read and that stay where they belong (issue 18): not listed unless published, readable under
their job, gone after their expiry; named by their units and parents; styled with a legend; regions as a resource.
Real PostGIS, the demo (a private copy), real HTTP through the app (and Chromium for what a person sees)."""

from __future__ import annotations

import datetime as dt
import io
import xml.etree.ElementTree as ET

import httpx
import numpy as np
import pytest
from conftest import _make_keys
from tpa_testing import ThrowawayDatabase, chromium, client_for, fetch, screenshot, serve, settings_for, tpa_cli

from app.models.codes import Role
from app.processes.catalogue import PROCESSES
from app.repositories.results import prune_expired


@pytest.fixture(scope="module")
def results_db(demo_template: str):
    with ThrowawayDatabase("results", template=demo_template) as db:
        yield db


@pytest.fixture(scope="module")
def keys(results_db):
    return _make_keys(results_db.url)


@pytest.fixture
async def rc(results_db):
    async with client_for(settings_for(results_db.url)) as c:
        yield c


def auth(keys, role=Role.analyst) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[role]}"}


def collection_of(href: str) -> str:
    return href.split("/collections/")[1].split("/")[0]


async def listed(c, headers=None) -> set[str]:
    return {x["id"] for x in (await c.get("/collections", headers=headers or {})).json()["collections"]}


async def test_results_are_listed_only_when_published_and_expire(rc, results_db, keys):
    body = {"inputs": PROCESSES["hotspots"].example}
    anonymous = await rc.post("/processes/hotspots/execution", json=body)
    assert anonymous.status_code == 200, anonymous.text
    job = anonymous.headers["location"].rsplit("/", 1)[1]
    layer = collection_of(anonymous.json()["features"]["href"])
    assert layer not in await listed(rc)  # not in the catalogue, nor in QGIS's and GDAL's layer lists
    status = (await rc.get(f"/jobs/{job}")).json()
    assert any(lk["href"].endswith(f"/collections/{layer}/items") for lk in status["links"])  # under its job
    assert (await rc.get(f"/jobs/{job}/results")).json()["features"]["href"].endswith(f"/{layer}/items")
    assert (await rc.get(f"/collections/{layer}/items", params={"limit": 1})).status_code == 200  # by its URL
    expires = dt.datetime.fromisoformat(status["expires"].replace("Z", "+00:00"))
    assert dt.timedelta(hours=23.9) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=24)

    # an analyst publishes: listed, with what it is, and kept
    published = await rc.post("/processes/hotspots/execution", headers=auth(keys), json={**body, "publish": True})
    assert published.status_code == 200, published.text
    pub_layer = collection_of(published.json()["features"]["href"])
    pub_job = published.headers["location"].rsplit("/", 1)[1]
    assert pub_layer in await listed(rc)
    doc = (await rc.get(f"/collections/{pub_layer}")).json()
    assert doc["result"]["process"] == "hotspots" and doc["result"]["job"] == pub_job
    assert doc["result"]["owner"] == "test analyst"
    assert "village-poverty" in doc["result"]["inputs"] and "variable: poor_persons" in doc["result"]["inputs"]
    assert (await rc.get(f"/jobs/{pub_job}", headers=auth(keys))).json()["expires"] is None
    assert (await rc.post("/processes/hotspots/execution", json={**body, "publish": True})).status_code == 401
    keyed = await rc.post("/processes/hotspots/execution", headers=auth(keys), json=body)
    keyed_layer = collection_of(keyed.json()["features"]["href"])

    # the clock moves 25 hours: the anonymous results are deleted, the keyed (30 days) and published ones stay
    jobs_done, tables = await prune_expired(rc._transport.app.state.engine,
                                            dt.datetime.now(dt.UTC) + dt.timedelta(hours=25))
    assert jobs_done >= 1 and tables >= 1
    assert fetch(results_db.name, "SELECT count(*) FROM published_layer WHERE layer_id = $1", layer)[0][0] == 0
    assert fetch(results_db.name, "SELECT to_regclass('results.r_' || replace($1, '-', '') || '_features')",
                 job)[0][0] is None
    gone = await rc.get(f"/jobs/{job}/results")
    assert gone.status_code == 404 and gone.json()["code"] == "ResultsExpired"
    assert (await rc.get(f"/collections/{layer}/items")).status_code == 404
    assert "expired" in (await rc.get(f"/jobs/{job}")).json()["message"]
    assert (await rc.get(f"/collections/{keyed_layer}/items", headers=auth(keys))).status_code == 200
    # 31 days: the keyed results go too; the published ones stay until unpublished
    await prune_expired(rc._transport.app.state.engine, dt.datetime.now(dt.UTC) + dt.timedelta(days=31))
    assert (await rc.get(f"/collections/{keyed_layer}/items", headers=auth(keys))).status_code == 404
    assert (await rc.get(f"/collections/{pub_layer}/items")).status_code == 200

    # the CLI: list, unpublish (it expires again), keep longer
    out = tpa_cli(results_db, "results", "list").stdout
    assert pub_job in out and "kept" in out
    tpa_cli(results_db, "layers", "unpublish", pub_layer)
    row = fetch(results_db.name, "SELECT expires FROM analysis_run WHERE run_id = $1::uuid", pub_job)[0][0]
    assert row is not None and row > dt.datetime.now(dt.UTC) + dt.timedelta(days=29)
    assert pub_layer not in {r[0] for r in fetch(results_db.name, "SELECT layer_id FROM published_layer WHERE listed")}
    tpa_cli(results_db, "results", "keep", pub_job, "--forever")
    assert fetch(results_db.name, "SELECT expires FROM analysis_run WHERE run_id = $1::uuid", pub_job)[0][0] is None
    tpa_cli(results_db, "layers", "publish", pub_layer)
    assert pub_layer in {r[0] for r in fetch(results_db.name, "SELECT layer_id FROM published_layer WHERE listed")}
    pruned = tpa_cli(results_db, "results", "prune", "--as-of", "2100-01-01T00:00:00Z")
    assert "deleted the expired results" in pruned.stderr
    assert (await rc.get(f"/collections/{pub_layer}/items")).status_code == 200


async def test_every_result_kind_carries_the_names_of_its_units(rc, results_db, keys):
    """Rows that stand for an area or a village carry its name and its parents' names; households only their
    pseudonym."""
    names = dict(fetch(results_db.name, "SELECT code, name FROM admin_unit"))
    parent = dict(fetch(results_db.name, "SELECT code, parent_code FROM admin_unit"))
    expect = {  # output → the column holding the unit, and whether its rows are villages, counties or none
        ("spatial-autocorrelation", "features"): (None, "village"), ("hotspots", "features"): (None, "village"),
        ("project-coverage-correlation", "features"): (None, "village"),
        ("accessibility", "features"): (None, "village"), ("coverage-gaps", "gaps"): ("unit_id", "village"),
        ("location-allocation", "assignment"): (None, "village"),
        ("needs-assessment", "villages"): (None, "village"), ("needs-assessment", "households"): (None, None),
        ("needs-matching", "unmet"): (None, "village"), ("coupling-coordination", "units"): ("unit", "village"),
        ("mpi", "units"): (None, "county"),
    }
    for (pid, out_id), (unit_col, kind) in expect.items():
        r = await rc.post(f"/processes/{pid}/execution", headers=auth(keys),
                          json={"inputs": PROCESSES[pid].example})
        assert r.status_code == 200, (pid, r.text)
        page = (await rc.get(r.json()[out_id]["href"], params={"limit": 20}, headers=auth(keys))).json()
        assert page["features"], (pid, out_id)
        for f in page["features"]:
            p = f["properties"]
            unit = p[unit_col] if unit_col else f["id"]
            if kind is None:
                assert "name" not in p and "township" not in p and "county" not in p, (pid, out_id)
                continue
            assert p["name"] == names[unit], (pid, out_id, unit)
            if kind == "village":
                assert p["township"] == names[parent[unit]] and p["county"] == names[parent[parent[unit]]]
            else:
                assert p["prefecture"] == names[parent[unit]]
    # projects are named by their inputs (utilisation per project)
    r = await rc.post("/processes/needs-matching/execution", headers=auth(keys),
                      json={"inputs": PROCESSES["needs-matching"].example})
    util = (await rc.get(r.json()["utilisation"]["href"], params={"limit": 5}, headers=auth(keys))).json()
    project_names = dict(fetch(results_db.name, "SELECT project_id, name FROM project"))
    assert all(f["properties"]["name"] == project_names[f["id"]] for f in util["features"])


async def test_pages_for_people_and_styles_for_maps(rc, results_db):
    r = await rc.post("/processes/hotspots/execution", json={"inputs": PROCESSES["hotspots"].example})
    layer = collection_of(r.json()["features"]["href"])
    html = await rc.get(f"/collections/{layer}/items", params={"f": "html"})
    assert html.text.count("<tr><td><a href=") == 50  # a page a person reads, not 10,000 rows
    capped = await rc.get(f"/collections/{layer}/items", params={"f": "html", "limit": 5000})
    matched = (await rc.get(f"/collections/{layer}/items", params={"limit": 1})).json()["numberMatched"]
    assert matched > 50 and capped.text.count("<tr><td><a href=") == min(500, matched)  # capped at 500
    assert "0.07500000298023224" not in capped.text and ">0.075<" in capped.text  # JSON keeps full precision
    full = (await rc.get(f"/collections/{layer}/items", params={"limit": 5000})).json()
    assert any(f["properties"]["p_sim"] == 0.07500000298023224 for f in full["features"])
    doc = (await rc.get(f"/collections/{layer}")).json()
    assert doc["style"]["property"] == "class" and len(doc["style"]["classes"]) == 7
    mapbox = (await rc.get(f"/collections/{layer}/styles/default", params={"f": "mapbox"}))
    assert mapbox.headers["content-type"] == "application/vnd.mapbox.style+json"
    style = mapbox.json()
    assert style["version"] == 8 and style["layers"][0]["type"] == "circle"
    expr = style["layers"][0]["paint"]["circle-color"]
    assert expr[0] == "match" and "hot-99" in expr and "#b2182b" in expr
    qml = await rc.get(f"/collections/{layer}/styles/default", params={"f": "qml"})
    root = ET.fromstring(qml.text.split("\n", 1)[1])
    renderer = root.find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "class"
    assert len(renderer.find("categories")) == 8 and len(renderer.find("symbols")) == 8
    villages = (await rc.get("/collections/villages/styles/default")).json()  # any collection: one colour, its tiles
    assert villages["sources"]["villages"]["type"] == "vector" and "metadata" not in villages
    assert (await rc.get("/collections/villages/styles/default", params={"f": "qml"})).status_code == 404
    # villages pages say where the village is: several share a name
    dupes = fetch(results_db.name, "SELECT a.code FROM admin_unit a WHERE a.level = 5 AND a.name IN (SELECT name FROM "
                                   "admin_unit WHERE level = 5 GROUP BY name HAVING count(*) > 1) ORDER BY a.code")
    code = dupes[0][0]
    township = fetch(results_db.name, "SELECT t.name FROM admin_unit v JOIN admin_unit t ON t.code = v.parent_code "
                                      "WHERE v.code = $1", code)[0][0]
    page = await rc.get(f"/collections/villages/items/{code}", params={"f": "html"})
    assert f'<p class="place">{township}, ' in page.text


async def test_regions_are_a_resource(rc, results_db, keys):
    tpa_cli(results_db, "region", "create", "mx-results", "--country", "MEX", "--crs", "EPSG:32614", "--name",
            "Ciudad de México", "--admin-levels", "1=Entidad,3=Municipio")
    body = (await rc.get("/regions")).json()
    ids = [r["id"] for r in body["regions"]]
    assert ids == ["mx-results", "tieling-demo"]
    demo = (await rc.get("/regions/tieling-demo")).json()
    assert demo["country"] == {"code": "CN", "name": "China"}
    assert demo["analysisCrs"].endswith("/32651") and demo["analysisCrs"] in demo["crs"]
    assert demo["adminLevels"]["5"] == "Village 村" and demo["counts"]["villages"] == 1200
    assert demo["counts"]["admin_units"]["3"] == 7 and demo["periods"]["registry_years"] == list(range(2016, 2026))
    assert demo["periods"]["telecom_months"] == []  # the test template has no telecom release
    line = demo["povertyLine"]["value"]  # monitoring line: 1.5 times the poverty line unless the region says
    assert demo["monitoringLine"]["factor"] == 1.5 and demo["monitoringLine"]["value"] == round(1.5 * line, 2)
    for month in ("2020-10", "2020-09"):
        fetch(results_db.name, "INSERT INTO telecom_agg (region_id, unit_type, unit_id, period, indicator, value, "
              "n_subscribers, suppressed, valid_from, source) SELECT 'tieling-demo', 'admin', min(code), "
              "daterange($1::date, ($1::date + interval '1 month')::date), 'residents', 100, 100, false, $1::date, "
              "'test' FROM admin_unit WHERE level = 3", dt.date.fromisoformat(month + "-01"))
    demo = (await rc.get("/regions/tieling-demo")).json()
    assert demo["periods"]["telecom_months"] == ["2020-09", "2020-10"]
    mx = (await rc.get("/regions/mx-results")).json()
    assert mx["adminLevels"] == {"1": "Entidad", "3": "Municipio"} and mx["counts"]["villages"] == 0
    assert mx["title"] == "Ciudad de México"
    page = await rc.get("/regions/tieling-demo", params={"f": "html"})
    assert "Tieling (demo)" in page.text and "2020-10" in page.text
    unknown = await rc.get("/regions/nope")
    assert unknown.status_code == 404 and "tieling-demo (Tieling (demo))" in unknown.json()["detail"]
    # process inputs: an unknown region is answered with the known ids; the display name works too
    bad = await rc.post("/processes/mpi/execution", headers=auth(keys),
                        json={"inputs": {"households": {"region": "Tieling"}}})
    assert bad.status_code == 400 and "mx-results (Ciudad de México), tieling-demo (Tieling (demo))" in bad.text
    by_name = await rc.post("/processes/mpi/execution", headers=auth(keys),
                            json={"inputs": {"households": {"region": "Tieling (demo)"}, "group_by": "county_code"}})
    assert by_name.status_code == 200, by_name.text
    # the collections link to their regions
    villages = (await rc.get("/collections/villages")).json()
    assert [lk["href"].rsplit("/", 1)[1] for lk in villages["links"] if "/regions/" in lk["href"]] == ["tieling-demo"]


def _count_colour(png: bytes, hex_colour: str) -> int:
    from PIL import Image

    rgb = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    return int((np.abs(pixels.astype(int) - rgb).max(axis=1) <= 2).sum())


def test_a_hotspot_result_page_shows_its_classes_in_colour_with_a_legend(results_db, keys):
    """What a person sees in Chromium: the Gi* classes drawn in different colours on the map, and the legend."""
    with serve(results_db.url) as url:
        r = httpx.post(url + "/processes/hotspots/execution", json={"inputs": PROCESSES["hotspots"].example},
                       timeout=120)
        href = r.json()["features"]["href"]
        style = httpx.get(href.replace("/items", "")).json()["style"]
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(href + "?f=html&limit=500")
            page.wait_for_selector(".legend")
            legend = page.locator(".legend [role=listitem]").all_inner_texts()
            assert legend[0].startswith("Hot spot, 99") and len(legend) == 7
            map_png = page.locator("#map").screenshot()
            screenshot(page, "hotspots-result")
    seen = {c["value"]: _count_colour(map_png, c["color"]) for c in style["classes"]}
    drawn = [v for v, n in seen.items() if n >= 10]
    assert len(drawn) >= 2, seen
    assert any(v.startswith("hot") for v in drawn) and any(v.startswith("cold") for v in drawn), seen
