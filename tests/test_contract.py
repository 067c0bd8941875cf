"""The contract at the boundary with people and their tools (issue 17): sign-in that browsers understand, HEAD,
formats, plain-words errors, bbox semantics, array parameters, the OpenAPI document as generators read it, the
registry statuses of process inputs."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import orjson
import pytest
from ogc_validation import validate_problem
from tpa_testing import chromium, fetch, screenshot

from app.layers.query import ItemsQuery
from app.models.codes import Role
from app.processes.catalogue import PROCESSES

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "processes"
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def auth(keys, role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[role]}"}


# --------------------------------------------------------------------------------------------- sign-in
async def test_401_has_a_basic_challenge_of_its_own_then_bearer(api):
    r = await api.get("/jobs")
    assert r.status_code == 401
    validate_problem(r.json())
    challenges = r.headers.get_list("www-authenticate")
    assert challenges == ['Basic realm="tpa-gis", charset="UTF-8"', 'Bearer realm="tpa-gis"']
    assert "HTTP Basic with the key as the password" in r.json()["detail"]
    page = await api.get("/jobs", headers=BROWSER)
    assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
    assert "How to sign in" in page.text and "Authorization: Bearer" in page.text
    assert page.headers.get_list("www-authenticate")[0].startswith("Basic ")
    # a script's request in a browser (the portal's fetch) gets no Basic challenge: no prompt holds it up
    scripted = await api.get("/jobs", headers={"Sec-Fetch-Mode": "cors"})
    assert scripted.status_code == 401 and scripted.headers.get_list("www-authenticate") == ['Bearer realm="tpa-gis"']
    navigated = await api.get("/jobs", headers={**BROWSER, "Sec-Fetch-Mode": "navigate"})
    assert navigated.headers.get_list("www-authenticate")[0].startswith("Basic ")


async def test_403_page_says_the_key_is_not_enough(api, api_keys):
    page = await api.get("/collections/persons", headers={**BROWSER, **auth(api_keys, Role.analyst)})
    assert page.status_code == 403 and "Not with this key" in page.text


async def test_restricted_results_ask_anonymous_callers_to_sign_in(editor, edit_keys):
    r = await editor.post("/processes/needs-assessment/execution", headers=auth(edit_keys, Role.analyst),
                          json={"inputs": {"households": {"region": "tieling-demo", "statuses": ["poor"]}}})
    assert r.status_code == 200, r.text
    job = r.headers["location"].rsplit("/", 1)[1]
    layer = r.json()["households"]["href"].split("/collections/")[1].split("/")[0]
    for path in (f"/collections/{layer}", f"/collections/{layer}/items", f"/jobs/{job}", f"/jobs/{job}/results"):
        anonymous = await editor.get(path)
        assert anonymous.status_code == 401, (path, anonymous.status_code)
        assert anonymous.headers.get_list("www-authenticate")[0].startswith("Basic")
        page = await editor.get(path, headers=BROWSER)
        assert page.status_code == 401 and "How to sign in" in page.text
        assert (await editor.get(path, headers=auth(edit_keys, Role.analyst))).status_code == 200


def test_chromium_signs_in_with_the_basic_challenge(live_server, api_keys):
    """A browser given credentials sends them only after a Basic challenge it understands; then the analyst's
    jobs page opens. Swagger UI shows an Authorize button."""
    with chromium() as browser:
        ctx = browser.new_context(http_credentials={"username": "analyst", "password": api_keys[Role.analyst]})
        page = ctx.new_page()
        answer = page.goto(live_server + "/jobs?f=html")
        assert answer.status == 200, answer.status
        assert page.inner_text("h1").strip().startswith("Jobs")
        screenshot(page, "jobs-signed-in")
        # Swagger UI: Authorize with the key, then "Try it out" runs the documented example as it is
        docs = browser.new_page(viewport={"width": 1300, "height": 1000})
        docs.goto(live_server + "/api.html")
        button = docs.wait_for_selector("button.authorize", timeout=30_000)
        assert "Authorize" in button.inner_text()
        button.click()
        docs.fill("#auth-bearer-value", api_keys[Role.analyst])
        docs.click(".modal-ux .auth-btn-wrapper button.authorize")
        docs.click(".modal-ux button.btn-done")
        op = docs.locator("#operations-Processes-execute_mpi")
        op.locator(".opblock-summary").click()
        op.locator("button.try-out__btn").click()
        assert '"group_by": "county_code"' in op.locator("textarea.body-param__text").input_value()
        op.locator("button.execute").click()
        status = op.locator(".live-responses-table tbody .response-col_status").first
        status.wait_for(timeout=60_000)
        assert status.inner_text().strip() == "200"
        screenshot(docs, "swagger-try-it-out")


async def test_landing_page_links_processes_and_jobs(api):
    page = (await api.get("/", headers=BROWSER)).text
    assert 'href="http://testserver/processes?f=html"' in page and 'href="http://testserver/jobs?f=html"' in page


# --------------------------------------------------------------------------------------------- HEAD, f
@pytest.mark.parametrize("path", ["/", "/api.html", "/api", "/collections", "/collections/villages",
                                  "/collections/villages/items?limit=5", "/collections/villages/items?limit=2000",
                                  "/collections/villages/queryables", "/collections/villages/schema",
                                  "/processes", "/conformance", "/healthz"])
async def test_head_wherever_get_is_served(api, path):
    got = await api.get(path)
    head = await api.head(path)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    if "content-length" in got.headers:
        assert head.headers["content-length"] == got.headers["content-length"]


async def test_head_and_allow_where_get_is_not_served(api):
    r = await api.head("/processes/hotspots/execution")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = await api.delete("/collections")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(("path", "offered"), [("/collections", "json, html"),
                                               ("/collections/villages/items", "json, html, csv, fgb, parquet"),
                                               ("/api", "json, html")])
async def test_unknown_format_is_refused_in_the_negotiated_type(api, path, offered):
    page = await api.get(path, params={"f": "xml"}, headers=BROWSER)
    assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")
    assert f"offered as {offered}" in page.text and "[" not in page.text.split("<main>")[1]
    doc = await api.get(path, params={"f": "xml"})
    assert doc.status_code == 400 and doc.headers["content-type"] == "application/problem+json"
    validate_problem(doc.json())
    assert f"offered as {offered} " in doc.json()["detail"] and "'" not in doc.json()["detail"]


@pytest.mark.parametrize(("text", "where", "hint"), [
    ("name = ", "line 1, column 8 (the end of the filter)", "expected a property name, a number"),
    ("population > 3 AND S_DWITHIN(geometry, POINT(124 42), 1000", "column 59 (the end", "a parenthesis is not closed"),
    ("name = 'abc", "column 8 (at \"'abc\")", "a quoted text is not closed"),
    ("population >< 3", "column 13", "expected a property name"),
])
async def test_cql2_syntax_errors_in_plain_words(api, text, where, hint):
    r = await api.get("/collections/villages/items", params={"filter": text})
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert where in detail and hint in detail, detail
    assert "-->" not in detail and "^---" not in detail and "Identifier" not in detail


# --------------------------------------------------------------------------------------------- items
async def test_bbox_matches_features_without_geometry(api, demo_database):
    """/req/core/fc-bbox-response: a bbox selects the features whose geometry intersects it and every feature
    without a geometry (here the country and the province of the demo, which carry none)."""
    no_geom = sorted(r[0] for r in fetch(demo_database.name, "SELECT code FROM admin_unit WHERE geom IS NULL"))
    assert no_geom == ["210000", "CN"]
    far = (await api.get("/collections/admin-units/items", params={"bbox": "0,0,1,1", "limit": 100})).json()
    assert sorted(f["id"] for f in far["features"]) == no_geom and far["numberMatched"] == 2
    near = (await api.get("/collections/admin-units/items", params={"bbox": "123.8,42.2,123.9,42.3",
                                                                     "limit": 1000})).json()
    assert set(no_geom) < {f["id"] for f in near["features"]}
    assert near["numberMatched"] == len(near["features"])


async def test_array_parameters_repeated_or_comma_separated(api):
    comma = (await api.get("/collections/villages/items", params={
        "bbox": "123.5,42.0,124.5,43.0", "properties": "name,population", "sortby": "-population,name",
        "limit": 20})).json()
    repeated = (await api.get("/collections/villages/items", params=[
        ("bbox", "123.5"), ("bbox", "42.0"), ("bbox", "124.5"), ("bbox", "43.0"), ("properties", "name"),
        ("properties", "population"), ("sortby", "-population"), ("sortby", "name"), ("limit", "20")])).json()
    assert [f["id"] for f in comma["features"]] == [f["id"] for f in repeated["features"]]
    assert comma["numberMatched"] == repeated["numberMatched"] > 20
    assert set(repeated["features"][0]["properties"]) == {"name", "population"}
    assert (await api.get("/collections/villages/items", params=[("limit", "1"), ("limit", "2")])).status_code == 400


# --------------------------------------------------------------------------------------------- OpenAPI
async def test_openapi_document_as_generators_read_it(api):
    doc = (await api.get("/api")).json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {"type": "http", "scheme": "bearer", "description": schemes["bearerAuth"][
        "description"]} and schemes["basicAuth"]["scheme"] == "basic"
    paths = doc["paths"]
    keyed = [{"bearerAuth": []}, {"basicAuth": []}]
    assert paths["/jobs"]["get"]["security"] == keyed
    assert paths["/collections/{collectionId}/items"]["post"]["security"] == keyed
    assert paths["/collections/{collectionId}/items"]["get"]["security"] == [{}, *keyed]
    assert paths["/"]["get"]["security"] == []
    params = {p["name"]: p for p in paths["/collections/{collectionId}/items"]["get"]["parameters"]}
    assert "default" not in params["filter-lang"]["schema"]
    titles = [s.get("title") for s in doc["components"]["schemas"].values() if s.get("title")]
    assert len(titles) == len(set(titles)), sorted(t for t in titles if titles.count(t) > 1)
    for pid, process in PROCESSES.items():
        op = paths[f"/processes/{pid}/execution"]["post"]
        example = op["requestBody"]["content"]["application/json"]["examples"]["demo"]["value"]
        assert example == {"inputs": process.example}
        assert json.loads((EXAMPLES / f"{pid}.json").read_text()) == example  # the README's bodies
        assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("Results")
        assert op["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/StatusInfo")
        assert any(p["name"] == "Prefer" and p["in"] == "header" for p in op["parameters"])
    for path, item in paths.items():  # every JSON answer has a schema a generator can type
        for method, op in item.items():
            ok = op["responses"].get("200") or op["responses"].get("201") or {}
            schema = (ok.get("content") or {}).get("application/json", {}).get("schema")
            if path not in ("/api", "/metrics") and ok.get("content", {}).get("application/json") is not None:
                assert schema, (method, path)
    for name in ("FeatureInput", "FeaturePatch"):
        assert name in doc["components"]["schemas"]
    body = paths["/collections/{collectionId}/items"]["post"]["requestBody"]["content"]
    assert body["application/geo+json"]["schema"] == {"$ref": "#/components/schemas/FeatureInput"}


# --------------------------------------------------------------------------------------------- processes
async def test_registry_statuses_are_read_as_their_codes(api, api_keys, demo_database):
    # the registry of the demo's default year (2020), from the current rows and the history
    poor = fetch(demo_database.name, "SELECT count(*) FROM (SELECT * FROM household UNION ALL SELECT * FROM "
                                     "household_history) h WHERE status IN ('poor', 'returned') AND valid_from <= "
                                     "'2020-01-01' AND (valid_to IS NULL OR valid_to > '2020-01-01')")[0][0]
    r = await api.post("/processes/needs-assessment/execution", headers=auth(api_keys, Role.analyst),
                       json={"inputs": {"households": {"region": "tieling-demo", "statuses": ["poor", "returned"]}}})
    assert r.status_code == 200, r.text
    assert r.json()["summary"]["households"] == poor > 0
    bad = await api.post("/processes/needs-assessment/execution", headers=auth(api_keys, Role.analyst),
                         json={"inputs": {"households": {"region": "tieling-demo", "statuses": ["rich"]}}})
    assert bad.status_code == 400 and "'poor', 'exited', 'returned' or 'monitored'" in bad.json()["detail"]


async def test_schema_of_every_collection(api, api_keys):
    collections = (await api.get("/collections", headers=auth(api_keys, Role.admin))).json()["collections"]
    for c in collections:
        r = await api.get(f"/collections/{c['id']}/schema", headers=auth(api_keys, Role.admin))
        assert r.status_code == 200 and r.headers["content-type"] == "application/schema+json"
        doc = r.json()
        jsonschema.Draft202012Validator.check_schema(doc)
        assert doc["properties"]["id"]["x-ogc-role"] == "id"
        editable = c["id"] in ("villages", "projects", "facilities", "households", "alerts")
        assert ("required" in doc) == editable, c["id"]
        if not editable:
            assert all(p.get("readOnly") for n, p in doc["properties"].items() if n != "id"), c["id"]
        assert any(lk["rel"] == "http://www.opengis.net/def/rel/ogc/1.0/schema" for lk in c["links"])


# --------------------------------------------------------------------------------------------- plans
async def test_whole_extent_bbox_after_small_ones_is_planned_with_its_box(demo_settings):
    """QGIS zoomed out asks for the whole view. After a run of small bboxes, PostgreSQL's "auto" plan cache would
    reuse a generic plan that assumes a few hundred rows for any box (1.7 s instead of 1.4 ms on 500,000 households):
    every execution on the read pool must get a plan made with its own values."""
    from pydantic import SecretStr

    from app.db import create_read_pool
    from app.layers.catalog import builtin_layers
    from app.repositories import features as repo
    from app.settings import DatabaseSettings, SecuritySettings

    households = next(lyr for lyr in builtin_layers(SecuritySettings(jitter_key=SecretStr("plans")))
                      if lyr.id == "households")
    pool = await create_read_pool(DatabaseSettings(url=demo_settings.db.url, pool_size=1))
    try:
        await pool.execute("ANALYZE household")  # with statistics, "auto" prefers the generic plan
        for i in range(12):
            small = (123.80 + 0.01 * i, 42.30, 123.81 + 0.01 * i, 42.31)
            await repo.fetch_page(pool, households, Role.admin, ItemsQuery(bbox=small, limit=10))
        for _ in range(8):  # the whole view, as a user pans and zooms out
            page = await repo.fetch_page(pool, households, Role.admin, ItemsQuery(bbox=(100, 20, 140, 50),
                                                                                         limit=10))
            assert page.returned == 10
        plans = await pool.fetch("SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                                 "WHERE statement ILIKE '%st_makeenvelope%' AND statement NOT ILIKE '%pg_prepared%'")
        assert [(r["generic_plans"], r["custom_plans"]) for r in plans] == [(0, 20)]
        # lookups by id keep their cheap generic plans (planning each would triple their cost), and the setting
        # does not outlive the use of the connection
        ids = [f["id"] for f in orjson.loads(f"[{page.body}]")]
        for fid in ids:
            assert await repo.fetch_feature(pool, households, Role.admin, fid) is not None
        by_id = await pool.fetch("SELECT generic_plans FROM pg_prepared_statements WHERE statement ILIKE '%md5%' "
                                 "AND statement NOT ILIKE '%pg_prepared%'")
        assert [r["generic_plans"] for r in by_id] == [len(ids) - 5]  # after five custom plans, as "auto" does
        assert await pool.fetchval("SHOW plan_cache_mode") == "auto"
    finally:
        await pool.close()
