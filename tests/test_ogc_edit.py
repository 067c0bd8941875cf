"""OGC API - Features Part 4 on a private copy of the demo: create, replace, update, delete, ETags,
concurrency, validation, roles, and the audit trail."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from ogc_validation import validate_problem
from pyproj import Transformer
from tpa_testing import client_for, fetch, settings_for

from app.models.codes import Role

GEOJSON = {"content-type": "application/geo+json"}
PATCH = {"content-type": "application/merge-patch+json"}


def auth(keys, role: Role) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[role]}"}


def new_facility(fid: str, **props) -> dict:
    return {"type": "Feature", "id": fid, "geometry": {"type": "Point", "coordinates": [123.81, 42.31]},
            "properties": {"region": "tieling-demo", "class": "clinic", "name": "New clinic",
                           "valid_from": "2024-01-01", "source": "test", **props}}


async def post(c, keys, collection, feature, headers=None):
    return await c.post(f"/collections/{collection}/items", content=orjson.dumps(feature),
                        headers={**GEOJSON, **auth(keys, Role.admin), **(headers or {})})


def audit_rows(db, fid):
    return fetch(db.name, "SELECT action, actor, role::text, before, after FROM audit_log WHERE feature_id = $1 "
                          "ORDER BY audit_id", fid)


async def test_create_read_update_replace_delete_with_audit(editor, edit_keys, edit_database):
    admin = auth(edit_keys, Role.admin)
    r = await post(editor, edit_keys, "facilities", new_facility("T-F-1", capacity=12))
    assert r.status_code == 201, r.text
    assert r.headers["location"].endswith("/collections/facilities/items/T-F-1")
    etag = r.headers["etag"]
    got = await editor.get("/collections/facilities/items/T-F-1")
    assert got.headers["etag"] == etag
    assert got.json()["properties"]["capacity"] == 12
    assert got.json()["geometry"]["coordinates"] == [123.81, 42.31]
    # If-None-Match with the current tag: 304
    assert (await editor.get("/collections/facilities/items/T-F-1", headers={"If-None-Match": etag})).status_code == 304

    r = await editor.patch("/collections/facilities/items/T-F-1", content=b'{"properties": {"capacity": 40}}',
                           headers={**PATCH, **admin, "If-Match": etag})
    assert r.status_code == 200 and r.json()["properties"]["capacity"] == 40
    etag2 = r.headers["etag"]
    assert etag2 != etag

    # a stale If-Match: 412, and nothing changes
    r = await editor.patch("/collections/facilities/items/T-F-1", content=b'{"properties": {"capacity": 99}}',
                           headers={**PATCH, **admin, "If-Match": etag})
    assert r.status_code == 412
    validate_problem(r.json())
    assert (await editor.get("/collections/facilities/items/T-F-1")).json()["properties"]["capacity"] == 40

    # replace: properties left out are reset (capacity → null)
    body = new_facility("T-F-1", name="Renamed clinic")
    r = await editor.put("/collections/facilities/items/T-F-1", content=orjson.dumps(body),
                         headers={**GEOJSON, **admin, "If-Match": etag2})
    assert r.status_code == 200
    assert r.json()["properties"]["capacity"] is None and r.json()["properties"]["name"] == "Renamed clinic"

    r = await editor.delete("/collections/facilities/items/T-F-1", headers={**admin, "If-Match": '"stale"'})
    assert r.status_code == 412
    r = await editor.delete("/collections/facilities/items/T-F-1", headers=admin)
    assert r.status_code == 204
    assert (await editor.get("/collections/facilities/items/T-F-1")).status_code == 404

    rows = audit_rows(edit_database, "T-F-1")
    assert [r["action"] for r in rows] == ["create", "update", "replace", "delete"]
    assert all(r["actor"].startswith("key:") and r["role"] == "admin" for r in rows)
    assert rows[0]["before"] is None and rows[-1]["after"] is None
    upd = orjson.loads(rows[1]["before"]), orjson.loads(rows[1]["after"])
    assert upd[0]["properties"]["capacity"] == 12 and upd[1]["properties"]["capacity"] == 40

    # the audit trail is a restricted collection for administrators
    r = await editor.get("/collections/audit/items", params={"filter": "feature_id = 'T-F-1'", "sortby": "at"},
                         headers=admin)
    assert [f["properties"]["action"] for f in r.json()["features"]] == ["create", "update", "replace", "delete"]
    assert (await editor.get("/collections/audit/items", headers=auth(edit_keys, Role.analyst))).status_code == 403


async def test_concurrent_writers_one_wins(edit_database, edit_keys):
    settings = settings_for(edit_database.url)
    async with client_for(settings) as a, client_for(settings) as b:
        r = await post(a, edit_keys, "facilities", new_facility("T-F-2", capacity=1))
        etag = r.headers["etag"]
        headers = {**PATCH, **auth(edit_keys, Role.admin), "If-Match": etag}
        results = await asyncio.gather(
            a.patch("/collections/facilities/items/T-F-2", content=b'{"properties": {"capacity": 2}}', headers=headers),
            b.patch("/collections/facilities/items/T-F-2", content=b'{"properties": {"capacity": 3}}', headers=headers),
        )
        assert sorted(r.status_code for r in results) == [200, 412]
        winner = next(r for r in results if r.status_code == 200).json()["properties"]["capacity"]
        assert (await a.get("/collections/facilities/items/T-F-2")).json()["properties"]["capacity"] == winner
        assert [r["action"] for r in audit_rows(edit_database, "T-F-2")] == ["create", "update"]


@pytest.mark.parametrize(("collection", "feature", "status", "message"), [
    ("facilities", {**new_facility("T-BAD-1"), "geometry": {"type": "LineString", "coordinates": [[1, 2], [3, 4]]}},
     400, "takes Point geometries"),
    ("facilities", {**new_facility("T-BAD-2"), "geometry": {"type": "Point", "coordinates": [42.3, 123.8]}},
     400, "outside longitude"),
    ("projects", {"type": "Feature", "id": "T-P-BAD", "geometry": {"type": "Polygon", "coordinates": [
        [[123.0, 42.0], [124.0, 43.0], [124.0, 42.0], [123.0, 43.0], [123.0, 42.0]]]},
        "properties": {"region": "tieling-demo", "name": "x", "type": "industry", "status": "planned",
                       "valid_from": "2024-01-01", "source": "t"}}, 400, "Self-intersection"),
    ("facilities", new_facility("T-BAD-3", capacity=-5), 400, "facility_capacity_check"),
    ("facilities", new_facility("T-BAD-4", capacity="many"), 400, "is not an integer"),
    ("facilities", new_facility("T-BAD-5", colour="red"), 400, "Unknown or read-only properties: colour"),
    ("facilities", {**new_facility("T-BAD-6"), "properties": {"class": "clinic"}}, 400, "Missing required values"),
    ("facilities", new_facility("T-BAD-7", **{"class": "castle"}), 400, "one of"),
    ("facilities", new_facility("T-BAD-8", admin_code="no-such-unit"), 400, "facility_admin_code_fkey"),
    ("facilities", new_facility("TL-F00001"), 409, "already exists"),
    ("households", {"type": "Feature", "id": "110101199001011234", "geometry": None, "properties": {
        "region": "tieling-demo", "village_code": "211202001001", "status": "poor", "hh_type": "general",
        "main_cause": "illness", "year_identified": 2016, "size": 3, "net_income_pc": 2000,
        "valid_from": "2016-01-01", "source": "t"}}, 400, "household_hh_id_check"),
    ("persons", new_facility("T-BAD-9"), 405, "cannot be edited"),
])
async def test_invalid_writes_are_refused_whole(editor, edit_keys, edit_database, collection, feature, status,
                                                message):
    before = fetch(edit_database.name, "SELECT count(*) FROM audit_log")[0][0]
    r = await post(editor, edit_keys, collection, feature)
    assert r.status_code == status, r.text
    validate_problem(r.json())
    assert message in r.json()["detail"]
    assert fetch(edit_database.name, "SELECT count(*) FROM audit_log")[0][0] == before


async def test_roles_and_media_types(editor, edit_keys):
    body = orjson.dumps(new_facility("T-F-3"))
    assert (await editor.post("/collections/facilities/items", content=body, headers=GEOJSON)).status_code == 401
    r = await editor.post("/collections/facilities/items", content=body,
                          headers={**GEOJSON, **auth(edit_keys, Role.analyst)})
    assert r.status_code == 403
    r = await editor.post("/collections/facilities/items", content=body,
                          headers={"content-type": "text/plain", **auth(edit_keys, Role.admin)})
    assert r.status_code == 415
    r = await editor.post("/collections/facilities/items", content=b"{broken",
                          headers={**GEOJSON, **auth(edit_keys, Role.admin)})
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
    r = await editor.patch("/collections/facilities/items/nope", content=b'{"properties": {}}',
                           headers={**PATCH, **auth(edit_keys, Role.admin)})
    assert r.status_code == 404


async def test_content_crs_and_merge_patch_of_objects(editor, edit_keys):
    t = Transformer.from_crs("OGC:CRS84", "EPSG:3857", always_xy=True)
    x, y = t.transform(123.9, 42.4)
    feature = {"type": "Feature", "id": "T-P-1", "geometry": {"type": "Point", "coordinates": [x, y]},
               "properties": {"region": "tieling-demo", "name": "Pump", "type": "infrastructure_water",
                              "status": "planned", "budget_by_level": {"central": 100, "county": 5},
                              "addresses_needs": ["L_WATER"], "valid_from": "2024-01-01", "source": "t"}}
    r = await post(editor, edit_keys, "projects", feature,
                   {"Content-Crs": "<http://www.opengis.net/def/crs/EPSG/0/3857>"})
    assert r.status_code == 201, r.text
    assert r.json()["geometry"]["coordinates"] == pytest.approx([123.9, 42.4], abs=1e-7)
    r = await editor.patch("/collections/projects/items/T-P-1",
                           content=b'{"properties": {"budget_by_level": {"county": null, "township": 7}}}',
                           headers={**PATCH, **auth(edit_keys, Role.admin)})
    assert r.status_code == 200
    assert r.json()["properties"]["budget_by_level"] == {"central": 100, "township": 7}
    r = await editor.patch("/collections/projects/items/T-P-1", content=b'{"properties": {"addresses_needs": ["X"]}}',
                           headers={**PATCH, **auth(edit_keys, Role.admin)})
    assert r.status_code == 400


async def test_villages_are_created_with_their_admin_unit_and_guarded_on_delete(editor, edit_keys, edit_database):
    admin = auth(edit_keys, Role.admin)
    village = {"type": "Feature", "id": "211202001999", "geometry": {"type": "Point", "coordinates": [123.85, 42.3]},
               "properties": {"region": "tieling-demo", "name": "新村", "township_code": "211202001",
                              "households": 10, "population": 30, "valid_from": "2024-01-01", "source": "t"}}
    r = await post(editor, edit_keys, "villages", village)
    assert r.status_code == 201, r.text
    (unit,) = fetch(edit_database.name, "SELECT level, parent_code, name FROM admin_unit WHERE code = '211202001999'")
    assert tuple(unit) == (5, "211202001", "新村")
    r = await editor.patch("/collections/villages/items/211202001999",
                           content=b'{"properties": {"population": 5}}', headers={**PATCH, **admin})
    assert r.status_code == 400 and "village_population_ge_households" in r.json()["detail"]
    r = await editor.patch("/collections/villages/items/211202001999",
                           content='{"properties": {"name": "新新村"}}'.encode(), headers={**PATCH, **admin})
    assert r.status_code == 200 and r.json()["properties"]["name"] == "新新村"
    assert (await editor.delete("/collections/villages/items/211202001999", headers=admin)).status_code == 204
    assert not fetch(edit_database.name, "SELECT 1 FROM admin_unit WHERE code = '211202001999'")
    # a village with registered households is not deleted
    r = await editor.delete("/collections/villages/items/211202001001", headers=admin)
    assert r.status_code == 409 and "registered households" in r.json()["detail"]


async def test_create_without_id_gets_one_in_the_collections_scheme(editor, edit_keys, edit_database):
    """Editors such as QGIS create features without an id: the server assigns one the way the collection names its
    features, fills valid_from (today) and source (the key's name), and the schema says what must be given."""
    import datetime as dt

    schema = (await editor.get("/collections/facilities/schema")).json()
    assert schema["required"] == ["class", "geometry", "region"]
    assert schema["properties"]["valid_from"]["description"] == "Default: today"
    assert "readOnly" not in schema["properties"]["name"]
    last = fetch(edit_database.name, "SELECT max(fac_id) FROM facility WHERE region_id = 'tieling-demo'")[0][0]
    feature = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [123.82, 42.32]},
               "properties": {"region": "tieling-demo", "class": "market", "name": "Created by QGIS"}}
    created = []
    for _ in range(2):
        r = await post(editor, edit_keys, "facilities", feature)
        assert r.status_code == 201, r.text
        created.append(r.json())
    prefix, digits = last.rstrip("0123456789"), last[len(last.rstrip("0123456789")):]
    assert [c["id"] for c in created] == [f"{prefix}{int(digits) + i:0{len(digits)}d}" for i in (1, 2)]
    assert created[0]["properties"]["valid_from"] == dt.date.today().isoformat()
    assert created[0]["properties"]["source"] == "API (test admin)"
    r = await editor.get(f"/collections/facilities/items/{created[0]['id']}")
    assert r.status_code == 200 and r.json()["properties"]["name"] == "Created by QGIS"
    missing = await post(editor, edit_keys, "facilities", {**feature, "properties": {"name": "no class"}})
    assert missing.status_code == 400 and "class" in missing.json()["detail"]

    # villages continue their township's code; households get a new pseudonym
    town = fetch(edit_database.name, "SELECT parent_code, max(code) FROM admin_unit WHERE level = 5 "
                                     "GROUP BY parent_code ORDER BY parent_code LIMIT 1")[0]
    village = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [123.83, 42.33]},
               "properties": {"region": "tieling-demo", "name": "新村", "township_code": town[0]}}
    r = await post(editor, edit_keys, "villages", village)
    assert r.status_code == 201, r.text
    assert r.json()["id"] == str(int(town[1]) + 1) and r.json()["properties"]["households"] is None
    no_parent = await post(editor, edit_keys, "villages", {**village, "properties": {"region": "tieling-demo",
                                                                                    "name": "孤村"}})
    assert no_parent.status_code == 400 and "parent_code" in no_parent.json()["detail"]
    household = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [123.83, 42.33]}, "properties": {
        "region": "tieling-demo", "village_code": r.json()["id"], "id_standard": "national", "hh_type": "general",
        "main_cause": "illness", "status": "poor", "size": 3, "net_income_pc": 3100, "year_identified": 2026}}
    r = await post(editor, edit_keys, "households", household)
    assert r.status_code == 201, r.text
    assert len(r.json()["id"]) == 64 and int(r.json()["id"], 16) >= 0
    rows = fetch(edit_database.name, "SELECT count(*) FROM audit_log WHERE action = 'create' AND feature_id = ANY($1)",
                 [c["id"] for c in created])
    assert rows[0][0] == 2
