"""Road networks (issue 22): import from a GeoPackage and from an OpenStreetMap extract built here, travel times
against an independent Dijkstra (networkx) on the same edge table — one-way streets, a road closed to walking, a
disconnected part, points beyond the snap distance —, snapping against shapely, the cache, the published collection,
and analyses run with ``cost: "network"`` against the access package given the same matrix."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import networkx as nx
import numpy as np
import pyogrio
import pytest
import shapely
from pyproj import CRS, Transformer
from tpa_testing import ThrowawayDatabase, client_for, fetch, run_async, settings_for, tpa_cli

from app.analysis import network as nwa
from app.db import create_engine
from app.services import roads as rs

REGION = "road-test"
X0, Y0, STEP = 123.90, 42.30, 0.01  # a 7 × 7 grid of streets about 0.8 km × 1.1 km apart
N = 7


def _grid_features() -> tuple[list[shapely.LineString], dict[str, list[Any]]]:
    """Rows: one line each across the whole grid (split at the crossings by the import: they share vertices);
    columns: one line per block. Row 2 one-way eastwards (F), row 4 one-way westwards (T); column 3 is an unpaved
    track; a motorway (closed to walking) on a diagonal; an island of two roads far to the east."""
    geoms: list[shapely.LineString] = []
    f: dict[str, list[Any]] = {"fclass": [], "oneway": [], "surface": [], "name": [], "maxspeed": []}

    def add(g: shapely.LineString, cls: str, oneway: str = "B", surface: str | None = None, speed: int = 0) -> None:
        geoms.append(g)
        f["fclass"].append(cls)
        f["oneway"].append(oneway)
        f["surface"].append(surface)
        f["name"].append(f"{cls} {len(geoms)}")
        f["maxspeed"].append(speed)

    for r in range(N):
        oneway = {2: "F", 4: "T"}.get(r, "B")
        add(shapely.LineString([(X0 + c * STEP, Y0 + r * STEP) for c in range(N)]),
            "secondary" if r % 3 == 0 else "tertiary", oneway)
    for c in range(N):
        for r in range(N - 1):
            add(shapely.LineString([(X0 + c * STEP, Y0 + r * STEP), (X0 + c * STEP, Y0 + (r + 1) * STEP)]),
                "track" if c == 3 else "residential", surface="gravel" if c == 3 else "asphalt",
                speed=35 if c == 5 else 0)
    add(shapely.LineString([(X0, Y0), (X0 + 3 * STEP, Y0 + 3 * STEP), (X0 + 6 * STEP, Y0 + 6 * STEP)]), "motorway",
        "F")
    add(shapely.LineString([(X0 + 0.2, Y0), (X0 + 0.21, Y0)]), "primary")
    add(shapely.LineString([(X0 + 0.21, Y0), (X0 + 0.21, Y0 + 0.01)]), "primary")
    return geoms, f


def _write_gpkg(path: Path) -> None:
    geoms, fields = _grid_features()
    pyogrio.raw.write(str(path), shapely.to_wkb(np.asarray(geoms, dtype=object)),
                      [np.asarray(v, dtype=object if k != "maxspeed" else np.int64) for k, v in fields.items()],
                      list(fields), driver="GPKG", crs="EPSG:4326", geometry_type="LineString", layer="roads")


def _write_pbf(path: Path) -> None:
    """A small OSM extract: a primary way of three nodes crossed at its middle node by a one-way residential street,
    a footway (no motor traffic) and a way tagged construction (not a road)."""
    import osmium

    nodes = {1: (124.00, 42.00), 2: (124.01, 42.00), 3: (124.02, 42.00), 4: (124.01, 42.01), 5: (124.01, 41.99),
             6: (124.02, 42.01)}
    with osmium.SimpleWriter(str(path)) as w:
        for i, (x, y) in nodes.items():
            w.add_node(osmium.osm.mutable.Node(id=i, location=osmium.osm.Location(x, y), tags={}))
        w.add_way(osmium.osm.mutable.Way(id=10, nodes=[1, 2, 3], tags={"highway": "primary", "name": "G1"}))
        w.add_way(osmium.osm.mutable.Way(id=11, nodes=[5, 2, 4], tags={"highway": "residential", "oneway": "yes"}))
        w.add_way(osmium.osm.mutable.Way(id=12, nodes=[3, 6, 4], tags={"highway": "footway"}))
        w.add_way(osmium.osm.mutable.Way(id=13, nodes=[1, 5], tags={"highway": "construction"}))


@pytest.fixture(scope="module")
def road_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThrowawayDatabase]:
    with ThrowawayDatabase("roads") as db:
        db.upgrade()
        tpa_cli(db, "region", "create", REGION, "--country", "CN", "--crs", "EPSG:32651", "--name", "Road test")
        gpkg = tmp_path_factory.mktemp("roads") / "roads.gpkg"
        _write_gpkg(gpkg)
        done = tpa_cli(db, "import", "roads", str(gpkg), "--region", REGION, "--note", "test grid")
        assert "wrote road-test roads v1" in done.stdout + done.stderr, done.stdout + done.stderr
        tpa_cli(db, "region", "create", "no-roads", "--country", "CN", "--crs", "EPSG:32651")
        yield db


@pytest.fixture(scope="module")
def network(road_db: ThrowawayDatabase) -> rs.Network:
    async def get() -> rs.Network:
        import asyncpg

        from app.settings import libpq_url

        conn = await asyncpg.connect(libpq_url(road_db.url))
        try:
            net = await rs.current_network(conn, REGION)
        finally:
            await conn.close()
        assert net is not None
        return net

    return run_async(get())


def _edges(db: ThrowawayDatabase, network_id: int) -> list[Any]:
    return fetch(db.name, "SELECT edge_id, source, target, oneway, length_m, motor_kmh, walk_kmh, road_class, "
                 "surface, ST_AsText(geom) AS wkt, ST_X(ST_StartPoint(geom)) AS x0 FROM road_edge "
                 "WHERE network_id = $1 "
                 "ORDER BY edge_id", network_id)


def test_the_gpkg_import_splits_lines_at_shared_vertices_and_costs_each_class(road_db, network):
    rows = _edges(road_db, network.network_id)
    # 7 rows split into 6 blocks each, 7 × 6 column blocks, the motorway in 2 (its middle vertex is a crossing),
    # the island's 2
    assert len(rows) == 7 * 6 + 7 * 6 + 2 + 2 == network.edges
    by_class = {r["road_class"]: r for r in rows}
    assert by_class["motorway"]["walk_kmh"] is None and by_class["motorway"]["motor_kmh"] == 80
    assert by_class["track"]["motor_kmh"] == 15  # the class speed (below the unpaved cap of 30)
    assert {r["oneway"] for r in rows if r["road_class"] == "motorway"} == {1}
    col5 = [r for r in rows if r["road_class"] == "residential" and abs(r["x0"] - (X0 + 5 * STEP)) < 1e-9]
    assert col5 and all(r["motor_kmh"] == 35 for r in col5)  # a layer's speed field is the travel speed
    info = fetch(road_db.name, "SELECT components, largest_component_share, note, vertices FROM road_network "
                 "WHERE network_id = $1", network.network_id)[0]
    assert info["components"] == 2 and info["note"] == "test grid" and info["vertices"] == N * N + 3
    assert info["largest_component_share"] == pytest.approx(N * N / (N * N + 3))


def _oracle(db: ThrowawayDatabase, net: rs.Network, mode: str, o: rs.Snapped, d: rs.Snapped) -> np.ndarray:
    """Shortest times by networkx on the same edge table, each point inserted into its edge as a node of its own
    (the edge split at the points' fractions), plus the off-road walks."""
    g = nx.DiGraph()
    on_edge: dict[int, list[tuple[float, Any]]] = {}
    for side, s in (("o", o), ("d", d)):
        for i in np.flatnonzero(s.ok):
            on_edge.setdefault(int(s.edge[i]), []).append((float(s.fraction[i]), (side, int(i))))

    def link(a: Any, b: Any, t: float) -> None:
        if not g.has_edge(a, b) or g[a][b]["t"] > t:
            g.add_edge(a, b, t=t)

    for e in _edges(db, net.network_id):
        kmh = e["motor_kmh"] if mode == "motor" else e["walk_kmh"]
        if kmh is None:
            continue
        t = e["length_m"] * 3.6 / kmh
        fwd = mode == "walk" or e["oneway"] != -1
        back = mode == "walk" or e["oneway"] != 1
        chain = [(0.0, e["source"])] + sorted(on_edge.get(e["edge_id"], []), key=lambda p: p[0]) + \
            [(1.0, e["target"])]
        for (fa, a), (fb, b) in zip(chain, chain[1:], strict=False):
            if fwd or fb == fa:  # two nodes at the same place are one place, whatever the direction
                link(a, b, (fb - fa) * t)
            if back or fb == fa:
                link(b, a, (fb - fa) * t)
    walk = net.speeds.offroad_kmh / 3.6
    out = np.full((len(o.edge), len(d.edge)), np.nan)
    for i in np.flatnonzero(o.ok):
        dist = nx.single_source_dijkstra_path_length(g, ("o", int(i)), weight="t")
        for j in np.flatnonzero(d.ok):
            if ("d", int(j)) in dist:
                out[i, j] = dist[("d", int(j))] + o.distance_m[i] / walk + d.distance_m[j] / walk
    return out


def _points(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    span = 6 * STEP + 0.004
    pts = np.column_stack([X0 - 0.002 + rng.random(n) * span, Y0 - 0.002 + rng.random(n) * span])
    extra = np.array([[X0 + 0.205, Y0 + 0.001],  # on the island
                      [X0 + 0.10, Y0 + 0.03],  # 4 km from any road: beyond the snap distance
                      [X0 + 2 * STEP, Y0 + 2 * STEP]])  # exactly on a vertex
    return np.vstack([pts, extra])


@pytest.mark.parametrize("mode", ["motor", "walk"])
def test_travel_times_equal_an_independent_dijkstra(road_db, network, mode):
    # checks the method: methodology#road-networks
    origins, destinations = _points(1, 40), _points(2, 15)

    async def compute() -> tuple[rs.TravelTimes, rs.TravelTimes]:
        eng = create_engine(settings_for(road_db.url).db)
        try:
            first = await rs.travel_times(eng, network, mode, origins, destinations, max_snap_m=1000)
            again = await rs.travel_times(eng, network, mode, origins, destinations, max_snap_m=1000)
        finally:
            await eng.dispose()
        return first, again

    tt, again = run_async(compute())
    oracle = _oracle(road_db, network, mode, tt.origins, tt.destinations)
    assert np.array_equal(np.isnan(tt.seconds), np.isnan(oracle))
    np.testing.assert_allclose(tt.seconds, oracle, rtol=1e-9, atol=1e-9)
    # the far point is reported, never snapped; the island reaches only itself; the rest are reachable
    far, island = len(origins) - 2, len(origins) - 3
    assert not tt.origins.ok[far] and np.isnan(tt.seconds[far]).all()
    assert not tt.destinations.ok[len(destinations) - 2]
    assert np.isfinite(tt.seconds[island, len(destinations) - 3]) and np.isnan(tt.seconds[island, :-3]).all()
    assert np.isfinite(tt.seconds[:island, :-3]).all()
    summary = tt.summary()
    assert summary["origins_not_snapped"] == 1 and summary["destinations_not_snapped"] == 1
    assert summary["network"]["version"] == 1 and summary["mode"] == mode
    # one-way rows make some trips longer one way than back (motor only)
    if mode == "motor":
        back = run_async(_times(road_db, network, mode, destinations[:-3], origins[:-3]))
        assert not np.allclose(back.seconds.T, tt.seconds[:-3, :-3])
    # the cache answers the same matrix
    assert again.cached and not tt.cached
    np.testing.assert_array_equal(again.seconds, tt.seconds)


async def _times(db: ThrowawayDatabase, net: rs.Network, mode: str, o: np.ndarray, d: np.ndarray
                 ) -> rs.TravelTimes:
    eng = create_engine(settings_for(db.url).db)
    try:
        return await rs.travel_times(eng, net, mode, o, d, max_snap_m=1000, use_cache=False)
    finally:
        await eng.dispose()


def test_snapping_is_the_nearest_usable_road_by_an_independent_measure(road_db, network):
    pts = _points(3, 60)
    tt = run_async(_times(road_db, network, "walk", pts, pts[:1]))
    aeqd = CRS.from_proj4(f"+proj=aeqd +lat_0={Y0 + 0.03} +lon_0={X0 + 0.03} +datum=WGS84 +units=m")
    to_m = Transformer.from_crs(4326, aeqd, always_xy=True)
    lines = [shapely.from_wkt(e["wkt"]) for e in _edges(road_db, network.network_id) if e["walk_kmh"] is not None]
    lines_m = [shapely.transform(ln, lambda xy: np.column_stack(to_m.transform(xy[:, 0], xy[:, 1]))) for ln in lines]
    px, py = to_m.transform(pts[:, 0], pts[:, 1])
    for i, (x, y) in enumerate(zip(px, py, strict=True)):
        nearest = min(shapely.distance(shapely.Point(x, y), ln) for ln in lines_m)
        if nearest > 1000:
            assert not tt.origins.ok[i]
        else:
            assert tt.origins.ok[i]
            assert tt.origins.distance_m[i] == pytest.approx(nearest, rel=3e-3, abs=0.5)


def test_the_osm_import_follows_shared_nodes_one_way_streets_and_modes(road_db, tmp_path):
    pbf = tmp_path / "small.osm.pbf"
    _write_pbf(pbf)
    fetch(road_db.name, "INSERT INTO region (region_id, name, country, code_system, analysis_crs, poverty_line, "
          "currency) VALUES ('osm-test', 'OSM test', 'CN', 'test', 32651, 4000, 'CNY')")
    done = tpa_cli(road_db, "import", "roads", str(pbf), "--region", "osm-test")
    assert "wrote osm-test roads v1" in done.stdout + done.stderr
    rows = fetch(road_db.name, "SELECT e.source, e.target, e.road_class, e.oneway, e.motor_kmh, e.walk_kmh FROM "
                 "road_edge e JOIN road_network n USING (network_id) WHERE n.region_id = 'osm-test' ORDER BY edge_id")
    pairs = {(r["source"], r["target"]): r for r in rows}
    # the primary split at node 2 (shared with the residential street), the residential at node 2 too; the
    # footway's middle node 6 is its own: one edge 3 → 4 through it
    assert set(pairs) == {(1, 2), (2, 3), (5, 2), (2, 4), (3, 4)}
    assert pairs[(5, 2)]["oneway"] == 1 and pairs[(1, 2)]["oneway"] == 0
    assert pairs[(3, 4)]["motor_kmh"] is None and pairs[(3, 4)]["walk_kmh"] == 5
    # a second import is version 2 and the current one; the first stays
    tpa_cli(road_db, "import", "roads", str(pbf), "--region", "osm-test")
    versions = fetch(road_db.name, "SELECT version, current FROM road_network WHERE region_id = 'osm-test' "
                     "ORDER BY version")
    assert [(v["version"], v["current"]) for v in versions] == [(1, False), (2, True)]
    listed = tpa_cli(road_db, "roads", "list", "--region", "osm-test").stdout
    assert "small.osm.pbf" in listed and "yes" in listed


def test_bad_road_files_are_refused_with_nothing_written(road_db, tmp_path):
    before = fetch(road_db.name, "SELECT count(*) AS n FROM road_network")[0]["n"]
    junk = tmp_path / "junk.osm.pbf"
    junk.write_bytes(b"not a pbf")
    done = tpa_cli(road_db, "import", "roads", str(junk), "--region", REGION, check=False)
    assert done.returncode == 2 and "cannot read junk.osm.pbf" in done.stdout + done.stderr
    geoms, fields = _grid_features()
    fields["fclass"][0] = "spaceway"
    bad = tmp_path / "bad.gpkg"
    pyogrio.raw.write(str(bad), shapely.to_wkb(np.asarray(geoms, dtype=object)),
                      [np.asarray(v, dtype=object if k != "maxspeed" else np.int64) for k, v in fields.items()],
                      list(fields), driver="GPKG", crs="EPSG:4326", geometry_type="LineString")
    done = tpa_cli(road_db, "import", "roads", str(bad), "--region", REGION, check=False)
    assert done.returncode == 2 and "'spaceway' (1)" in done.stdout + done.stderr
    done = tpa_cli(road_db, "import", "roads", str(bad), "--region", "nowhere", check=False)
    assert done.returncode != 0
    assert fetch(road_db.name, "SELECT count(*) AS n FROM road_network")[0]["n"] == before


# ------------------------------------------------------------------------------------------------ through the API
@pytest.fixture(scope="module")
async def rc(road_db: ThrowawayDatabase) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(settings_for(road_db.url)) as c:
        yield c


def _fc(points: np.ndarray, props: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": f"p{i}", "geometry": {"type": "Point", "coordinates": [float(x), float(y)]},
         "properties": {"region": REGION, **p}} for i, ((x, y), p) in enumerate(zip(points, props, strict=True))]}


async def test_the_network_is_a_collection(rc):
    r = await rc.get("/collections/roads/items", params={"region": REGION, "limit": 1000})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["numberMatched"] == 7 * 6 + 7 * 6 + 4
    props = body["features"][0]["properties"]
    assert props["motor_minutes"] == pytest.approx(props["length_m"] * 0.06 / props["motor_kmh"])


async def test_accessibility_on_the_network_equals_access_given_the_same_matrix(rc, road_db, network):
    import pandas as pd
    from access import Access

    demand_pts, supply_pts = _points(4, 25)[:-3], _points(5, 4)[:-3]
    rng = np.random.default_rng(9)
    pop = rng.integers(10, 200, len(demand_pts)).tolist()
    cap = rng.integers(5, 50, len(supply_pts)).tolist()
    r = await rc.post("/processes/accessibility/execution", json={"inputs": {
        "demand": _fc(demand_pts, [{"poor_persons": p} for p in pop]),
        "supply": _fc(supply_pts, [{"capacity": c} for c in cap]),
        "cost": "network", "mode": "motor", "max_cost": 6, "method": "2sfca"}})
    assert r.status_code == 200, r.text
    summary = r.json()["summary"]
    assert summary["cost"] == "network minutes (motor)" and summary["network"]["network"]["version"] == 1
    items = (await rc.get(r.json()["features"]["href"].replace("http://testserver", ""),
                          params={"limit": 100})).json()["features"]
    got = np.array([f["properties"]["access"] for f in sorted(items, key=lambda f: int(f["id"][1:]))])
    tt = await _times_async(road_db, network, demand_pts, supply_pts)
    minutes = tt.seconds / 60
    i, j = np.nonzero(np.nan_to_num(minutes, nan=np.inf) <= 6)
    a = Access(demand_df=pd.DataFrame({"d": range(len(pop)), "p": pop}), demand_index="d", demand_value="p",
               supply_df=pd.DataFrame({"s": range(len(cap)), "c": cap}), supply_index="s", supply_value="c",
               cost_df=pd.DataFrame({"o": i, "t": j, "cost": minutes[i, j]}), cost_origin="o", cost_dest="t",
               cost_name="cost")
    expected = a.two_stage_fca(name="a", max_cost=6)["a_c"].reindex(range(len(pop))).fillna(0).to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    # each unit's off-road distance to its road is in the layer
    snap = np.array([f["properties"]["snap_m"] for f in sorted(items, key=lambda f: int(f["id"][1:]))])
    np.testing.assert_allclose(snap, tt.origins.distance_m, rtol=1e-9)
    assert (got > 0).any() and (got == 0).any()  # the 6-minute catchment leaves some villages out


async def _times_async(db: ThrowawayDatabase, net: rs.Network, o: np.ndarray, d: np.ndarray) -> rs.TravelTimes:
    return await _times(db, net, "motor", o, d)


async def test_network_cost_is_refused_where_a_region_has_none_or_with_a_matrix(rc):
    pts = _points(6, 3)[:3]
    r = await rc.post("/processes/accessibility/execution", json={"inputs": {
        "demand": _fc(pts, [{"poor_persons": 1}] * 3), "supply": _fc(pts[:1], [{"capacity": 1}]),
        "cost": "network", "cost_matrix": [[1], [1], [1]]}})
    assert r.status_code == 400 and "not both" in r.text
    fc = _fc(pts, [{"poor_persons": 1}] * 3)
    for f in fc["features"]:
        f["properties"]["region"] = "no-roads"
    r = await rc.post("/processes/accessibility/execution", json={"inputs": {
        "demand": fc, "supply": fc, "cost": "network"}})
    assert r.status_code == 400 and "has no road network" in r.text and "tpa import roads" in r.text


async def test_isochrone_membership_agrees_with_the_matrix(rc, road_db, network):
    # checks the method: methodology#isochrones
    sites = np.array([[X0 + 2.5 * STEP, Y0 + 2 * STEP + 0.0004], [X0 + 5 * STEP + 0.0003, Y0 + 4.6 * STEP]])
    r = await rc.post("/processes/isochrones/execution", json={"inputs": {
        "sites": _fc(sites, [{}, {}]), "minutes": [4, 8], "mode": "motor", "cell_m": 20}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["summary"]["sites_drawn"] == 2 and body["summary"]["network"]["version"] == 1
    feats = (await rc.get(body["isochrones"]["href"].replace("http://testserver", ""),
                          params={"limit": 100})).json()["features"]
    polys = {(f["properties"]["site_id"], f["properties"]["minutes"]): shapely.from_geojson(
        json.dumps(f["geometry"])) for f in feats}
    assert set(polys) == {("p0", 4), ("p0", 8), ("p1", 4), ("p1", 8)}
    assert polys[("p0", 4)].area < polys[("p0", 8)].area and polys[("p0", 8)].contains(polys[("p0", 4)].buffer(-1e-6))
    rng = np.random.default_rng(12)
    span = 6 * STEP
    probe = np.vstack([np.column_stack([X0 + rng.random(1500) * span, Y0 + rng.random(1500) * span]),
                       [(X0 + c * STEP, Y0 + r * STEP) for r in range(N) for c in range(N)]])  # + the vertices
    tt = await _times(road_db, network, "motor", probe, sites)
    # 1. the time the polygons are drawn from equals the matrix's at the points themselves
    eng = create_engine(settings_for(road_db.url).db)
    try:
        r = await rs.reach(eng, network, "motor", sites, 8 * 60, 1000)
    finally:
        await eng.dispose()
    to_m = Transformer.from_crs(4326, 32651, always_xy=True)
    lines = shapely.from_wkb([e["wkb"] for e in r.edges])
    es = nwa.EdgeSet(np.array([e["edge_id"] for e in r.edges]), np.array([e["source"] for e in r.edges]),
                     np.array([e["target"] for e in r.edges]), np.array([e["cost"] for e in r.edges]),
                     np.array([e["reverse_cost"] for e in r.edges]),
                     shapely.transform(lines, lambda xy: np.column_stack(to_m.transform(xy[:, 0], xy[:, 1]))))
    pxy = np.column_stack(to_m.transform(probe[:, 0], probe[:, 1]))
    off = network.speeds.offroad_kmh / 3.6
    for k in range(2):
        site = nwa.SiteOnNetwork(int(r.sites.edge[k]), float(r.sites.fraction[k]), r.sites.distance_m[k] / off)
        mine = nwa.time_to_site(es, r.to_site[k], site, pxy, off, 1000)
        matrix = np.nan_to_num(tt.seconds[:, k], nan=np.inf)
        within = (matrix <= 8 * 60) | (mine <= 8 * 60)  # reach() knows the vertices within the budget only
        same = np.isclose(mine, matrix, rtol=2e-3, atol=0.5) | ~within
        assert same.mean() >= 0.99, same.mean()
    # 2. membership of the polygons agrees with the matrix away from the boundary (cells of 20 m)
    agree = total = 0
    for k, sid in enumerate(("p0", "p1")):
        for m in (4, 8):
            inside = shapely.contains_xy(polys[(sid, m)], probe[:, 0], probe[:, 1])
            t = tt.seconds[:, k] / 60
            reach = np.nan_to_num(t, nan=np.inf) <= m
            clear = np.nan_to_num(np.abs(t - m), nan=np.inf) > 0.25
            agree += int((inside == reach)[clear].sum())
            total += int(clear.sum())
    assert agree / total >= 0.99, agree / total


async def test_gaps_location_and_matching_on_the_network_use_its_minutes(rc, road_db, network):
    from app.analysis import gaps as gp
    from app.analysis import location as loc

    demand_pts, supply_pts = _points(7, 30)[:-3], _points(8, 6)[:-3]
    far = np.array([[X0 + 0.10, Y0 + 0.03]])  # beyond the snap distance: listed, unreachable
    demand_pts = np.vstack([demand_pts, far])
    pop = [10 + 3 * k for k in range(len(demand_pts))]
    demand = _fc(demand_pts, [{"poor_persons": p, "needs": "P_SKILL"} for p in pop])
    supply = _fc(supply_pts, [{"class": "clinic", "capacity": 40, "addresses_needs": ["P_SKILL"], "type": "training"}
                              for _ in supply_pts])
    minutes = (await _times(road_db, network, "motor", demand_pts, supply_pts)).seconds / 60
    # coverage gaps: the nearest clinic in minutes, beyond 3 minutes
    r = await rc.post("/processes/coverage-gaps/execution", json={"inputs": {
        "demand": demand, "supply": supply, "threshold": 3, "cost": "network"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["cost"]["kind"] == "network minutes (motor)"
    assert body["cost"]["network"]["origins_not_snapped_ids"] == [f"p{len(demand_pts) - 1}"]
    near, _ = gp.nearest_from_matrix(minutes)
    expected = gp.coverage_gap(near, _, np.array(pop, dtype=float), 3)
    assert body["summary"]["clinic"]["units_in_gap"] == int(expected.in_gap.sum()) > 0
    # location-allocation: MCLP on the same minutes
    r = await rc.post("/processes/location-allocation/execution", json={"inputs": {
        "model": "mclp", "demand": demand, "candidates": supply, "p": 2, "service_radius": 4, "cost": "network"}})
    assert r.status_code == 200, r.text
    direct = loc.mclp(minutes, np.array(pop, dtype=float), 2, 4.0, [], 60, 1)
    assert r.json()["objective"] == pytest.approx(direct.objective)
    assert r.json()["bounds"]["cost"] == "network minutes (motor)"
    # needs matching: pairs within max_minutes only, costs in minutes
    r = await rc.post("/processes/needs-matching/execution", json={"inputs": {
        "units": demand, "projects": supply, "needs_property": "needs", "priority_property": None,
        "group_property": None, "cost": "network", "max_minutes": 5}})
    assert r.status_code == 200, r.text
    s = r.json()["summary"]
    ok = np.nan_to_num(minutes, nan=np.inf) <= 5
    assert s["compatible_pairs"] == int(ok.sum()) and s["cost"] == "network minutes"
    items = (await rc.get(r.json()["assignments"]["href"].replace("http://testserver", ""),
                          params={"limit": 1000})).json()["features"]
    for f in items:
        i, j = int(f["properties"]["unit_id"][1:]), int(f["properties"]["project_id"][1:])
        assert f["properties"]["minutes"] == pytest.approx(minutes[i, j])
