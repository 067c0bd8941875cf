"""OGC API - Tiles (issue 19): vector tiles decoded with mapbox-vector-tile and checked against the features API on the
demo (real PostGIS, real HTTP). The oracle of a tile's content is ``items?bbox=`` over the tile's bounds widened by
the tile buffer, computed here with pyproj from morecantile's tile corners."""

from __future__ import annotations

import subprocess

import mapbox_vector_tile
import morecantile
import pytest
from conftest import _make_keys
from pyproj import Transformer
from tpa_testing import ThrowawayDatabase, client_for, settings_for

from app.models.codes import Role

EXTENT, BUFFER = 4096, 64
MVT = "application/vnd.mapbox-vector-tile"
TO_LONLAT = Transformer.from_crs(3857, 4326, always_xy=True)
TO_MERCATOR = Transformer.from_crs(4326, 3857, always_xy=True)
WEB = morecantile.tms.get("WebMercatorQuad")
CRS84 = morecantile.tms.get("WorldCRS84Quad")
_T = "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/"


def decode(content: bytes) -> dict:
    return mapbox_vector_tile.decode(content, default_options={"y_coord_down": True})


def buffered_lonlat(tms: morecantile.TileMatrixSet, tile: morecantile.Tile) -> tuple[float, float, float, float]:
    b = tms.xy_bounds(tile)
    dx, dy = (b.right - b.left) * BUFFER / EXTENT, (b.top - b.bottom) * BUFFER / EXTENT
    x0, y0, x1, y1 = b.left - dx, b.bottom - dy, b.right + dx, b.top + dy
    if tms is WEB:
        (x0, y0), (x1, y1) = TO_LONLAT.transform(x0, y0), TO_LONLAT.transform(x1, y1)
    return x0, y0, x1, y1


async def items_ids(c, collection: str, bbox, headers=None, **params) -> set[str]:
    r = await c.get(f"/collections/{collection}/items", headers=headers or {},
                    params={"bbox": ",".join(f"{v:.10f}" for v in bbox), "limit": 10000, **params})
    assert r.status_code == 200, r.text
    # features without a geometry match every bbox (OGC API - Features) but cannot be drawn in a tile
    return {str(f["id"]) for f in r.json()["features"] if f["geometry"] is not None}


async def get_tile(c, path: str, headers=None, **params):
    r = await c.get(path, headers=headers or {}, params=params)
    assert r.status_code in (200, 204), r.text
    if r.status_code == 204:
        return r, {}
    assert r.headers["content-type"] == MVT
    return r, decode(r.content)


async def a_feature(c, collection: str, headers=None) -> dict:
    return (await c.get(f"/collections/{collection}/items", params={"limit": 1}, headers=headers or {})).json()[
        "features"][0]


async def test_conformance_tile_matrix_sets_and_links(api):
    classes = set((await api.get("/conformance")).json()["conformsTo"])
    for c in ("core", "tileset", "tilesets-list", "geodata-tilesets", "dataset-tilesets", "collections-selection",
              "datetime", "oas30", "html", "mvt"):
        assert _T + c in classes
    sets = (await api.get("/tileMatrixSets")).json()["tileMatrixSets"]
    assert [s["id"] for s in sets] == ["WebMercatorQuad", "WorldCRS84Quad", "CGCS2000Quad"]
    web = (await api.get("/tileMatrixSets/WebMercatorQuad")).json()
    assert web["crs"] == "http://www.opengis.net/def/crs/EPSG/0/3857"
    assert web["tileMatrices"][0]["scaleDenominator"] == pytest.approx(559082264.0287178)  # the registered numbers
    assert web["tileMatrices"][0]["pointOfOrigin"] == pytest.approx([-20037508.3427892, 20037508.3427892])
    cgcs = (await api.get("/tileMatrixSets/CGCS2000Quad")).json()
    assert cgcs["crs"] == "http://www.opengis.net/def/crs/EPSG/0/4490" and cgcs["orderedAxes"] == ["Lat", "Lon"]
    assert cgcs["tileMatrices"][0]["pointOfOrigin"] == [90, -180]  # latitude first, as EPSG:4490 is defined
    assert (cgcs["tileMatrices"][0]["matrixWidth"], cgcs["tileMatrices"][0]["matrixHeight"]) == (2, 1)
    assert (await api.get("/tileMatrixSets/Nope")).status_code == 404
    landing = {lk["rel"] for lk in (await api.get("/")).json()["links"]}
    assert {"http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector",
            "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes"} <= landing
    coll = (await api.get("/collections/villages")).json()
    assert any(lk["rel"].endswith("tilesets-vector") for lk in coll["links"])
    persons = (await api.get("/collections/persons/tiles", headers={}))
    assert persons.status_code in (401, 404)
    html = await api.get("/collections/villages/tiles/WebMercatorQuad", params={"f": "html"})
    assert html.status_code == 200 and "maplibre-gl-csp.js" in html.text and "tileMatrixSetLimits" not in html.text


async def test_tileset_limits_follow_the_data_extent(api):
    doc = (await api.get("/collections/villages/tiles/WebMercatorQuad")).json()
    bbox = (await api.get("/collections/villages")).json()["extent"]["spatial"]["bbox"][0]
    assert doc["dataType"] == "vector" and doc["tileMatrixSetURI"].endswith("/WebMercatorQuad")
    assert doc["layers"][0]["id"] == "villages" and doc["layers"][0]["geometryDimension"] == 0
    item = next(lk for lk in doc["links"] if lk["rel"] == "item")
    assert item["templated"] and "{tileMatrix}/{tileRow}/{tileCol}" in item["href"] and item["type"] == MVT
    for z in (0, 8, 12, 16):
        lim = doc["tileMatrixSetLimits"][z]
        ul, lr = WEB.tile(bbox[0], bbox[3], z), WEB.tile(bbox[2], bbox[1], z)
        assert (lim["minTileCol"], lim["maxTileCol"], lim["minTileRow"], lim["maxTileRow"]) == (ul.x, lr.x, ul.y, lr.y)
    outside = doc["tileMatrixSetLimits"][12]
    r = await api.get("/collections/villages/tiles/WebMercatorQuad/12/"
                      f"{outside['maxTileRow'] + 1}/{outside['minTileCol']}")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert (await api.get("/collections/villages/tiles/WebMercatorQuad/3/9/0")).status_code == 404  # not in matrix 3
    assert (await api.get("/collections/villages/tiles/WebMercatorQuad/30/0/0")).status_code == 404


@pytest.mark.parametrize("collection", ["villages", "facilities", "projects"])
async def test_a_tile_holds_the_features_of_its_bounds(api, collection):
    feature = await a_feature(api, collection)
    lon, lat = feature["geometry"]["coordinates"][:2]
    for z in (8, 11, 14):
        tile = WEB.tile(lon, lat, z)
        _, layers = await get_tile(api, f"/collections/{collection}/tiles/WebMercatorQuad/{z}/{tile.y}/{tile.x}")
        assert set(layers) == {collection}
        feats = layers[collection]["features"]
        ids = {str(f["properties"]["id"]) for f in feats}
        expected = await items_ids(api, collection, buffered_lonlat(WEB, tile))
        assert ids == expected and str(feature["id"]) in ids, z
        # coordinates are in tile space: the feature's Web Mercator position on the 4096 grid
        b = WEB.xy_bounds(tile)
        x, y = TO_MERCATOR.transform(lon, lat)
        px, py = (x - b.left) / (b.right - b.left) * EXTENT, (b.top - y) / (b.top - b.bottom) * EXTENT
        mine = next(f for f in feats if str(f["properties"]["id"]) == str(feature["id"]))
        assert mine["geometry"]["coordinates"] == pytest.approx([px, py], abs=1.0)
        for f in feats:
            if f["geometry"]["type"] == "Point":
                fx, fy = f["geometry"]["coordinates"]
                assert -BUFFER <= fx <= EXTENT + BUFFER and -BUFFER <= fy <= EXTENT + BUFFER


async def test_geographic_tile_matrix_sets(api):
    feature = await a_feature(api, "villages")
    lon, lat = feature["geometry"]["coordinates"]
    for tms_id in ("WorldCRS84Quad", "CGCS2000Quad"):
        tile = CRS84.tile(lon, lat, 11)  # the CGCS2000 quad has the same matrices on EPSG:4490
        _, layers = await get_tile(api, f"/collections/villages/tiles/{tms_id}/11/{tile.y}/{tile.x}")
        feats = layers["villages"]["features"]
        assert {f["properties"]["id"] for f in feats} == await items_ids(api, "villages",
                                                                         buffered_lonlat(CRS84, tile))
        b = CRS84.xy_bounds(tile)
        mine = next(f for f in feats if f["properties"]["id"] == feature["id"])
        expected = [(lon - b.left) / (b.right - b.left) * EXTENT, (b.top - lat) / (b.top - b.bottom) * EXTENT]
        assert mine["geometry"]["coordinates"] == pytest.approx(expected, abs=1.0)


async def test_polygons_are_clipped_and_simplified(api):
    county = (await api.get("/collections/admin-units/items", params={"level": 3, "limit": 1})).json()["features"][0]
    lon, lat = (await api.get("/collections/villages/items", params={"limit": 1})).json()["features"][0][
        "geometry"]["coordinates"]
    sizes = {}
    for z in (7, 10, 13):
        tile = WEB.tile(lon, lat, z)
        r, layers = await get_tile(api, f"/collections/admin-units/tiles/WebMercatorQuad/{z}/{tile.y}/{tile.x}")
        ids = {f["properties"]["id"] for f in layers["admin-units"]["features"]}
        expected = await items_ids(api, "admin-units", buffered_lonlat(WEB, tile))
        assert ids <= expected and len(ids) >= 0.99 * len(expected)  # units below a grid unit vanish at a zoom
        if z >= 10:
            assert ids == expected
        for f in layers["admin-units"]["features"]:
            rings = f["geometry"]["coordinates"]
            flat = [pt for poly in (rings if f["geometry"]["type"] == "MultiPolygon" else [rings]) for ring in poly
                    for pt in ring]
            assert all(-BUFFER <= x <= EXTENT + BUFFER and -BUFFER <= y <= EXTENT + BUFFER for x, y in flat)
        sizes[z] = len(r.content)
    assert county["properties"]["level"] == 3
    whole = await get_tile(api, "/collections/admin-units/tiles/WebMercatorQuad/7/" +
                           f"{WEB.tile(lon, lat, 7).y}/{WEB.tile(lon, lat, 7).x}", properties="")
    assert all(set(f["properties"]) == {"id"} for f in whole[1]["admin-units"]["features"])


async def test_tile_parameters(api):
    feature = await a_feature(api, "villages")
    lon, lat = feature["geometry"]["coordinates"]
    tile = WEB.tile(lon, lat, 10)
    path = f"/collections/villages/tiles/WebMercatorQuad/10/{tile.y}/{tile.x}"
    box = buffered_lonlat(WEB, tile)
    _, layers = await get_tile(api, path, properties="name,population")
    assert all(set(f["properties"]) == {"id", "name", "population"} for f in layers["villages"]["features"])
    _, layers = await get_tile(api, path, filter="population > 800")
    ids = {f["properties"]["id"] for f in layers["villages"]["features"]}
    assert ids == await items_ids(api, "villages", box, filter="population > 800") and ids
    assert all(f["properties"]["population"] > 800 for f in layers["villages"]["features"])
    _, layers = await get_tile(api, path, is_poverty_village="true")
    assert {f["properties"]["id"] for f in layers["villages"]["features"]} == await items_ids(
        api, "villages", box, is_poverty_village="true")
    for when in ("2020-06-01", "2019-01-01/2019-12-31"):
        r, layers = await get_tile(api, path, datetime=when)
        got = {f["properties"]["id"] for f in layers.get("villages", {"features": []})["features"]}
        assert got == await items_ids(api, "villages", box, datetime=when)
    assert r.status_code == 204 and r.content == b""  # nothing valid in 2019: an empty tile, inside the limits
    assert (await get_tile(api, path, filter="population > 1000000"))[0].status_code == 204
    for bad in ({"bbox": "1,2,3,4"}, {"limit": 5}, {"f": "json"}, {"filter": "nope >"}, {"properties": "nope"},
                {"datetime": "yesterday"}, {"crs": "http://www.opengis.net/def/crs/EPSG/0/3857"}):
        r = await api.get(path, params=bad)
        assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json", bad
    assert (await api.get("/collections/persons/tiles/WebMercatorQuad/0/0/0")).status_code in (401, 404)


async def test_households_need_a_key_and_stay_displaced(api, api_keys):
    path_of = "/collections/households/tiles/WebMercatorQuad/{}/{}/{}"
    assert (await api.get(path_of.format(0, 0, 0))).status_code == 401
    assert (await api.get("/collections/households/tiles")).status_code == 401
    analyst = {"Authorization": f"Bearer {api_keys[Role.analyst]}"}
    admin = {"Authorization": f"Bearer {api_keys[Role.admin]}"}
    seen = await a_feature(api, "households", analyst)
    lon, lat = seen["geometry"]["coordinates"]
    true_lon, true_lat = (await api.get(f"/collections/households/items/{seen['id']}", headers=admin)).json()[
        "geometry"]["coordinates"]
    assert (lon, lat) != (true_lon, true_lat)
    for z in (12, 16):
        tile = WEB.tile(lon, lat, z)
        r, layers = await get_tile(api, path_of.format(z, tile.y, tile.x), headers=analyst)
        assert r.headers["cache-control"] == "private, no-cache"
        feats = layers["households"]["features"]
        assert {f["properties"]["id"] for f in feats} == await items_ids(api, "households", buffered_lonlat(WEB, tile),
                                                                         headers=analyst)
        b = WEB.xy_bounds(tile)
        mine = next(f for f in feats if f["properties"]["id"] == seen["id"])
        x, y = TO_MERCATOR.transform(lon, lat)  # where the analyst's items put it, not where it is
        assert mine["geometry"]["coordinates"] == pytest.approx(
            [(x - b.left) / (b.right - b.left) * EXTENT, (b.top - y) / (b.top - b.bottom) * EXTENT], abs=1.0)
        tx, ty = TO_MERCATOR.transform(true_lon, true_lat)
        true_px = [(tx - b.left) / (b.right - b.left) * EXTENT, (b.top - ty) / (b.top - b.bottom) * EXTENT]
        if z == 16:  # 100-500 m away: hundreds of grid units at z16
            assert abs(mine["geometry"]["coordinates"][0] - true_px[0]) + abs(
                mine["geometry"]["coordinates"][1] - true_px[1]) > 50
    # a filter on the true position cannot find it either: the tile filters what the role sees
    tile = WEB.tile(true_lon, true_lat, 16)
    r, layers = await get_tile(api, path_of.format(16, tile.y, tile.x), headers=analyst)
    assert {f["properties"]["id"] for f in layers.get("households", {"features": []})["features"]} == \
        await items_ids(api, "households", buffered_lonlat(WEB, tile), headers=analyst)


async def test_dataset_tiles_and_collection_selection(api, api_keys):
    feature = await a_feature(api, "villages")
    tile = WEB.tile(*feature["geometry"]["coordinates"], 10)
    path = f"/tiles/WebMercatorQuad/10/{tile.y}/{tile.x}"
    r, layers = await get_tile(api, path)
    visible = {c["id"] for c in (await api.get("/collections")).json()["collections"]}
    assert {"villages", "admin-units"} <= set(layers) <= visible and "households" not in layers
    assert r.headers["cache-control"] == "public, no-cache"
    _, layers = await get_tile(api, path, collections="villages,facilities")
    assert set(layers) <= {"villages", "facilities"} and "villages" in layers
    one, _ = await get_tile(api, f"/collections/villages/tiles/WebMercatorQuad/10/{tile.y}/{tile.x}")
    assert {f["properties"]["id"] for f in layers["villages"]["features"]} == {
        f["properties"]["id"] for f in decode(one.content)["villages"]["features"]}
    assert (await api.get(path, params={"collections": "households"})).status_code == 401
    analyst = {"Authorization": f"Bearer {api_keys[Role.analyst]}"}
    r, layers = await get_tile(api, path, headers=analyst, collections="households,villages")
    assert set(layers) == {"households", "villages"} and r.headers["cache-control"] == "private, no-cache"
    assert (await api.get(path, params={"collections": "persons"})).status_code in (401, 404)
    assert (await api.get(path, params={"filter": "x > 1"})).status_code == 400
    meta = (await api.get("/tiles/WebMercatorQuad", params={"collections": "villages,facilities"})).json()
    assert [lyr["id"] for lyr in meta["layers"]] == ["villages", "facilities"]
    assert "collections=villages%2Cfacilities" in next(lk for lk in meta["links"] if lk["rel"] == "item")["href"]
    tj = (await api.get("/tiles/WebMercatorQuad/tilejson.json", params={"collections": "villages"})).json()
    assert [v["id"] for v in tj["vector_layers"]] == ["villages"]


async def test_tilejson_and_style(api):
    tj = (await api.get("/collections/villages/tiles/WebMercatorQuad/tilejson.json",
                        params={"filter": "population > 800"})).json()
    assert tj["tilejson"] == "3.0.0" and tj["scheme"] == "xyz"
    assert tj["tiles"][0].endswith(
        "/collections/villages/tiles/WebMercatorQuad/{z}/{y}/{x}?filter=population+%3E+800&f=mvt")
    fields = tj["vector_layers"][0]["fields"]
    assert fields["population"] == "Number" and fields["name"] == "String" and fields["is_poverty_village"] == "Boolean"
    bbox = (await api.get("/collections/villages")).json()["extent"]["spatial"]["bbox"][0]
    assert tj["bounds"] == pytest.approx(bbox)
    assert (await api.get("/collections/villages/tiles/WorldCRS84Quad/tilejson.json")).status_code == 404
    style = (await api.get("/collections/villages/styles/default", params={"f": "mapbox"})).json()
    assert style["sources"]["villages"] == {"type": "vector",
                                            "url": "http://testserver/collections/villages/tiles/WebMercatorQuad/"
                                                   "tilejson.json"}
    assert style["layers"][0]["source-layer"] == "villages" and style["layers"][0]["type"] == "circle"
    assert (await api.get("/collections/villages/styles/default", params={"f": "qml"})).status_code == 404


async def test_tile_cap(demo_database):
    settings = settings_for(demo_database.url)
    settings.tiles.max_features = 25
    async with client_for(settings) as c:
        feature = await a_feature(c, "villages")
        tile = WEB.tile(*feature["geometry"]["coordinates"], 9)
        _, layers = await get_tile(c, f"/collections/villages/tiles/WebMercatorQuad/9/{tile.y}/{tile.x}")
        ids = {f["properties"]["id"] for f in layers["villages"]["features"]}
        expected = await items_ids(c, "villages", buffered_lonlat(WEB, tile))
        assert len(expected) > 25 and len(ids) == 25 and ids <= expected


@pytest.fixture(scope="module")
def tiles_db(demo_template: str):
    with ThrowawayDatabase("tiles", template=demo_template) as db:
        yield db


async def test_tiles_answer_304_until_an_edit(tiles_db):
    keys = _make_keys(tiles_db.url)
    admin = {"Authorization": f"Bearer {keys[Role.admin]}"}
    async with client_for(settings_for(tiles_db.url)) as c:
        feature = await a_feature(c, "villages")
        tile = WEB.tile(*feature["geometry"]["coordinates"], 12)
        paths = [f"/collections/villages/tiles/WebMercatorQuad/12/{tile.y}/{tile.x}",
                 f"/tiles/WebMercatorQuad/12/{tile.y}/{tile.x}"]
        etags = []
        for path in paths:
            first = await c.get(path)
            etag = first.headers["etag"]
            again = await c.get(path, headers={"If-None-Match": etag})
            assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
            assert again.headers["cache-control"] == "public, no-cache"
            etags.append(etag)
        other = await c.get(paths[0], params={"properties": "name"}, headers={"If-None-Match": etags[0]})
        assert other.status_code == 200  # another query, another validator
        r = await c.patch(f"/collections/villages/items/{feature['id']}",
                          content=b'{"properties": {"population": 4321}}',
                          headers={"content-type": "application/merge-patch+json", **admin})
        assert r.status_code == 200, r.text
        for path, etag in zip(paths, etags, strict=True):
            after = await c.get(path, headers={"If-None-Match": etag})
            assert after.status_code == 200 and after.headers["etag"] != etag
        mine = next(f for f in decode(after.content)["villages"]["features"] if f["properties"]["id"] == feature["id"])
        assert mine["properties"]["population"] == 4321


def test_gdal_reads_a_tile_and_the_tilejson(live_server):
    import httpx

    feature = httpx.get(f"{live_server}/collections/villages/items", params={"limit": 1}).json()["features"][0]
    lon, lat = feature["geometry"]["coordinates"]
    tile = WEB.tile(lon, lat, 12)
    url = f"/vsicurl/{live_server}/collections/villages/tiles/WebMercatorQuad/12/{tile.y}/{tile.x}?f=mvt"
    opts = ["-oo", "Z=12", "-oo", f"X={tile.x}", "-oo", f"Y={tile.y}"]
    plain = subprocess.run(["ogrinfo", "-ro", "-al", f"MVT:{url}", *opts], capture_output=True, text=True, check=True)
    assert "Layer name: villages" in plain.stdout and f"id (String) = {feature['id']}" in plain.stdout
    assert "population: Integer" in plain.stdout or "population (Integer)" in plain.stdout
    x, y = TO_MERCATOR.transform(lon, lat)
    points = [line for line in plain.stdout.splitlines() if line.strip().startswith("POINT")]
    coords = [tuple(float(v) for v in p.strip()[7:-1].split()) for p in points]
    assert any(abs(cx - x) < 10 and abs(cy - y) < 10 for cx, cy in coords)  # georeferenced in EPSG:3857
    meta = f"/vsicurl/{live_server}/collections/villages/tiles/WebMercatorQuad/tilejson.json"
    with_meta = subprocess.run(["ogrinfo", "-ro", "-so", "-al", f"MVT:{url}", *opts, "-oo", f"METADATA_FILE={meta}"],
                               capture_output=True, text=True, check=True)
    # the field types now come from the TileJSON's vector_layers (Number → Real), not from the tile's values
    assert "population: Real" in with_meta.stdout and "name: String" in with_meta.stdout
