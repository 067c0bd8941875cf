"""OGC API - Features Part 2 (CRS by reference): reprojection checked against pyproj."""

from __future__ import annotations

import pytest
from ogc_validation import validate, validate_problem
from pyproj import Transformer

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG = "http://www.opengis.net/def/crs/EPSG/0/{}"
P2 = "part2-1.0.1/schemas/"


async def test_collections_list_crs_and_storage_crs(api):
    body = (await api.get("/collections")).json()
    validate(body, P2 + "collections.yaml")
    villages = next(c for c in body["collections"] if c["id"] == "villages")
    validate(villages, P2 + "collection.yaml")
    assert villages["crs"][0] == CRS84
    for code in (4326, 3857, 4490, 32651):  # 32651: the demo region's metric CRS (UTM 51N)
        assert EPSG.format(code) in villages["crs"]
    assert villages["storageCrs"] == CRS84


@pytest.mark.parametrize("code", [3857, 4326, 4490, 32651])
async def test_items_are_reprojected_like_pyproj(api, code):
    ref = (await api.get("/collections/villages/items", params={"limit": 50})).json()["features"]
    r = await api.get("/collections/villages/items", params={"limit": 50, "crs": EPSG.format(code)})
    assert r.status_code == 200
    assert r.headers["content-crs"] == f"<{EPSG.format(code)}>"
    got = r.json()["features"]
    # the CRS's own axis order (always_xy=False): latitude first for EPSG:4326 and EPSG:4490
    t = Transformer.from_crs("OGC:CRS84", f"EPSG:{code}", always_xy=False)
    tol = 1e-6 if code in (4326, 4490) else 1e-3
    for a, b in zip(ref, got, strict=True):
        assert a["id"] == b["id"]
        x, y = t.transform(*a["geometry"]["coordinates"])
        assert b["geometry"]["coordinates"] == pytest.approx([x, y], abs=tol)
    if code in (4326, 4490):
        assert got[0]["geometry"]["coordinates"][0] == pytest.approx(ref[0]["geometry"]["coordinates"][1], abs=1e-6)


async def test_lines_and_single_features_in_other_crs(api):
    projects = (await api.get("/collections/projects/items",
                              params={"limit": 300, "filter": "type = 'infrastructure_road'"})).json()["features"]
    road = projects[0]
    assert road["geometry"]["type"] == "LineString"
    r = await api.get(f"/collections/projects/items/{road['id']}", params={"crs": EPSG.format(32651)})
    assert r.status_code == 200 and r.headers["content-crs"] == f"<{EPSG.format(32651)}>"
    t = Transformer.from_crs("OGC:CRS84", "EPSG:32651", always_xy=True)
    for (lon, lat), (e, n) in zip(road["geometry"]["coordinates"], r.json()["geometry"]["coordinates"], strict=True):
        assert [e, n] == pytest.approx(list(t.transform(lon, lat)), abs=1e-3)
    plain = await api.get(f"/collections/projects/items/{road['id']}")
    assert plain.headers["content-crs"] == f"<{CRS84}>"
    assert r.headers["etag"] == plain.headers["etag"]  # one resource state, whatever the CRS


@pytest.mark.parametrize("code", [3857, 32651, 4326])
async def test_bbox_crs(api, code):
    """A box in another CRS selects exactly the features whose projected point lies in it."""
    all_ = (await api.get("/collections/villages/items", params={"limit": 10000})).json()["features"]
    t = Transformer.from_crs("OGC:CRS84", f"EPSG:{code}", always_xy=False)
    pts = {f["id"]: t.transform(*f["geometry"]["coordinates"]) for f in all_}
    xs = sorted(p[0] for p in pts.values())
    ys = sorted(p[1] for p in pts.values())

    def between(v: list[float], i: int) -> float:  # never exactly on a point
        return (v[i] + v[i + 1]) / 2

    box = (between(xs, len(xs) // 4), between(ys, len(ys) // 4), between(xs, 3 * len(xs) // 4),
           between(ys, 3 * len(ys) // 4))
    expected = {i for i, (x, y) in pts.items() if box[0] <= x <= box[2] and box[1] <= y <= box[3]}
    r = await api.get("/collections/villages/items", params={
        "limit": 10000, "bbox": ",".join(map(str, box)), "bbox-crs": EPSG.format(code)})
    assert r.status_code == 200, r.text
    got = {f["id"] for f in r.json()["features"]}
    assert expected and got == expected


@pytest.mark.parametrize(("params", "message"), [
    ({"crs": EPSG.format(4269)}, "not a coordinate reference system this collection offers"),
    ({"crs": "EPSG:nonsense"}, "not a coordinate reference system"),
    ({"bbox-crs": "http://example.com/crs/1", "bbox": "1,2,3,4"}, "bbox-crs"),
    ({"bbox-crs": EPSG.format(3857), "bbox": "10,20,5,30"}, "lower corner"),
    ({"crs": EPSG.format(3857), "f": "json", "limit": "0"}, "limit"),
])
async def test_bad_crs_is_400(api, params, message):
    r = await api.get("/collections/villages/items", params=params)
    assert r.status_code == 400
    html = await api.get("/collections/villages/items", params={"crs": EPSG.format(3857), "f": "html"})
    assert html.status_code == 400 and "CRS84 only" in html.text
    validate_problem(r.json())
    assert message in r.json()["detail"]


async def test_crs_on_a_collection_without_geometry(api, api_keys):
    from app.models.codes import Role

    r = await api.get("/collections/persons/items", params={"crs": EPSG.format(3857)},
                      headers={"Authorization": f"Bearer {api_keys[Role.admin]}"})
    assert r.status_code == 400 and "no geometry" in r.json()["detail"]


async def test_safe_curie_is_accepted(api):
    r = await api.get("/collections/villages/items", params={"limit": 1, "crs": "[EPSG:3857]"})
    assert r.status_code == 200 and r.headers["content-crs"] == f"<{EPSG.format(3857)}>"
