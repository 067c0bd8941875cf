"""Bulk formats of the items (issue 19): FlatGeobuf (read back by GDAL through pyogrio) and GeoParquet 1.1 (read back
by pyarrow) hold the same features, properties and geometries as the GeoJSON items of the same query, honour filters,
CRS, properties and access, and page with Link headers. Real PostGIS, real HTTP through the app."""

from __future__ import annotations

import datetime as dt
import io
import re

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio.raw
import pytest
import shapely
from shapely.geometry import shape
from tpa_testing import client_for, settings_for

from app.models.codes import Role

EPSG = "http://www.opengis.net/def/crs/EPSG/0/{}"


async def geojson(c, collection: str, headers=None, **params) -> list[dict]:
    r = await c.get(f"/collections/{collection}/items", params={"limit": 10000, **params}, headers=headers or {})
    assert r.status_code == 200, r.text
    return r.json()["features"]


async def download(c, collection: str, fmt: str, headers=None, **params):
    r = await c.get(f"/collections/{collection}/items", params={"f": fmt, **params}, headers=headers or {})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == {"fgb": "application/flatgeobuf",
                                         "parquet": "application/vnd.apache.parquet"}[fmt]
    assert r.headers["content-disposition"] == f'attachment; filename="{collection}.{fmt}"'
    return r


def read_parquet(content: bytes) -> tuple[pa.Table, dict]:
    table = pq.read_table(io.BytesIO(content))
    return table, orjson.loads(table.schema.metadata[b"geo"]) if b"geo" in (table.schema.metadata or {}) else {}


def read_fgb(content: bytes, tmp_path) -> tuple[dict, list, dict]:
    path = tmp_path / "out.fgb"
    path.write_bytes(content)
    meta, _, geoms, fields = pyogrio.raw.read(str(path))
    return meta, list(shapely.from_wkb(geoms)), dict(zip(meta["fields"], fields, strict=True))


def same_value(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, rel=1e-12)
    if isinstance(a, (dt.date, dt.datetime)):
        return a.isoformat()[: len(b)] == b or str(a) == b
    return a == b


async def test_geoparquet_equals_the_geojson_items(api):
    params = {"filter": "population > 600", "crs": EPSG.format(3857), "sortby": "-population"}
    features = await geojson(api, "villages", **params)
    r = await download(api, "villages", "parquet", **params)
    assert r.headers["ogc-numbermatched"] == str(len(features)) == r.headers["ogc-numberreturned"]
    table, geo = read_parquet(r.content)
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    column = geo["columns"]["geometry"]
    assert column["encoding"] == "WKB" and column["geometry_types"] == ["Point"]
    assert column["crs"]["id"] == {"authority": "EPSG", "code": 3857}  # PROJJSON
    assert column["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    rows = table.to_pylist()
    assert [row["id"] for row in rows] == [f["id"] for f in features]  # same order (sortby)
    for row, f in zip(rows, features, strict=True):
        for name, value in f["properties"].items():
            assert same_value(row[name], value), (name, row[name], value)
        g = shapely.from_wkb(row["geometry"])
        assert g.equals_exact(shape(f["geometry"]), 1e-3)
        assert (row["bbox"]["xmin"], row["bbox"]["ymin"], row["bbox"]["xmax"], row["bbox"]["ymax"]) == g.bounds
    assert table.schema.field("population").type == pa.int64()
    assert table.schema.field("valid_from").type == pa.date32()
    assert table.schema.field("is_poverty_village").type == pa.bool_()
    assert table.schema.field("arable_mu").type == pa.float64()


async def test_flatgeobuf_read_by_gdal_equals_the_geojson_items(api, tmp_path):
    params = {"bbox": "123.5,42.2,124.3,42.8", "properties": "name,population,is_poverty_village"}
    features = await geojson(api, "villages", **params)
    r = await download(api, "villages", "fgb", **params)
    meta, geoms, fields = read_fgb(r.content, tmp_path)
    assert meta["geometry_type"] == "Point" and meta["crs"] == "EPSG:4326"
    assert set(fields) == {"id", "name", "population", "is_poverty_village"}
    by_id = {f["id"]: f for f in features}
    assert sorted(fields["id"]) == sorted(by_id) and len(features) > 50
    for i, fid in enumerate(fields["id"]):
        f = by_id[fid]
        assert fields["name"][i] == f["properties"]["name"] and fields["population"][i] == f["properties"]["population"]
        assert bool(fields["is_poverty_village"][i]) == f["properties"]["is_poverty_village"]
        assert geoms[i].equals_exact(shape(f["geometry"]), 1e-7)


async def test_polygons_and_latitude_first_crs_stay_x_y(api, tmp_path):
    # EPSG:4326 is latitude first in GeoJSON (OGC Part 2); both bulk formats are longitude first, as they prescribe
    params = {"level": 4, "crs": EPSG.format(4326), "limit": 20}
    features = await geojson(api, "admin-units", **params)
    parquet, geo = read_parquet((await download(api, "admin-units", "parquet", **params)).content)
    assert geo["columns"]["geometry"]["crs"]["id"]["code"] == 4326
    _, geoms, fields = read_fgb((await download(api, "admin-units", "fgb", **params)).content, tmp_path)
    assert fields["id"].tolist() == [f["id"] for f in features]  # no spatial index: the query's order
    for f, row, g in zip(features, parquet.to_pylist(), geoms, strict=True):
        expected = shapely.transform(shape(f["geometry"]), lambda xy: xy[:, ::-1])  # lat/lon → lon/lat
        assert row["id"] == f["id"] and shapely.from_wkb(row["geometry"]).equals_exact(expected, 1e-7)
        assert g.equals_exact(expected, 1e-7)


async def test_restricted_collections_and_access(api, api_keys, tmp_path):
    assert (await api.get("/collections/households/items", params={"f": "parquet"})).status_code == 401
    analyst = {"Authorization": f"Bearer {api_keys[Role.analyst]}"}
    features = await geojson(api, "households", analyst, limit=300)
    r = await download(api, "households", "fgb", analyst, limit=300)
    _, geoms, fields = read_fgb(r.content, tmp_path)
    seen = {f["id"]: shape(f["geometry"]) for f in features}
    assert all(geoms[i].equals_exact(seen[fid], 1e-7) for i, fid in enumerate(fields["id"]))  # displaced points
    admin = {"Authorization": f"Bearer {api_keys[Role.admin]}"}
    persons = await api.get("/collections/persons/items", params={"f": "parquet", "limit": 50}, headers=admin)
    table, geo = read_parquet(persons.content)
    assert table.num_rows == 50 and geo == {} and "geometry" not in table.schema.names
    refused = await api.get("/collections/persons/items", params={"f": "fgb"}, headers=admin)
    assert refused.status_code == 400 and "FlatGeobuf" in refused.json()["detail"]


async def test_bulk_pages_are_large_and_linked(demo_database):
    settings = settings_for(demo_database.url)
    settings.api.bulk_max_limit = 700
    async with client_for(settings) as c:
        total = len(await geojson(c, "villages"))
        assert total > 1000  # more than one bulk page here, and far more than a default JSON page (10)
        first = await download(c, "villages", "parquet")
        rows = read_parquet(first.content)[0].to_pylist()
        assert len(rows) == 700 and first.headers["ogc-numbermatched"] == str(total)
        nxt = re.search(r'<([^>]+)>; rel="next"; type="application/vnd.apache.parquet"', first.headers["link"])
        second = await c.get(nxt.group(1))
        more = read_parquet(second.content)[0].to_pylist()
        assert len(more) == total - 700 and 'rel="next"' not in second.headers["link"]
        assert [r["id"] for r in rows + more] == [f["id"] for f in await geojson(c, "villages")]
        accept = await c.get("/collections/villages/items", params={"limit": 5},
                             headers={"Accept": "application/flatgeobuf"})
        assert accept.headers["content-type"] == "application/flatgeobuf"
