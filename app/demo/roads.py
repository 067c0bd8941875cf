"""A synthetic road network for the demo region (marked synthetic in app/data/tieling/PROVENANCE.md).

It follows the hierarchy of a Chinese county's roads, built from the demo's own settlements:

* national and provincial roads (trunk) join the county seats along their minimum spanning tree;
* county roads (secondary) join each township's centre to its county seat and to the townships near it (the
  minimum spanning tree of the seat and the townships of a county);
* township roads (tertiary, from the township's centre) and village roads (unclassified) join the villages of a
  township (the minimum spanning tree of its centre and villages, plus a link to the second-nearest village for a
  third of them, so there are loops); roads to a village farther than 6 km from the centre are unpaved tracks;
* the east of the region is hilly (the Liaodong uplands): speeds fall linearly from the class speed at the middle of
  the region to 55 % of it at its eastern edge.

Roads are straight with one bend each (a random offset of up to 12 % of their length). Deterministic for a seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pyproj import Transformer
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial import distance_matrix

from app.ingest.roads import DEFAULT_SPEEDS, Edges

HILL_SLOWDOWN = 0.45  # speeds at the eastern edge are 55 % of the class speed
TRACK_KM = 6.0  # a village farther than this from its township's centre is reached by an unpaved track
SOURCE = "synthetic demo network (app/demo/roads.py)"


class _Builder:
    def __init__(self, rng: np.random.Generator, to_m: Transformer, to_ll: Transformer, east: tuple[float, float]):
        self.rng, self.to_m, self.to_ll = rng, to_m, to_ll
        self.mid_lon, self.max_lon = east
        self.edges = Edges(speed_is_cap=False)
        self.ids: dict[tuple[int, int], int] = {}
        self.seen: set[tuple[int, int]] = set()

    def vertex(self, lon: float, lat: float) -> int:
        key = (round(lon * 1e7), round(lat * 1e7))
        return self.ids.setdefault(key, len(self.ids) + 1)

    def road(self, a: tuple[float, float], b: tuple[float, float], cls: str, surface: str = "asphalt") -> None:
        va, vb = self.vertex(*a), self.vertex(*b)
        if va == vb or (min(va, vb), max(va, vb)) in self.seen:
            return
        self.seen.add((min(va, vb), max(va, vb)))
        (ax, bx), (ay, by) = self.to_m.transform([a[0], b[0]], [a[1], b[1]])
        length = float(np.hypot(bx - ax, by - ay))
        t, off = 0.3 + 0.4 * self.rng.random(), (self.rng.random() * 2 - 1) * 0.12 * length
        nx_, ny_ = (-(by - ay) / length, (bx - ax) / length) if length > 0 else (0.0, 0.0)
        mx, my = ax + t * (bx - ax) + off * nx_, ay + t * (by - ay) + off * ny_
        mlon, mlat = self.to_ll.transform(mx, my)
        line = np.array([a, (mlon, mlat), b], dtype=float)
        hill = np.clip((line[:, 0].mean() - self.mid_lon) / max(self.max_lon - self.mid_lon, 1e-9), 0.0, 1.0)
        speed = (DEFAULT_SPEEDS[cls][0] or 20.0) * (1.0 - HILL_SLOWDOWN * hill)
        self.edges.add(va, vb, line, cls, None, 0, surface, round(float(speed), 1))

    def tree(self, points: list[tuple[float, float]], cls: str, extra_links: float = 0.0,
             track_from: int | None = None, hub_cls: str | None = None) -> None:
        """Roads along the minimum spanning tree of the points (metric distances); with ``extra_links``, that share
        of the points also gets a road to its second-nearest neighbour; with ``track_from``, roads to points farther
        than TRACK_KM from that point are unpaved tracks; with ``hub_cls``, the roads from the first point are of
        that class."""
        if len(points) < 2:
            return
        xy = np.column_stack(self.to_m.transform([p[0] for p in points], [p[1] for p in points]))
        d = distance_matrix(xy, xy)
        mst = minimum_spanning_tree(d).tocoo()
        far = (d[track_from] > TRACK_KM * 1000) if track_from is not None else np.zeros(len(points), dtype=bool)
        for i, j in zip(mst.row, mst.col, strict=True):
            remote = far[i] or far[j]
            kind = "track" if remote else (hub_cls if hub_cls and 0 in (i, j) else cls)
            self.road(points[i], points[j], kind, "gravel" if remote else "asphalt")
        if extra_links and len(points) > 2:
            second = np.argsort(d, axis=1)[:, 2]
            for i in np.flatnonzero(self.rng.random(len(points)) < extra_links):
                self.road(points[i], points[int(second[i])], cls)


async def demo_roads(conn: Any, region_id: str, analysis_crs: int, seed: int = 42) -> Edges:
    """The demo's road network from its county seats, township areas and villages in the database (asyncpg)."""
    from app.demo.generate import load_facts

    counties, _ = load_facts()
    to_m = Transformer.from_crs(4326, analysis_crs, always_xy=True)
    to_ll = Transformer.from_crs(analysis_crs, 4326, always_xy=True)
    towns = await conn.fetch(
        "SELECT code, parent_code, ST_X(p) AS x, ST_Y(p) AS y FROM (SELECT code, parent_code, "
        "ST_PointOnSurface(geom) AS p FROM admin_unit WHERE region_id = $1 AND level = 4 AND geom IS NOT NULL) t "
        "ORDER BY code", region_id)
    villages = await conn.fetch(
        "SELECT v.code, a.parent_code, ST_X(v.geom_point) AS x, ST_Y(v.geom_point) AS y FROM village v "
        "JOIN admin_unit a ON a.code = v.code WHERE v.region_id = $1 AND v.geom_point IS NOT NULL ORDER BY v.code",
        region_id)
    lons = [r["x"] for r in villages] or [c.lon for c in counties]
    b = _Builder(np.random.default_rng(seed), to_m, to_ll,
                 (float(np.mean([min(lons), max(lons)])), float(max(lons))))
    seats = {c.adcode: (c.lon, c.lat) for c in counties}
    b.tree(list(seats.values()), "trunk")
    towns_of: dict[str, list[tuple[float, float]]] = {}
    for t in towns:
        towns_of.setdefault(t["parent_code"], []).append((t["x"], t["y"]))
    for county, pts in sorted(towns_of.items()):
        if county in seats:
            b.tree([seats[county], *pts], "secondary")
    centre = {t["code"]: (t["x"], t["y"]) for t in towns}
    by_town: dict[str, list[tuple[float, float]]] = {}
    for v in villages:
        by_town.setdefault(v["parent_code"], []).append((v["x"], v["y"]))
    for town, pts in sorted(by_town.items()):
        if town in centre:
            b.tree([centre[town], *pts], "unclassified", extra_links=1 / 3, track_from=0, hub_cls="tertiary")
    return b.edges
