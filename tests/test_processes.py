"""OGC API - Processes over HTTP: descriptions, sync and async execution, references, access, jobs,
dismissal, time limits, restart, and results as collections read by GDAL."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
import shapely
from tpa_testing import ThrowawayDatabase, client_for, fetch, serve, settings_for

from app.models.codes import Role

_C = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"
PROCESS_IDS = {"spatial-autocorrelation", "hotspots", "project-coverage-correlation", "accessibility",
               "coverage-gaps", "location-allocation", "needs-assessment", "needs-matching",
               "coupling-coordination", "mpi", "monitoring-screen", "return-risk", "isochrones",
               "small-area-estimation"}


# edit_database / edit_keys / editor (conftest): a private demo copy per module; jobs publish results into it
@pytest.fixture
def proc_db(edit_database: ThrowawayDatabase) -> ThrowawayDatabase:
    return edit_database


@pytest.fixture
def proc_keys(edit_keys: dict[Role, str]) -> dict[Role, str]:
    return edit_keys


@pytest.fixture
async def pc(editor: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    yield editor


def _lattice_fc(values: list[float]) -> dict:
    n = int(len(values) ** 0.5)
    feats = []
    for k, v in enumerate(values):
        i, j = k % n, k // n
        g = shapely.box(120 + 0.01 * i, 40 + 0.01 * j, 120 + 0.01 * (i + 1), 40 + 0.01 * (j + 1))
        feats.append({"type": "Feature", "id": f"u{k}", "geometry": shapely.geometry.mapping(g),
                      "properties": {"poor": v}})
    return {"type": "FeatureCollection", "features": feats}


async def test_process_list_and_descriptions(pc: httpx.AsyncClient):
    landing = (await pc.get("/")).json()
    rels = {lk["rel"] for lk in landing["links"]}
    ogc = "http://www.opengis.net/def/rel/ogc/1.0/"
    assert {ogc + "processes", ogc + "job-list"} <= rels
    body = (await pc.get("/processes")).json()
    assert {p["id"] for p in body["processes"]} == PROCESS_IDS
    for summary in body["processes"]:  # processSummary: id and version required, job control options listed
        assert summary["version"] and set(summary["jobControlOptions"]) == {"sync-execute", "async-execute",
                                                                              "dismiss"}
        assert any(lk["rel"] == "self" for lk in summary["links"])
    d = (await pc.get("/processes/location-allocation")).json()
    assert set(d["inputs"]) >= {"model", "demand", "candidates", "existing", "p", "service_radius", "cost_matrix",
                                "time_limit_s"}
    assert d["inputs"]["model"]["schema"]["enum"] == ["lscp", "mclp", "pmedian", "pcenter"]
    assert "$defs" not in d["inputs"]["p"]["schema"]  # only the definitions an input uses travel with it
    assert set(d["inputs"]["candidates"]["schema"]["$defs"]) == {"CollectionRef", "H3Grid", "InlineFeatures",
                                                                 "InlineFeature"}
    assert set(d["outputs"]) >= {"selected", "assignment", "objective", "coverage_weighted_pct", "status", "mip_gap"}
    conf = (await pc.get("/conformance")).json()["conformsTo"]
    assert "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/core" in conf
    assert "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/dismiss" in conf
    html = await pc.get("/processes", params={"f": "html"})
    assert html.headers["content-type"].startswith("text/html") and "location-allocation" in html.text
    html = await pc.get("/processes/accessibility", headers={"Accept": "text/html"})
    assert "supply_capacity" in html.text and "<table>" in html.text
    assert _C + "html" in conf
    r = await pc.get("/processes/nope")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    api = (await pc.get("/api")).json()
    schema = api["paths"]["/processes/accessibility/execution"]["post"]["requestBody"]["content"]["application/json"]
    assert schema["schema"]["$ref"].endswith("/ExecuteAccessibility")


async def test_sync_autocorrelation_inline_equals_esda_and_is_readable_by_url(pc: httpx.AsyncClient):
    import esda
    import libpysal

    values = [float((k % 5) * (k // 5) + (k % 3)) for k in range(25)]
    r = await pc.post("/processes/spatial-autocorrelation/execution", json={"inputs": {
        "features": _lattice_fc(values), "variable": "poor", "weights": {"type": "rook"}, "permutations": 99}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"global", "features", "weights", "provenance"}
    geoms = [shapely.geometry.shape(f["geometry"]) for f in _lattice_fc(values)["features"]]
    w = libpysal.weights.Rook.from_iterable(geoms)
    ref = esda.Moran(np.array(values), w, permutations=0)
    assert body["global"]["moran_i"] == pytest.approx(ref.I, rel=1e-12)
    assert body["global"]["z_norm"] == pytest.approx(ref.z_norm, rel=1e-12)
    assert body["provenance"]["libraries"]["esda"] == esda.__version__ and body["provenance"]["seed"] == 12345
    href = body["features"]["href"]
    items = (await pc.get(href.replace("http://testserver", ""), params={"limit": 100})).json()
    assert items["numberMatched"] == 25
    assert {f["properties"]["quadrant"] for f in items["features"]} <= {"HH", "LH", "LL", "HL"}
    lid = href.split("/collections/")[1].split("/")[0]
    ids = [c["id"] for c in (await pc.get("/collections")).json()["collections"]]
    assert lid not in ids  # readable by its URL, listed only when published (tests/test_results.py)


async def test_references_filters_and_access(pc: httpx.AsyncClient, proc_keys: dict[Role, str]):
    r = await pc.post("/processes/hotspots/execution", json={"inputs": {
        "features": {"href": "/collections/villages/items?filter=population > 600"}, "variable": "population",
        "permutations": 9}})
    assert r.status_code == 200, r.text
    n = sum(r.json()["summary"].values())
    all_v = (await pc.get("/collections/villages/items", params={"filter": "population > 600", "limit": 1})).json()
    assert n == all_v["numberMatched"]
    for bad in ("http://169.254.169.254/latest/meta-data", "https://example.org/collections/villages/items",
                "/collections/nope/items", "/processes", "file:///etc/passwd"):
        r = await pc.post("/processes/hotspots/execution", json={"inputs": {
            "features": {"href": bad}, "variable": "population"}})
        assert r.status_code == 400, (bad, r.text)
    r = await pc.post("/processes/hotspots/execution", json={"inputs": {
        "features": {"href": "/collections/households/items"}, "variable": "size"}})
    assert r.status_code == 401
    r = await pc.post("/processes/hotspots/execution", json={"inputs": {
        "features": {"href": "/collections/villages/items?filter=nosuch > 1"}, "variable": "population"}})
    assert r.status_code == 400
    r = await pc.post("/processes/hotspots/execution", json={"inputs": {
        "features": {"href": "/collections/villages/items"}, "variable": "nosuch"}})
    assert r.status_code == 400 and "nosuch" in r.json()["detail"]
    r = await pc.post("/processes/hotspots/execution", json={"inputs": {"variable": "x"}})
    assert r.status_code == 400


async def test_async_job_life_cycle_and_dismissal(pc: httpx.AsyncClient, proc_keys: dict[Role, str]):
    key = {"Authorization": f"Bearer {proc_keys[Role.analyst]}"}
    other = {"Authorization": f"Bearer {proc_keys[Role.admin]}"}
    r = await pc.post("/processes/coverage-gaps/execution", headers={**key, "Prefer": "respond-async"}, json={
        "inputs": {"demand": {"href": "/collections/villages/items"}, "demand_weight": "population",
                   "supply": {"href": "/collections/facilities/items"}, "threshold": 8.0}})
    assert r.status_code == 201, r.text
    loc = r.headers["location"].replace("http://testserver", "")
    assert r.json()["status"] in ("accepted", "running", "successful")
    assert {"jobID", "status", "type", "processID", "links"} <= set(r.json()) and r.json()["type"] == "process"
    for _ in range(150):
        st = (await pc.get(loc, headers=key)).json()
        if st["status"] in ("successful", "failed"):
            break
        await asyncio.sleep(0.2)
    assert st["status"] == "successful", st
    res = (await pc.get(loc + "/results", headers=key)).json()
    assert set(res) == {"summary", "gaps", "cost", "provenance"}
    assert res["cost"] == {"kind": "great-circle km", "network": None}
    for t, s in res["summary"].items():
        assert s["share"] == pytest.approx(s["population_affected"] / s["population_total"]), t
    jobs = (await pc.get("/jobs", headers=key)).json()
    assert st["jobID"] in [j["jobID"] for j in jobs["jobs"]]
    assert (await pc.get("/jobs")).status_code == 401
    gaps = res["gaps"]["href"].replace("http://testserver", "")
    assert (await pc.get(gaps)).status_code in (200, 401)
    assert (await pc.get(gaps, headers=key)).status_code == 200
    d = await pc.delete(loc, headers=key)
    assert d.status_code == 200 and d.json()["status"] == "dismissed"
    assert (await pc.get(gaps, headers=key)).status_code == 404
    assert (await pc.get(loc + "/results", headers=key)).status_code == 404
    assert (await pc.get(loc, headers=other)).json()["status"] == "dismissed"  # admins see every job
    page = await pc.get(loc, headers=key, params={"f": "html"})
    assert page.headers["content-type"].startswith("text/html") and "dismissed" in page.text
    page = await pc.get("/jobs", headers=key, params={"f": "html"})
    assert st["jobID"] in page.text


async def test_location_allocation_and_accessibility_over_http(pc: httpx.AsyncClient):
    demand = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": f"d{i}", "geometry": {"type": "Point", "coordinates": [120 + x, 40.0]},
         "properties": {"poor_persons": w}} for i, (x, w) in enumerate([(0, 1), (0.01, 1), (0.02, 1), (0.1, 5)])]}
    cands = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    cost = [[0, 2, 10], [1, 1, 9], [2, 0, 8], [10, 8, 0]]
    r = await pc.post("/processes/location-allocation/execution", json={"inputs": {
        "model": "mclp", "demand": demand, "candidates": cands[:2], "existing": cands[2:], "p": 2,
        "service_radius": 1.5, "cost_matrix": cost}})
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["status"] == "optimal" and b["mip_gap"] == 0.0 and b["objective"] == 7.0
    assert b["coverage_weighted_pct"] == pytest.approx(87.5)
    # LSCP: a covers d0, d1; b covers d1, d2; the existing c covers d3 → all three sites
    r = await pc.post("/processes/location-allocation/execution", json={"inputs": {
        "model": "lscp", "demand": demand, "candidates": cands[:2], "existing": cands[2:], "service_radius": 1.5,
        "cost_matrix": cost}})
    assert r.status_code == 200, r.text
    assert r.json()["objective"] == 3 and r.json()["status"] == "optimal"
    assert r.json()["coverage_weighted_pct"] == pytest.approx(100.0)
    # p-center, p = 2 with c open: a or b, either leaves a largest cost of 2
    r = await pc.post("/processes/location-allocation/execution", json={"inputs": {
        "model": "pcenter", "demand": demand, "candidates": cands[:2], "existing": cands[2:], "p": 2,
        "cost_matrix": cost}})
    assert r.status_code == 200, r.text
    assert r.json()["objective"] == 2 and r.json()["status"] == "optimal" and r.json()["mip_gap"] == 0
    sel = await _items(pc, r.json()["selected"])
    assert "existing:c" in {f["id"] for f in sel} and len(sel) == 2
    r = await pc.post("/processes/accessibility/execution", json={"inputs": {
        "demand": [{"id": "1", "poor_persons": 100}, {"id": "2", "poor_persons": 200}, {"id": "3", "poor_persons": 50}],
        "supply": [{"id": "s1", "capacity": 10}, {"id": "s2", "capacity": 5}],
        "cost_matrix": [[5, 25], [15, 8], [40, 12]], "max_cost": 30}})
    assert r.status_code == 200, r.text
    assert r.json()["summary"]["max_access"] == pytest.approx(10 / 300 + 5 / 350)
    r = await pc.post("/processes/location-allocation/execution", json={"inputs": {
        "model": "pmedian", "demand": demand, "candidates": {"h3_resolution": 7}, "p": 2}})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "optimal"
    r = await pc.post("/processes/location-allocation/execution", json={"inputs": {
        "model": "mclp", "demand": demand, "candidates": cands, "p": 2}})
    assert r.status_code == 400  # mclp needs a service radius


async def test_project_coverage_correlation_demo(pc: httpx.AsyncClient):
    r = await pc.post("/processes/project-coverage-correlation/execution", json={"inputs": {
        "units": {"href": "/collections/villages/items"}, "poor_variable": "population",
        "projects": {"href": "/collections/projects/items"}, "permutations": 99}})
    assert r.status_code == 200, r.text
    b = r.json()
    assert -1 <= b["global"]["i_b"] <= 1 and b["global"]["projects_used"] > 0
    items = (await pc.get(b["features"]["href"].replace("http://testserver", ""), params={
        "filter": "candidate_zone = true", "limit": 1000})).json()
    assert items["numberMatched"] == b["candidate_zones"]["count"]
    assert all(f["properties"]["quadrant"] == "HL" and f["properties"]["significant"] for f in items["features"])


async def test_sync_time_limit(proc_db: ThrowawayDatabase):
    s = settings_for(proc_db.url)
    s.processes.sync_time_limit_s = 1
    async with client_for(s) as c:
        t0 = time.monotonic()
        r = await c.post("/processes/spatial-autocorrelation/execution", json={"inputs": {
            "features": {"href": "/collections/villages/items"}, "variable": "population", "permutations": 99999}})
        assert time.monotonic() - t0 < 15
        assert r.status_code == 503 and "time limit" in r.json()["detail"]
        job = r.json()["jobID"]
        st = (await c.get(f"/jobs/{job}")).json()
        assert st["status"] == "failed" and "time limit" in st["message"]


def test_restart_fails_the_running_job_and_runs_the_queued_one(proc_db: ThrowawayDatabase):
    # one attempt: the job is not run again (test_a_job_of_a_killed_worker_runs_again_on_another)
    env = {"TPA_PROCESSES_HEARTBEAT_S": "0.5", "TPA_PROCESSES_STALLED_AFTER_S": "2", "TPA_PROCESSES_ATTEMPTS": "1"}
    slow = {"inputs": {"features": {"href": "/collections/villages/items"}, "variable": "population",
                       "permutations": 99999}}
    quick = {"inputs": {"features": {"href": "/collections/villages/items"}, "variable": "population",
                        "permutations": 9}}
    hdr = {"Prefer": "respond-async"}
    with serve(proc_db.url, extra_env=env) as url:
        pid = int(httpx.get(url + "/healthz").headers.get("x-pid", "0") or 0)
        a = httpx.post(url + "/processes/spatial-autocorrelation/execution", json=slow, headers=hdr).json()["jobID"]
        b = httpx.post(url + "/processes/hotspots/execution", json=quick, headers=hdr).json()["jobID"]
        for _ in range(100):
            if httpx.get(f"{url}/jobs/{a}").json()["status"] == "running":
                break
            time.sleep(0.1)
        assert httpx.get(f"{url}/jobs/{b}").json()["status"] == "accepted"
        out = subprocess.run(["pgrep", "-f", f"--port {url.rsplit(':', 1)[1]}"], capture_output=True, text=True)
        for p in out.stdout.split():
            os.kill(int(p), signal.SIGKILL)
        del pid
    with serve(proc_db.url, extra_env=env) as url:
        for _ in range(150):
            sa = httpx.get(f"{url}/jobs/{a}").json()
            sb = httpx.get(f"{url}/jobs/{b}").json()
            if sa["status"] == "failed" and sb["status"] == "successful":
                break
            time.sleep(0.2)
        assert sa["status"] == "failed" and "interrupted" in sa["message"]
        assert sb["status"] == "successful", sb["message"]
        lid = httpx.get(f"{url}/jobs/{b}/results").json()["features"]["href"].split("/collections/")[1].split("/")[0]
        if shutil.which("ogrinfo"):
            info = subprocess.run(["ogrinfo", "-ro", "-so", f"OAPIF:{url}/collections/{lid}", lid],
                                  capture_output=True, text=True, timeout=60)
            assert "Feature Count: 1200" in info.stdout, info.stdout + info.stderr


async def test_village_poverty_layer_aggregates_and_suppresses(pc: httpx.AsyncClient, proc_keys: dict[Role, str],
                                                               edit_database: ThrowawayDatabase):
    # checks the method: methodology#village-poverty
    vp = (await pc.get("/collections/village-poverty/items", params={"limit": 2000})).json()
    assert vp["numberMatched"] == 1200
    # the layer shows the registry of the region's default year (2020 for the demo), from the registry's history
    rows = fetch(edit_database.name, """
        SELECT village_code, status::text AS status, size FROM (
          SELECT * FROM household UNION ALL SELECT * FROM household_history) h
        WHERE valid_from <= '2020-01-01' AND (valid_to IS NULL OR valid_to > '2020-01-01')""")
    feats = [{"properties": dict(r)} for r in rows]
    assert len(feats) == 25_000  # every demo household was registered by 2019
    poor_hh: dict[str, int] = {}
    poor_pp: dict[str, int] = {}
    registered: dict[str, int] = {}
    for f in feats:
        p = f["properties"]
        registered[p["village_code"]] = registered.get(p["village_code"], 0) + 1
        if p["status"] in ("poor", "returned"):
            poor_hh[p["village_code"]] = poor_hh.get(p["village_code"], 0) + 1
            poor_pp[p["village_code"]] = poor_pp.get(p["village_code"], 0) + p["size"]
    checked = suppressed = 0
    for f in vp["features"]:
        p = f["properties"]
        n = poor_hh.get(f["id"], 0)
        if 0 < n < 5:
            assert p["suppressed"] and p["poor_households"] is None and p["poor_persons"] is None
            suppressed += 1
        else:
            assert p["poor_households"] == n and p["poor_persons"] == poor_pp.get(f["id"], 0)
            assert p["poverty_rate"] == pytest.approx(poor_pp.get(f["id"], 0) / p["population"])
            checked += 1
        reg = registered.get(f["id"], 0)
        small_reg = 0 < reg < 5 or 0 < reg - n < 5  # those not poor would follow from registered − poor
        assert p["registered_households"] == (None if small_reg else reg)
        assert p["suppressed"] == (0 < n < 5 or small_reg)
    assert checked > 100 and suppressed > 0
    # the Stage 1 demand layer works as a process input, suppressed villages filtered out
    r = await pc.post("/processes/hotspots/execution", json={"inputs": {
        "features": {"href": "/collections/village-poverty/items?filter=poor_persons IS NOT NULL"},
        "variable": "poor_persons", "permutations": 99}})
    assert r.status_code == 200, r.text
    assert sum(r.json()["summary"].values()) == sum(f["properties"]["poor_persons"] is not None
                                                    for f in vp["features"])


def _points_fc(xy: np.ndarray, props: list[dict]) -> dict:
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": f"p{i}", "geometry": {"type": "Point", "coordinates": [float(x), float(y)]},
         "properties": p} for i, ((x, y), p) in enumerate(zip(xy, props, strict=True))]}


async def _items(pc: httpx.AsyncClient, link: dict, **params: object) -> list[dict]:
    body = (await pc.get(link["href"].replace("http://testserver", ""), params={"limit": 10000, **params})).json()
    return body["features"]


async def test_hotspots_gaps_and_bivariate_numbers_over_http(pc: httpx.AsyncClient):
    import esda
    import libpysal

    rng = np.random.default_rng(11)
    lonlat = np.column_stack([123.5 + rng.uniform(0, 0.3, 40), 42.3 + rng.uniform(0, 0.2, 40)])
    y = rng.gamma(2.0, 10.0, 40).round(3)
    fc = _points_fc(lonlat, [{"poor": float(v)} for v in y])
    r = await pc.post("/processes/hotspots/execution", json={"inputs": {
        "features": fc, "variable": "poor", "weights": {"type": "knn", "k": 5}, "permutations": 99,
        "analysis_crs": 32651}})
    assert r.status_code == 200, r.text
    got = {f["id"]: f["properties"]["gi_z"] for f in await _items(pc, r.json()["features"])}
    # closed form of Gi* (DOMAIN §3.2) with binary KNN-5 weights in EPSG:32651 plus the unit itself
    from pyproj import Transformer

    x, yy = Transformer.from_crs(4326, 32651, always_xy=True).transform(lonlat[:, 0], lonlat[:, 1])
    w = libpysal.weights.KNN.from_array(np.column_stack([x, yy]), k=5)
    wb = (w.sparse > 0).astype(float).toarray()
    np.fill_diagonal(wb, 1.0)
    n = len(y)
    wi = wb.sum(axis=1)
    z = (wb @ y - y.mean() * wi) / (y.std() * np.sqrt((n * (wb ** 2).sum(axis=1) - wi ** 2) / (n - 1)))
    np.testing.assert_allclose([got[f"p{i}"] for i in range(n)], z, atol=1e-8)

    # coverage gaps by hand: demand at 0, 0.5 and 1 degree east of a clinic at 40° N; threshold 50 km
    demand = _points_fc(np.array([[120.0, 40.0], [120.5, 40.0], [121.0, 40.0]]),
                        [{"poor_persons": 10}, {"poor_persons": 20}, {"poor_persons": 30}])
    supply = _points_fc(np.array([[120.0, 40.0], [121.0, 40.0]]), [{"class": "clinic"}, {"class": "school_primary"}])
    r = await pc.post("/processes/coverage-gaps/execution", json={"inputs": {
        "demand": demand, "supply": supply, "thresholds": {"clinic": 50, "school_primary": 50}}})
    assert r.status_code == 200, r.text
    s = r.json()["summary"]
    assert s["clinic"]["units_in_gap"] == 1 and s["clinic"]["population_affected"] == 30
    assert s["clinic"]["share"] == pytest.approx(0.5)
    assert s["school_primary"]["units_in_gap"] == 1 and s["school_primary"]["population_affected"] == 10
    gaps = await _items(pc, r.json()["gaps"])
    assert sorted(f["id"] for f in gaps) == ["p0:school_primary", "p2:clinic"]
    p2 = next(f for f in gaps if f["id"] == "p2:clinic")["properties"]
    arc = 2 * 6371.0088 * np.arcsin(np.cos(np.radians(40.0)) * np.sin(np.radians(0.5)))  # haversine, Δλ = 1°
    assert p2["nearest"] == pytest.approx(arc, rel=1e-9) and p2["nearest_id"] == "p0"

    # bivariate Moran on a lattice: x = poor / area, y = projects / area (areas on the ellipsoid), against
    # esda.Moran_BV on densities computed here
    from pyproj import Geod

    vals = [float((k * 7) % 11 + k % 5) for k in range(25)]
    units = _lattice_fc(vals)
    geoms = [shapely.geometry.shape(f["geometry"]) for f in units["features"]]
    centres = [shapely.centroid(g) for g in geoms]
    counts = [k % 3 for k in range(25)]
    projects = _points_fc(np.array([[c.x, c.y] for c, m in zip(centres, counts, strict=True) for _ in range(m)]),
                          [{"type": "industry"} for c, m in zip(centres, counts, strict=True) for _ in range(m)])
    r = await pc.post("/processes/project-coverage-correlation/execution", json={"inputs": {
        "units": units, "poor_variable": "poor", "projects": projects, "weights": {"type": "queen"},
        "permutations": 99}})
    assert r.status_code == 200, r.text
    area = np.array([abs(Geod(ellps="WGS84").geometry_area_perimeter(g)[0]) / 1e6 for g in geoms])
    ref = esda.Moran_BV(np.array(vals) / area, np.array(counts, dtype=float) / area,
                        libpysal.weights.Queen.from_iterable(geoms), permutations=0)
    assert r.json()["global"]["i_b"] == pytest.approx(ref.I, rel=1e-9)
    feats = {f["id"]: f["properties"] for f in await _items(pc, r.json()["features"])}
    assert [feats[f"u{k}"]["projects"] for k in range(25)] == counts


async def test_dismissing_a_running_job_stops_it(pc: httpx.AsyncClient, proc_keys: dict[Role, str]):
    key = {"Authorization": f"Bearer {proc_keys[Role.analyst]}"}
    r = await pc.post("/processes/spatial-autocorrelation/execution", headers={**key, "Prefer": "respond-async"},
                      json={"inputs": {"features": {"href": "/collections/villages/items"}, "variable": "population",
                                       "permutations": 99999}})
    loc = r.headers["location"].replace("http://testserver", "")
    for _ in range(100):
        if (await pc.get(loc, headers=key)).json()["status"] == "running":
            break
        await asyncio.sleep(0.1)
    d = await pc.delete(loc, headers=key)
    assert d.status_code == 200 and d.json()["status"] == "dismissed"
    forkservers = subprocess.run(["pgrep", "-P", str(os.getpid()), "-f", "multiprocessing.forkserver"],
                                 capture_output=True, text=True).stdout.split()

    def running_children() -> list[str]:
        out = subprocess.run(["pgrep", "-P", ",".join(forkservers) or "0"], capture_output=True, text=True).stdout
        return [pid for pid in out.split() if subprocess.run(["ps", "-o", "stat=", "-p", pid], capture_output=True,
                                                             text=True).stdout.strip()[:1] not in ("Z", "")]

    for _ in range(100):  # the worker checks for dismissal every second
        if not running_children():
            break
        await asyncio.sleep(0.1)
    assert running_children() == [], "the analysis process should have been killed"
    assert (await pc.get(loc, headers=key)).json()["status"] == "dismissed"
    assert (await pc.delete(loc, headers=key)).status_code == 404


def test_separate_worker_process_runs_the_queue(proc_db: ThrowawayDatabase):
    """An API without a worker (TPA_PROCESSES_WORKER=false) queues; `tpa worker` runs the jobs."""
    import sys

    env = {**os.environ, "DATABASE_URL": proc_db.url, "TPA_LOG_LEVEL": "WARNING"}
    with serve(proc_db.url, extra_env={"TPA_PROCESSES_WORKER": "false"}) as url:
        job = httpx.post(url + "/processes/hotspots/execution", headers={"Prefer": "respond-async"}, json={
            "inputs": {"features": {"href": "/collections/villages/items"}, "variable": "population",
                       "permutations": 9}}).json()["jobID"]
        time.sleep(1.5)
        assert httpx.get(f"{url}/jobs/{job}").json()["status"] == "accepted"
        worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        try:
            st = _job_end(url, job, 30)
            assert st["status"] == "successful", st
        finally:
            worker.send_signal(signal.SIGINT)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()


def _job_end(url: str, job: str, seconds: float) -> dict:
    """The job's status document once it has ended (or when ``seconds`` have passed)."""
    deadline = time.monotonic() + seconds
    while True:
        st = httpx.get(f"{url}/jobs/{job}").json()
        if st["status"] in ("successful", "failed") or time.monotonic() > deadline:
            return st
        time.sleep(0.2)


def test_a_job_of_a_killed_worker_runs_again_on_another(proc_db: ThrowawayDatabase):
    """Job workers on two machines share the queue. The worker running a job is killed (SIGKILL: no goodbye, its
    heartbeat just stops); the other notices after TPA_PROCESSES_STALLED_AFTER_S, queues the job again and runs
    it from the start: the job succeeds on its second attempt."""
    fast = {"TPA_PROCESSES_HEARTBEAT_S": "0.5", "TPA_PROCESSES_STALLED_AFTER_S": "2"}
    env = {**os.environ, "DATABASE_URL": proc_db.url, "TPA_LOG_LEVEL": "WARNING", **fast}
    # a few seconds of analysis: long enough to kill its worker while it runs
    body = {"inputs": {"features": {"href": "/collections/villages/items"}, "variable": "population",
                       "permutations": 49_999, "seed": 7}}

    def worker() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    def status(url: str, job: str) -> str:
        return httpx.get(f"{url}/jobs/{job}").json()["status"]

    with serve(proc_db.url, extra_env={"TPA_PROCESSES_WORKER": "false", **fast}) as url:
        first, second = worker(), None
        try:
            for _ in range(300):  # ready when its heartbeat row is there: it takes jobs from then on
                if fetch(proc_db.name, "SELECT 1 FROM procrastinate_workers"):
                    break
                time.sleep(0.1)
            job = httpx.post(url + "/processes/spatial-autocorrelation/execution", json=body,
                             headers={"Prefer": "respond-async"}).json()["jobID"]
            for _ in range(150):
                if status(url, job) == "running":
                    break
                time.sleep(0.1)
            assert status(url, job) == "running"
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            second = worker()
            st = _job_end(url, job, 120)
            assert st["status"] == "successful", st
            ((attempts,),) = fetch(proc_db.name, "SELECT attempts FROM analysis_run WHERE run_id = $1",
                                   uuid.UUID(job))
            assert attempts == 2
            assert httpx.get(f"{url}/jobs/{job}/results").json()["global"]["moran_i"] is not None
        finally:
            for p in (first, second):
                if p is not None and p.poll() is None:
                    p.send_signal(signal.SIGINT)
                    try:
                        p.wait(20)
                    except subprocess.TimeoutExpired:
                        p.kill()


async def test_database_down_gives_503_not_500():
    settings = settings_for("postgresql://postgres@127.0.0.1:1/nowhere", connect_timeout_s=1.0)
    async with client_for(settings) as c:
        table = [{"id": "1", "poor_persons": 1}, {"id": "2", "poor_persons": 2}]
        for prefer in ({}, {"Prefer": "respond-async"}):
            r = await c.post("/processes/accessibility/execution", headers=prefer, json={"inputs": {
                "demand": table, "supply": [{"id": "s", "capacity": 1}], "cost_matrix": [[1], [2]]}})
            assert r.status_code == 503, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
        r = await c.get("/jobs/00000000-0000-4000-8000-000000000000")
        assert r.status_code == 503


def test_owslib_lists_describes_and_executes(proc_db: ThrowawayDatabase):
    """A real OGC API - Processes client (OWSLib) against the running service."""
    from owslib.ogcapi.processes import Processes

    with serve(proc_db.url) as url:
        client = Processes(url)
        assert {p["id"] for p in client.processes()} == PROCESS_IDS
        desc = client.process("coverage-gaps")
        assert desc["id"] == "coverage-gaps" and "thresholds" in desc["inputs"]
        inputs = {"demand": [{"id": "1", "poor_persons": 10}, {"id": "2", "poor_persons": 30}],
                  "supply": [{"id": "s", "class": "clinic"}], "thresholds": {"clinic": 5}, "cost_matrix": [[2], [9]]}
        res = client.execute("coverage-gaps", inputs)
        assert res["summary"]["clinic"]["population_affected"] == 30
        assert res["summary"]["clinic"]["share"] == pytest.approx(0.75)
        job = client.execute("coverage-gaps", inputs, async_=True)
        assert job["status"] in ("accepted", "running", "successful") and job["type"] == "process"
        for _ in range(100):
            st = httpx.get(f"{url}/jobs/{job['jobID']}").json()
            if st["status"] == "successful":
                break
            time.sleep(0.2)
        assert httpx.get(f"{url}/jobs/{job['jobID']}/results").json()["summary"] == res["summary"]
