"""OGC API - Features Part 1 on the demo region: every body validated against the official schemas,
every count and id list checked against the database or a client-side evaluation."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

import pytest
from ogc_validation import validate, validate_problem
from openapi_spec_validator import validate as validate_openapi
from pyproj import Geod
from tpa_testing import client_for, fetch

from app.models.codes import Role

P1 = "part1-1.0.1/schemas/"
GEOD = Geod(ellps="WGS84")


def sql(db, query: str, *args):
    return fetch(db.name, query, *args)


def rels(body) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for lk in body["links"]:
        out.setdefault(lk["rel"], []).append(lk)
    return out


def path_of(href: str) -> str:
    u = urlsplit(href)
    return u.path + (f"?{u.query}" if u.query else "")


# --------------------------------------------------------------------------------------------- capabilities
async def test_landing_page(api):
    r = await api.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    validate(body, P1 + "landingPage.yaml")
    links = rels(body)
    assert links["service-desc"][0]["type"] == "application/vnd.oai.openapi+json;version=3.0"
    assert {"self", "alternate", "service-doc", "conformance", "data"} <= set(links)
    html = await api.get("/", headers={"Accept": "text/html"})
    assert html.headers["content-type"].startswith("text/html") and "Collections" in html.text


async def test_conformance(api):
    body = (await api.get("/conformance")).json()
    validate(body, P1 + "confClasses.yaml")
    base = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/"
    assert {base + c for c in ("core", "oas30", "html", "geojson")} <= set(body["conformsTo"])
    assert body["conformsTo"] == sorted(set(body["conformsTo"]))


async def test_api_is_openapi_30(api):
    r = await api.get("/api")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.oai.openapi+json;version=3.0"
    doc = r.json()
    assert doc["openapi"].startswith("3.0")
    validate_openapi(doc)  # a valid OpenAPI 3.0 document
    items = doc["paths"]["/collections/{collectionId}/items"]["get"]
    names = {p["name"] for p in items["parameters"]}
    assert {"limit", "bbox", "datetime", "collectionId"} <= names
    html = await api.get("/api.html")
    assert html.status_code == 200 and "/static/vendor/swagger-ui/swagger-ui-bundle.js" in html.text
    assert "cdn" not in html.text.lower()
    asset = await api.get("/static/vendor/swagger-ui/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.content) > 100_000
    assert (await api.get("/static/vendor/leaflet/leaflet.js")).status_code == 200


# --------------------------------------------------------------------------------------------- collections
async def test_collections_by_role(api, api_keys):
    def layers(body: dict) -> list[str]:  # other tests' executions on the shared database are not listed
        return [c["id"] for c in body["collections"]]

    anon = (await api.get("/collections")).json()
    validate(anon, P1 + "collections.yaml")
    ids = layers(anon)
    assert ids == ["admin-units", "villages", "village-poverty", "admin-poverty", "village-risk", "projects",
                   "facilities", "roads",
                   "telecom-presence", "telecom-residents", "telecom-cell-indicators", "telecom-admin-indicators",
                   "telecom-od", "telecom-admin-od"]
    analyst = (await api.get("/collections", headers={"Authorization": f"Bearer {api_keys[Role.analyst]}"})).json()
    assert layers(analyst) == ids + ["households", "household-records", "alerts", "risk-predictions",
                                    "survey-households"]
    admin = (await api.get("/collections", headers={"Authorization": f"Bearer {api_keys[Role.admin]}"})).json()
    assert layers(admin) == ids + ["households", "household-records", "alerts", "risk-predictions",
                                   "survey-households", "persons", "audit"]


async def test_collection(api, demo_database):
    r = await api.get("/collections/villages")
    body = r.json()
    validate(body, P1 + "collection.yaml")
    assert body["itemType"] == "feature"
    bbox = body["extent"]["spatial"]["bbox"][0]
    (row,) = sql(demo_database, "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                                "(SELECT ST_Extent(geom_point) e FROM village) s")
    assert bbox == pytest.approx(list(row), abs=1e-9)
    assert body["extent"]["temporal"]["interval"] == [["2020-01-01T00:00:00Z", "2021-01-01T00:00:00Z"]]
    assert "tudigong" in body["attribution"] and "CC BY 4.0" in body["attribution"]
    items = [lk for lk in body["links"] if lk["rel"] == "items"]
    assert {lk["type"] for lk in items} == {"application/geo+json", "text/html", "text/csv"}
    r = await api.get("/collections/nope")
    assert r.status_code == 404
    validate_problem(r.json())


# --------------------------------------------------------------------------------------------- items
async def test_items_default_page(api, demo_database):
    r = await api.get("/collections/facilities/items")
    assert r.status_code == 200 and r.headers["content-type"] == "application/geo+json"
    body = r.json()
    validate(body, P1 + "featureCollectionGeoJSON.yaml")
    assert body["numberReturned"] == len(body["features"]) == 10
    assert body["numberMatched"] == sql(demo_database, "SELECT count(*) FROM facility")[0][0] == 2000
    expected = [r[0] for r in sql(demo_database, "SELECT fac_id FROM facility ORDER BY fac_id LIMIT 10")]
    assert [f["id"] for f in body["features"]] == expected
    dt.datetime.fromisoformat(body["timeStamp"].replace("Z", "+00:00"))
    f0 = body["features"][0]
    validate(f0, P1 + "featureGeoJSON.yaml")
    (row,) = sql(demo_database, "SELECT ST_X(geom), ST_Y(geom), class::text FROM facility WHERE fac_id = $1", f0["id"])
    assert f0["geometry"]["coordinates"] == pytest.approx([row[0], row[1]], abs=1e-7)
    assert f0["properties"]["class"] == row[2]


async def test_limit_rules(api):
    big = (await api.get("/collections/facilities/items", params={"limit": 20000})).json()
    assert big["numberReturned"] == 2000  # capped at 10,000, the collection has 2,000
    one = (await api.get("/collections/facilities/items", params={"limit": 1})).json()
    assert one["numberReturned"] == 1
    for bad in ("0", "-1", "abc", "1.5"):
        r = await api.get("/collections/facilities/items", params={"limit": bad})
        assert r.status_code == 400, bad
        validate_problem(r.json())


async def test_paging_by_key_walks_everything(api, demo_database):
    ids: list[str] = []
    url = "/collections/facilities/items?limit=300"
    pages = 0
    while url:
        body = (await api.get(url)).json()
        validate(body, P1 + "featureCollectionGeoJSON.yaml")
        assert body["numberMatched"] == 2000
        ids += [f["id"] for f in body["features"]]
        nxt = rels(body).get("next")
        url = path_of(nxt[0]["href"]) if nxt else None
        pages += 1
    assert pages == 7
    assert ids == [r[0] for r in sql(demo_database, "SELECT fac_id FROM facility ORDER BY fac_id")]
    # prev from the second page gives the first page back
    first = (await api.get("/collections/facilities/items?limit=300")).json()
    second = (await api.get(path_of(rels(first)["next"][0]["href"]))).json()
    back = (await api.get(path_of(rels(second)["prev"][0]["href"]))).json()
    assert [f["id"] for f in back["features"]] == [f["id"] for f in first["features"]]
    assert "prev" not in rels(first)


async def test_offset_paging(api, demo_database):
    all_ids = [r[0] for r in sql(demo_database, "SELECT fac_id FROM facility ORDER BY fac_id LIMIT 40")]
    body = (await api.get("/collections/facilities/items", params={"limit": 10, "offset": 20})).json()
    assert [f["id"] for f in body["features"]] == all_ids[20:30]
    prev = (await api.get(path_of(rels(body)["prev"][0]["href"]))).json()
    assert [f["id"] for f in prev["features"]] == all_ids[10:20]
    nxt = (await api.get(path_of(rels(body)["next"][0]["href"]))).json()
    assert [f["id"] for f in nxt["features"]] == all_ids[30:40]
    assert (await api.get("/collections/facilities/items", params={"offset": -1})).status_code == 400


async def test_cursor_garbage_is_400(api):
    r = await api.get("/collections/facilities/items", params={"cursor": "not-a-token!"})
    assert r.status_code == 400
    validate_problem(r.json())


async def test_bbox(api, demo_database):
    box = (123.9, 42.4, 124.2, 42.7)
    body = (await api.get("/collections/facilities/items",
                          params={"bbox": ",".join(map(str, box)), "limit": 10000})).json()
    expected = sorted(r[0] for r in sql(
        demo_database, "SELECT fac_id FROM facility WHERE ST_Intersects(geom, ST_MakeEnvelope($1,$2,$3,$4,4326))",
        *box))
    got = [f["id"] for f in body["features"]]
    assert got == expected and body["numberMatched"] == len(expected) > 50
    for f in body["features"]:
        x, y = f["geometry"]["coordinates"]
        assert box[0] <= x <= box[2] and box[1] <= y <= box[3]
    six = (await api.get("/collections/facilities/items",
                         params={"bbox": "123.9,42.4,0,124.2,42.7,100", "limit": 10000})).json()
    assert [f["id"] for f in six["features"]] == expected
    # polygons that merely intersect the box are included
    counties = (await api.get("/collections/admin-units/items", params={"bbox": "124.0,42.5,124.01,42.51",
                                                                        "level": 3})).json()
    assert counties["numberMatched"] >= 1


@pytest.mark.parametrize("bad", ["1,2,3", "a,b,c,d", "0,-91,1,1", "0,0,181,1", "0,5,1,1", "1,2,3,4,5", "nan,0,1,1"])
async def test_bbox_malformed(api, bad):
    r = await api.get("/collections/facilities/items", params={"bbox": bad})
    assert r.status_code == 400, bad
    validate_problem(r.json())


def _active(start, end, a, b):
    """Client-side evaluation: inclusive project dates intersect the closed query interval [a, b]."""
    return (b is None or start is None or start <= b) and (a is None or end is None or end >= a)


@pytest.mark.parametrize("query,a,b", [
    ("2018-06-01", dt.date(2018, 6, 1), dt.date(2018, 6, 1)),
    ("2018-06-01T12:00:00Z", dt.date(2018, 6, 1), dt.date(2018, 6, 1)),
    ("2017-01-01/2017-12-31", dt.date(2017, 1, 1), dt.date(2017, 12, 31)),
    ("../2016-01-01", None, dt.date(2016, 1, 1)),
    ("2021-01-01/..", dt.date(2021, 1, 1), None),
    ("/2016-01-01", None, dt.date(2016, 1, 1)),
])
async def test_datetime(api, demo_database, query, a, b):
    rows = sql(demo_database, "SELECT project_id, start_date, end_date FROM project ORDER BY project_id")
    expected = [r[0] for r in rows if _active(r[1], r[2], a, b)]
    body = (await api.get("/collections/projects/items", params={"datetime": query, "limit": 1000})).json()
    assert [f["id"] for f in body["features"]] == expected
    assert 0 < len(expected) < len(rows)


@pytest.mark.parametrize("bad", ["2020-13-01", "yesterday", "../..", "2020-01-01/2019-01-01", "2020-01-01/a/b",
                                 "2020-06-01T10:00:00"])
async def test_datetime_malformed(api, bad):
    r = await api.get("/collections/projects/items", params={"datetime": bad})
    assert r.status_code == 400, bad
    validate_problem(r.json())


async def test_equality_filters(api, demo_database):
    body = (await api.get("/collections/projects/items",
                          params={"status": "operating", "type": "industry", "limit": 1000})).json()
    expected = [r[0] for r in sql(demo_database, "SELECT project_id FROM project WHERE status = 'operating' AND "
                                  "type = 'industry' ORDER BY project_id")]
    assert [f["id"] for f in body["features"]] == expected and expected
    villages = (await api.get("/collections/villages/items",
                              params={"is_poverty_village": "true", "clinic": "false", "limit": 2000})).json()
    n = sql(demo_database, "SELECT count(*) FROM village WHERE is_poverty_village AND NOT clinic")[0][0]
    assert villages["numberMatched"] == n > 0
    assert all(f["properties"]["is_poverty_village"] and not f["properties"]["clinic"] for f in villages["features"])
    level = (await api.get("/collections/admin-units/items", params={"level": 3})).json()
    assert level["numberMatched"] == 7


@pytest.mark.parametrize("params", [{"colour": "red"}, {"capacity": "abc"}, {"status": "dreaming"},
                                    {"limit": ["1", "2"]}, {"addresses_needs": "L_WATER"}])
async def test_bad_parameters(api, params):
    r = await api.get("/collections/projects/items", params=params)
    assert r.status_code == 400, params
    validate_problem(r.json())


# --------------------------------------------------------------------------------------------- single features
async def test_feature(api, demo_database):
    (row,) = sql(demo_database, "SELECT code FROM village ORDER BY code LIMIT 1")
    r = await api.get(f"/collections/villages/items/{row[0]}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/geo+json"
    body = r.json()
    validate(body, P1 + "featureGeoJSON.yaml")
    assert body["id"] == row[0]
    assert {"self", "alternate", "collection"} <= set(rels(body))
    html = await api.get(f"/collections/villages/items/{row[0]}", params={"f": "html"})
    assert html.status_code == 200 and row[0] in html.text
    for missing in ("nope", "999999999999", "%00"):
        r = await api.get(f"/collections/villages/items/{missing}")
        assert r.status_code == 404
        validate_problem(r.json())
    assert (await api.get(f"/collections/villages/items/{row[0]}", params={"x": 1})).status_code == 400


# --------------------------------------------------------------------------------------------- negotiation and errors
async def test_content_negotiation(api):
    html = await api.get("/collections/villages/items", headers={"Accept": "text/html,application/xhtml+xml"})
    assert html.headers["content-type"].startswith("text/html")
    assert "leaflet.js" in html.text and "L.geoJSON" in html.text
    # the map helper is defined before the page calls it (a later <script> is not hoisted)
    assert html.text.index("function tpaMap") < html.text.index('tpaMap("map"')
    geo = await api.get("/collections/villages/items", headers={"Accept": "application/geo+json"})
    assert geo.headers["content-type"] == "application/geo+json"
    forced = await api.get("/collections/villages/items?f=json", headers={"Accept": "text/html"})
    assert forced.headers["content-type"] == "application/geo+json"
    r = await api.get("/collections/villages/items?f=xml")
    assert r.status_code == 400
    for path in ("/collections?f=html", "/collections/villages?f=html", "/conformance?f=html"):
        page = await api.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path


async def test_html_error_page_for_browsers(api):
    r = await api.get("/collections/nope", headers={"Accept": "text/html"})
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "There is no collection" in r.text and "Traceback" not in r.text


# --------------------------------------------------------------------------------------------- access control
async def test_households_need_a_key(api, api_keys):
    r = await api.get("/collections/households/items")
    assert r.status_code == 401 and "Basic" in r.headers["www-authenticate"]
    validate_problem(r.json())
    r = await api.get("/collections/households/items", headers={"Authorization": "Bearer tpa_0123456789_nope"})
    assert r.status_code == 401
    r = await api.get("/collections/persons/items", headers={"Authorization": f"Bearer {api_keys[Role.analyst]}"})
    assert r.status_code == 403
    validate_problem(r.json())
    r = await api.get("/collections/persons/items", auth=("anyone", api_keys[Role.admin]))
    assert r.status_code == 200 and r.json()["features"][0]["geometry"] is None
    r = await api.get("/collections/households", auth=(api_keys[Role.analyst], ""))
    assert r.status_code == 200


async def test_analysts_see_displaced_points(api, api_keys, demo_database):
    # checks the method: methodology#displacement
    analyst = {"Authorization": f"Bearer {api_keys[Role.analyst]}"}
    admin = {"Authorization": f"Bearer {api_keys[Role.admin]}"}
    a = (await api.get("/collections/households/items", params={"limit": 200}, headers=analyst)).json()
    b = (await api.get("/collections/households/items", params={"limit": 200}, headers=admin)).json()
    validate(a, P1 + "featureCollectionGeoJSON.yaml")
    truth = {r[0]: (r[1], r[2]) for r in sql(
        demo_database, "SELECT hh_id, ST_X(geom), ST_Y(geom) FROM household ORDER BY hh_id LIMIT 200")}
    for fa, fb in zip(a["features"], b["features"], strict=True):
        assert fa["id"] == fb["id"]
        assert fb["geometry"]["coordinates"] == pytest.approx(truth[fb["id"]], abs=1e-7)
        (x1, y1), (x2, y2) = truth[fa["id"]], fa["geometry"]["coordinates"]
        _, _, d = GEOD.inv(x1, y1, x2, y2)
        assert 99.9 <= d <= 500.1
    again = (await api.get("/collections/households/items", params={"limit": 200}, headers=analyst)).json()
    assert again["features"] == a["features"]  # deterministic
    # a bbox around a true position does not reveal it to analysts: filters apply to what they see
    hid = a["features"][0]["id"]
    x, y = truth[hid]
    tiny = f"{x - 1e-5},{y - 1e-5},{x + 1e-5},{y + 1e-5}"
    seen = (await api.get("/collections/households/items", params={"bbox": tiny}, headers=analyst)).json()
    assert hid not in [f["id"] for f in seen["features"]]
    seen_admin = (await api.get("/collections/households/items", params={"bbox": tiny}, headers=admin)).json()
    assert hid in [f["id"] for f in seen_admin["features"]]
    # and a bbox around the displaced point finds it
    dx, dy = a["features"][0]["geometry"]["coordinates"]
    near = f"{dx - 1e-5},{dy - 1e-5},{dx + 1e-5},{dy + 1e-5}"
    found = (await api.get("/collections/households/items", params={"bbox": near}, headers=analyst)).json()
    assert hid in [f["id"] for f in found["features"]]


async def test_revoked_key_is_refused(demo_settings, demo_database):
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.auth import create_key
    from app.db import create_engine, create_sessionmaker
    from app.repositories.keys import revoke_key

    eng = create_engine(demo_settings.db)
    try:
        async with create_sessionmaker(eng)() as s, s.begin():
            new = await create_key(s, Role.analyst, "short-lived")
        async with client_for(demo_settings) as c:
            ok = await c.get("/collections/households", headers={"Authorization": f"Bearer {new.key}"})
            assert ok.status_code == 200
        async with AsyncSession(eng) as s, s.begin():
            assert await revoke_key(s, new.prefix)
        async with client_for(demo_settings) as c:  # a fresh process-level cache
            r = await c.get("/collections/households", headers={"Authorization": f"Bearer {new.key}"})
            assert r.status_code == 401
    finally:
        await eng.dispose()
    stored = sql(demo_database, "SELECT key_hash FROM api_key WHERE prefix = $1", new.prefix)[0][0]
    assert new.key not in stored and len(stored) == 64


# --------------------------------------------------------------------------------------------- big pages
async def test_streamed_page_equals_small_pages(api, api_keys):
    admin = {"Authorization": f"Bearer {api_keys[Role.admin]}"}
    big = await api.get("/collections/households/items", params={"limit": 3000}, headers=admin)
    assert big.headers["content-type"] == "application/geo+json"
    body = big.json()
    validate(body, P1 + "featureCollectionGeoJSON.yaml")
    assert body["numberReturned"] == 3000 and body["numberMatched"] == 25_000
    small_ids: list[str] = []
    url = "/collections/households/items?limit=1000"
    for _ in range(3):
        page = (await api.get(url, headers=admin)).json()
        small_ids += [f["id"] for f in page["features"]]
        url = path_of(rels(page)["next"][0]["href"])
    assert [f["id"] for f in body["features"]] == small_ids
    nxt = (await api.get(path_of(rels(body)["next"][0]["href"]), headers=admin)).json()
    assert nxt["features"][0]["id"] > small_ids[-1]
    prev = (await api.get(path_of(rels(nxt)["prev"][0]["href"]), headers=admin)).json()
    assert [f["id"] for f in prev["features"]] == small_ids


async def test_counts_follow_writes(api, demo_database):
    before = (await api.get("/collections/facilities/items", params={"class": "bank"})).json()["numberMatched"]
    sql(demo_database, "INSERT INTO facility (fac_id, region_id, class, geom, valid_from, source) VALUES "
                       "('TEST-BANK', 'tieling-demo', 'bank', ST_SetSRID(ST_MakePoint(124, 42.5), 4326), "
                       "'2020-01-01', 'test')")
    try:
        after = (await api.get("/collections/facilities/items", params={"class": "bank"})).json()["numberMatched"]
        assert after == before + 1
    finally:
        sql(demo_database, "DELETE FROM facility WHERE fac_id = 'TEST-BANK'")
    again = (await api.get("/collections/facilities/items", params={"class": "bank"})).json()["numberMatched"]
    assert again == before
