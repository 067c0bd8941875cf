"""Real clients against the running service: GDAL's OAPIF driver and OWSLib; and a differential test
against pygeoapi's PostgreSQL provider serving the same table."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest
from ogc_validation import validate
from sqlalchemy.engine import make_url
from tpa_testing import client_for, published_tables, settings_for

from app.models.codes import Role

PUBLIC = ("admin-units", "villages", "village-poverty", "admin-poverty", "projects", "facilities", "roads")
EMPTY = ("village-risk",)  # public, empty until a return-risk model is stored for the region
TELECOM = ("telecom-presence", "telecom-residents", "telecom-cell-indicators", "telecom-admin-indicators",
           "telecom-od", "telecom-admin-od")


def _ogr_count(url: str, collection: str, tmp_path, *config: str) -> int:
    out = tmp_path / f"{collection}.geojson"
    cmd = ["ogr2ogr", *config, "-f", "GeoJSON", str(out), f"OAPIF:{url}", collection]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return len(json.loads(out.read_text())["features"])


@pytest.mark.parametrize("collection", PUBLIC)
def test_gdal_pulls_each_public_collection(live_server, collection, tmp_path):
    matched = httpx.get(f"{live_server}/collections/{collection}/items", params={"limit": 1}).json()["numberMatched"]
    # pages of 1,000 (GDAL's default is 10: 1,316 requests for admin-poverty); paging itself is still followed
    assert _ogr_count(live_server, collection, tmp_path, "-oo", "PAGE_SIZE=1000") == matched > 0


def test_gdal_reads_the_numbers_the_api_serves(live_server, tmp_path):
    """GDAL types a field from the first page it reads: rates that start at 0 must still come out as rates."""
    _ogr_count(live_server, "village-poverty", tmp_path)
    got = [f["properties"]["poverty_rate"]
           for f in json.loads((tmp_path / "village-poverty.geojson").read_text())["features"]]
    api = httpx.get(f"{live_server}/collections/village-poverty/items", params={"limit": 10000}).json()["features"]
    rates = [f["properties"]["poverty_rate"] for f in api]
    assert any(r not in (None, 0) for r in rates)
    assert sorted(v for v in got if v is not None) == sorted(v for v in rates if v is not None)


def test_gdal_with_basic_auth(live_server, api_keys, tmp_path):
    # QGIS/GDAL's standard authentication: HTTP Basic with the key as password
    n = _ogr_count(live_server, "households", tmp_path, "--config", "GDAL_HTTP_AUTH", "BASIC",
                   "--config", "GDAL_HTTP_USERPWD", f"analyst:{api_keys[Role.analyst]}")
    assert n == 25_000


def test_gdal_lists_layers(live_server):
    done = subprocess.run(["ogrinfo", "-ro", "-q", f"OAPIF:{live_server}"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    for c in PUBLIC:
        assert c in done.stdout
    assert "households" not in done.stdout


def test_owslib_reads_the_service(live_server):
    from owslib.ogcapi.features import Features

    api = Features(live_server)
    assert "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core" in api.conformance()["conformsTo"]
    ids = [c["id"] for c in api.collections()["collections"]]
    # other tests' executions on the shared server are not listed
    assert ids == [*PUBLIC[:4], *EMPTY, *PUBLIC[4:], *TELECOM]
    assert api.collection("villages")["id"] == "villages"
    items = api.collection_items("villages", limit=5)
    assert items["numberReturned"] == 5 and len(items["features"]) == 5
    validate(items, "part1-1.0.1/schemas/featureCollectionGeoJSON.yaml")
    one = api.collection_item("villages", items["features"][0]["id"])
    assert one["id"] == items["features"][0]["id"]


# --------------------------------------------------------------------------------------------- a published table
@pytest.fixture(scope="module")
def points_db():
    """A table with integer ids and a date column, published as 'points', incl. points near the antimeridian."""
    with published_tables("pts", [
        "CREATE TABLE points (id integer PRIMARY KEY, name text, registered date, score double precision, "
        "geom geometry(Point, 4326))",
        "CREATE INDEX points_geom ON points USING gist (geom)",
        "INSERT INTO points SELECT i, 'p' || i, DATE '2015-01-01' + (i * 7 % 2000), "
        "(i * 37 % 100) / 10.0, ST_SetSRID(ST_MakePoint(123.3 + (i * 7919 % 1600) / 1000.0, "
        "41.9 + (i * 104729 % 1300) / 1000.0), 4326) FROM generate_series(1, 2900) i",
        "INSERT INTO points SELECT 3000 + i, 'am' || i, DATE '2020-01-01', 1, "
        "ST_SetSRID(ST_MakePoint(CASE WHEN i % 2 = 0 THEN 179.5 + i / 200.0 ELSE -179.5 - i / 200.0 "
        "END, -17 + i / 100.0), 4326) FROM generate_series(1, 99) i",
        "CREATE TABLE edge (id text PRIMARY KEY, f double precision, n numeric, t text, d date, "
        "ts timestamptz, b boolean, a text[], j jsonb, geom geometry(Point, 4326))",
        "INSERT INTO edge VALUES "
        "('nan', 'NaN', 'NaN', E'quote \" back\\\\ nl\\n tab\\t 铁岭 ☃', '2020-02-29', "
        "'2020-06-01 12:30:00+08', true, '{x,\"y z\"}', '{\"k\": [1, null]}', NULL), "
        "('inf', 'Infinity', '-Infinity', '', '1999-12-31', NULL, false, '{}', 'null', "
        "'SRID=4326;POINT(1 2)'), "
        "('num', 1.5e300, 123.4500, NULL, NULL, NULL, NULL, NULL, NULL, 'SRID=4326;POINT(-1 -2)')",
    ], [("points", "Points", "registered"), ("edge", "Edge values", None)]) as db:
        yield db


@pytest.fixture(scope="module")
def pygeoapi_provider(points_db):
    from pygeoapi.provider.sql import PostgreSQLProvider

    url = make_url(points_db.url)
    return PostgreSQLProvider({
        "name": "PostgreSQL", "type": "feature", "table": "points", "id_field": "id", "geom_field": "geom",
        "time_field": "registered",
        "data": {"host": url.host, "port": url.port or 5432, "dbname": url.database, "user": url.username,
                 "password": url.password or "", "search_path": ["public"]},
    })


QUERIES = [
    {"limit": 10},
    {"limit": 50, "offset": 100},
    {"limit": 500, "offset": 2400},
    {"bbox": [123.5, 42.0, 124.0, 42.5], "limit": 1000},
    {"bbox": [124.0, 42.5, 125.0, 43.2], "limit": 37, "offset": 20},
    {"datetime": "2017-03-01/2018-03-01", "limit": 1000},
    {"datetime": "2019-06-01/2021-01-01", "bbox": [123.3, 41.9, 124.9, 43.2], "limit": 200, "offset": 10},
    {"datetime": "2016-01-01", "limit": 100},
]


@pytest.mark.parametrize("q", QUERIES, ids=[json.dumps(q) for q in QUERIES])
async def test_same_ids_as_pygeoapi(points_db, pygeoapi_provider, q):
    theirs = pygeoapi_provider.query(offset=q.get("offset", 0), limit=q["limit"], bbox=q.get("bbox", []),
                                      datetime_=q.get("datetime"))
    params = {k: (",".join(map(str, v)) if k == "bbox" else v) for k, v in q.items()}
    async with client_for(settings_for(points_db.url)) as c:
        ours = (await c.get("/collections/points/items", params=params)).json()
    assert [f["id"] for f in ours["features"]] == [f["id"] for f in theirs["features"]]
    assert ours["numberMatched"] == theirs["numberMatched"]
    assert ours["features"], q


async def test_antimeridian_bbox(points_db):
    async with client_for(settings_for(points_db.url)) as c:
        body = (await c.get("/collections/points/items", params={"bbox": "179,-20,-179,20", "limit": 1000})).json()
    ids = sorted(f["id"] for f in body["features"])
    assert ids == list(range(3001, 3100))  # both sides of the antimeridian
    xs = [f["geometry"]["coordinates"][0] for f in body["features"]]
    assert min(xs) < -179 and max(xs) > 179


async def test_integer_ids(points_db):
    async with client_for(settings_for(points_db.url)) as c:
        one = await c.get("/collections/points/items/17")
        assert one.status_code == 200 and one.json()["id"] == 17
        for bad in ("abc", "1.5", "99999999999999999999999"):
            r = await c.get(f"/collections/points/items/{bad}")
            assert r.status_code == 404, bad  # pygeoapi answers 500 to a string id on an integer key
        coll = (await c.get("/collections/points")).json()
        assert coll["extent"]["temporal"]["interval"][0][0].startswith("2015-01-")


async def test_property_values_are_valid_json(points_db):
    async with client_for(settings_for(points_db.url)) as c:
        r = await c.get("/collections/edge/items")
    body = json.loads(r.text)  # strict JSON: NaN or Infinity literals would fail here
    feats = {f["id"]: f for f in body["features"]}
    nan = feats["nan"]["properties"]
    assert nan["f"] is None and nan["n"] is None
    assert nan["t"] == 'quote " back\\ nl\n tab\t 铁岭 ☃'
    assert nan["d"] == "2020-02-29" and nan["ts"] == "2020-06-01T04:30:00+00:00"
    assert nan["b"] is True and nan["a"] == ["x", "y z"] and nan["j"] == {"k": [1, None]}
    assert feats["nan"]["geometry"] is None
    inf = feats["inf"]["properties"]
    assert inf["f"] is None and inf["n"] is None and inf["t"] == "" and inf["b"] is False and inf["a"] == []
    assert feats["inf"]["geometry"] == {"type": "Point", "coordinates": [1, 2]}
    num = feats["num"]["properties"]
    assert num["f"] == 1.5e300 and num["n"] == 123.45 and num["t"] is None and num["d"] is None
