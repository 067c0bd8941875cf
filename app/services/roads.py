"""Road networks in the database: storing an imported network as a new version, snapping points to it and travel
times between point sets with pgRouting (docs/methodology.md#road-networks).

A travel time from a point A to a point B is

    off-road walk from A to the nearest road it may use  (snap distance / off-road speed)
  + along that edge to one of its ends (the share of the edge's time, where the edge may be driven that way)
  + the shortest time between the two vertices (pgRouting's Dijkstra, directed: one-way streets count)
  + along B's edge from one of its ends, + the off-road walk to B;

the least over the ends (and straight along the edge when A and B share it). A point farther than the maximum snap
distance from every usable road is reported as not snapped (its row or column is unreachable); a pair with no path
is unreachable (NaN) — never zero, never a large number.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import time
import zlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import shapely

from app.analysis.network import along, share
from app.errors import InvalidParameter
from app.ingest.roads import Edges, Speeds, components

log = logging.getLogger("tpa.roads")
Mode = Literal["motor", "walk"]
MODES: tuple[Mode, ...] = ("motor", "walk")
CACHE_PER_NETWORK = 20  # travel-time matrices kept per network (the oldest go first)


@dataclass(frozen=True)
class Network:
    network_id: int
    region_id: str
    version: int
    source: str
    speeds: Speeds
    edges: int

    @property
    def label(self) -> str:
        return f"{self.region_id} roads v{self.version}"

    def describe(self) -> dict[str, Any]:
        return {"network_id": self.network_id, "region": self.region_id, "version": self.version,
                "source": self.source, "edges": self.edges}


@dataclass
class Loaded:
    network: Network
    vertices: int
    length_km: float
    components: int
    largest_component_share: float
    seconds: float


# ------------------------------------------------------------------------------------------------ storing
async def store_network(conn: Any, region_id: str, edges: Edges, speeds: Speeds, source: str,
                        note: str | None = None) -> Loaded:
    """A new version of the region's network, current from now (``conn``: asyncpg, in the caller's transaction;
    nothing is written unless it commits)."""
    t0 = time.perf_counter()
    if await conn.fetchval("SELECT 1 FROM region WHERE region_id = $1", region_id) is None:
        raise InvalidParameter(f"there is no region {region_id!r} (see `tpa region list`)")
    motor, walk = edges.speeds_kmh(speeds)
    keep = ~(np.isnan(motor) & np.isnan(walk))
    vids, comp = components(np.asarray(edges.source)[keep], np.asarray(edges.target)[keep])
    share = float(np.mean(comp == 0)) if len(comp) else 0.0
    await conn.execute("LOCK TABLE road_network IN SHARE ROW EXCLUSIVE MODE")  # one version number at a time
    version = await conn.fetchval("SELECT coalesce(max(version), 0) + 1 FROM road_network WHERE region_id = $1",
                                  region_id)
    await conn.execute("UPDATE road_network SET current = false WHERE region_id = $1 AND current", region_id)
    nid = await conn.fetchval(
        "INSERT INTO road_network (region_id, version, source, note, speeds, edges, vertices, length_km, components, "
        "largest_component_share) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, 0, $8, $9) RETURNING network_id",
        region_id, version, source, note, json.dumps(speeds.to_json()), int(keep.sum()), len(vids),
        int(comp.max()) + 1 if len(comp) else 0, share)
    # a vertex's position: the end of an edge that has it
    pos: dict[int, tuple[float, float]] = {}
    for s, t, line in zip(edges.source, edges.target, edges.lines, strict=True):
        pos.setdefault(s, (float(line[0, 0]), float(line[0, 1])))
        pos.setdefault(t, (float(line[-1, 0]), float(line[-1, 1])))
    await conn.execute("CREATE TEMP TABLE _vertex (vertex_id bigint, component integer, x float8, y float8) "
                       "ON COMMIT DROP")
    await conn.copy_records_to_table("_vertex", records=((int(v), int(c), *pos[int(v)])
                                                         for v, c in zip(vids, comp, strict=True)))
    await conn.execute("INSERT INTO road_vertex (network_id, vertex_id, component, geom) SELECT $1, vertex_id, "
                       "component, ST_SetSRID(ST_MakePoint(x, y), 4326) FROM _vertex", nid)
    await conn.execute("CREATE TEMP TABLE _edge (edge_id bigint, source bigint, target bigint, road_class text, "
                       "name text, oneway smallint, surface text, motor_kmh float8, walk_kmh float8, wkb bytea) "
                       "ON COMMIT DROP")
    kept = [ln for ln, k in zip(edges.lines, keep, strict=True) if k]
    wkb = shapely.to_wkb(shapely.linestrings(np.concatenate(kept), indices=np.repeat(
        np.arange(len(kept)), [len(ln) for ln in kept]))) if kept else []
    rows = (i for i in range(len(edges)) if keep[i])

    def records() -> Any:
        for n, i in enumerate(rows):
            yield (n + 1, edges.source[i], edges.target[i], edges.road_class[i], edges.name[i], edges.oneway[i],
                   edges.surface[i], None if np.isnan(motor[i]) else float(motor[i]),
                   None if np.isnan(walk[i]) else float(walk[i]), wkb[n])

    await conn.copy_records_to_table("_edge", records=records())
    await conn.execute(
        "INSERT INTO road_edge (network_id, edge_id, source, target, road_class, name, oneway, surface, length_m, "
        "motor_kmh, walk_kmh, geom) SELECT $1, edge_id, source, target, road_class, name, oneway, surface, "
        "ST_Length(geography(g)), motor_kmh, walk_kmh, g FROM (SELECT *, ST_GeomFromWKB(wkb, 4326) AS g FROM _edge) e",
        nid)
    length_km = await conn.fetchval("UPDATE road_network SET length_km = (SELECT coalesce(sum(length_m), 0) / 1000 "
                                    "FROM road_edge WHERE network_id = $1) WHERE network_id = $1 RETURNING length_km",
                                    nid)
    await conn.execute("ANALYZE road_edge")
    net = Network(nid, region_id, version, source, speeds, int(keep.sum()))
    return Loaded(net, len(vids), float(length_km), int(comp.max()) + 1 if len(comp) else 0, share,
                  time.perf_counter() - t0)


def _network(row: Any) -> Network:
    speeds = row["speeds"] if isinstance(row["speeds"], dict) else json.loads(row["speeds"])
    return Network(row["network_id"], row["region_id"], row["version"], row["source"], Speeds.from_json(speeds),
                   row["edges"])


_NETWORK_COLS = "network_id, region_id, version, source, speeds, edges"


async def current_network(conn: Any, region_id: str) -> Network | None:
    row = await conn.fetchrow(f"SELECT {_NETWORK_COLS} FROM road_network WHERE region_id = $1 AND current",
                              region_id)
    return None if row is None else _network(row)


async def _can_route(conn: Any, mode: Mode) -> None:
    """A known mode, and pgRouting on the server (a clear 400 otherwise)."""
    if mode not in MODES:
        raise InvalidParameter(f"mode must be one of {', '.join(MODES)}")
    if not await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'pgrouting'"):
        raise InvalidParameter("travel times on the road network need pgRouting on the database server "
                               "(scripts/ensure-postgis.sh installs it)")


# ------------------------------------------------------------------------------------------------ routing
def edges_sql(network_id: int, mode: Mode, reverse: bool = False) -> str:
    """The edge query pgRouting reads: costs in seconds, -1 where a direction may not be used. ``reverse`` swaps
    every edge's direction (Dijkstra from the destinations then gives the times *to* them)."""
    s, g = ("target", "source") if reverse else ("source", "target")
    return (f"SELECT edge_id AS id, {s} AS source, {g} AS target, {_costs(mode)} "
            f"FROM road_edge WHERE network_id = {int(network_id)} AND {_usable(mode)}")


def _costs(mode: Mode) -> str:
    """An edge's times (s) along its line (``cost``) and against it (``reverse_cost``) in SQL: its length over the
    mode's speed, -1 against a one-way street by motor (walking goes both ways)."""
    if mode == "walk":
        t = "length_m * 3.6 / walk_kmh"
        return f"{t} AS cost, {t} AS reverse_cost"
    t = "length_m * 3.6 / motor_kmh"
    return (f"CASE WHEN oneway = -1 THEN -1 ELSE {t} END AS cost, "
            f"CASE WHEN oneway = 1 THEN -1 ELSE {t} END AS reverse_cost")


@dataclass
class Snapped:
    """Points on the network: the edge each is snapped to (-1: none within the maximum distance), where along it
    (0 at the edge's source, 1 at its target), the off-road distance (m), and the edge's ends and times (s;
    -1 where that direction is closed)."""

    edge: np.ndarray
    fraction: np.ndarray
    distance_m: np.ndarray
    source: np.ndarray
    target: np.ndarray
    cost: np.ndarray
    reverse_cost: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        return self.edge >= 0


def _usable(mode: Mode) -> str:
    return "motor_kmh IS NOT NULL" if mode == "motor" else "walk_kmh IS NOT NULL"


async def snap(conn: Any, network: Network, mode: Mode, lonlat: np.ndarray, max_snap_m: float) -> Snapped:
    """Each point's nearest edge usable by the mode (geodesic distance; of the 8 nearest by the index), within
    ``max_snap_m``; the fraction is measured along the edge's geodesic length."""
    n = len(lonlat)
    rows = await conn.fetch(
        f"""
        WITH p AS (SELECT i, ST_SetSRID(ST_MakePoint(x, y), 4326) AS g
                   FROM unnest($1::float8[], $2::float8[]) WITH ORDINALITY AS u(x, y, i)),
        near AS (
          SELECT DISTINCT ON (p.i) p.i, e.edge_id, e.source, e.target, e.length_m, e.geom, e.cost, e.reverse_cost,
                 ST_LineLocatePoint(e.geom, p.g) AS f,
                 ST_Distance(geography(p.g), geography(e.geom)) AS d
          FROM p CROSS JOIN LATERAL (
            SELECT edge_id, source, target, length_m, geom, {_costs(mode)} FROM road_edge
            WHERE network_id = $3 AND {_usable(mode)} ORDER BY geom <-> p.g LIMIT 8) e
          ORDER BY p.i, d, e.edge_id)
        SELECT i, edge_id, source, target, d, cost, reverse_cost,
               CASE WHEN length_m > 0 THEN least(1.0, ST_Length(geography(ST_LineSubstring(geom, 0, f))) / length_m)
                    ELSE f END AS f
        FROM near WHERE d <= $4
        """,
        lonlat[:, 0].astype(float).tolist(), lonlat[:, 1].astype(float).tolist(), network.network_id,
        float(max_snap_m))
    out = Snapped(np.full(n, -1, dtype=np.int64), np.full(n, np.nan), np.full(n, np.nan),
                  np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64), np.full(n, -1.0),
                  np.full(n, -1.0))
    if rows:
        i = np.array([r["i"] for r in rows], dtype=np.int64) - 1
        out.edge[i] = [r["edge_id"] for r in rows]
        out.source[i] = [r["source"] for r in rows]
        out.target[i] = [r["target"] for r in rows]
        out.distance_m[i] = [r["d"] for r in rows]
        out.fraction[i] = [r["f"] for r in rows]
        out.cost[i] = [r["cost"] for r in rows]
        out.reverse_cost[i] = [r["reverse_cost"] for r in rows]
    return out


def _exits(s: Snapped) -> tuple[np.ndarray, np.ndarray]:
    """(vertex, seconds) of the two ways off each point's edge: to its target, to its source (inf if closed)."""
    return np.column_stack([s.target, s.source]), np.column_stack([share(1 - s.fraction, s.cost),
                                                                   share(s.fraction, s.reverse_cost)])


def _entries(s: Snapped) -> tuple[np.ndarray, np.ndarray]:
    """(vertex, seconds) of the two ways onto each point's edge: from its source, from its target."""
    return np.column_stack([s.source, s.target]), np.column_stack([share(s.fraction, s.cost),
                                                                   share(1 - s.fraction, s.reverse_cost)])


@dataclass
class TravelTimes:
    seconds: np.ndarray  # origins × destinations; NaN = unreachable (or an end not snapped)
    origins: Snapped
    destinations: Snapped
    network: Network
    mode: Mode
    max_snap_m: float
    cached: bool = False
    elapsed_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """What a result says about the costs it used."""
        finite = np.isfinite(self.seconds)
        return {"cost": "network", "mode": self.mode, "unit": "minutes", "network": self.network.describe(),
                "speeds": self.network.speeds.to_json(), "max_snap_m": self.max_snap_m,
                "origins_not_snapped": int((~self.origins.ok).sum()),
                "destinations_not_snapped": int((~self.destinations.ok).sum()),
                "unreachable_pairs": int((~finite).sum()), "pairs": int(self.seconds.size),
                "mean_snap_m": _mean(np.concatenate([self.origins.distance_m, self.destinations.distance_m]))}


def _mean(a: np.ndarray) -> float | None:
    a = a[np.isfinite(a)]
    return round(float(a.mean()), 3) if len(a) else None


def _key(mode: Mode, max_snap_m: float, speeds: Speeds, origins: np.ndarray, destinations: np.ndarray) -> str:
    h = hashlib.sha256(f"{mode}|{max_snap_m!r}|{speeds.offroad_kmh!r}|{origins.shape}|{destinations.shape}".encode())
    h.update(np.ascontiguousarray(origins, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(destinations, dtype=np.float64).tobytes())
    return h.hexdigest()


def _pack(tt: TravelTimes) -> tuple[bytes, bytes]:
    buf = io.BytesIO()
    arrays = {f"{side}_{k}": getattr(getattr(tt, side), k) for side in ("origins", "destinations")
              for k in ("edge", "fraction", "distance_m", "source", "target", "cost", "reverse_cost")}
    np.savez(buf, **arrays)
    return zlib.compress(np.ascontiguousarray(tt.seconds, dtype=np.float64).tobytes(), 1), buf.getvalue()


def _unpack(seconds: bytes, snaps: bytes, rows: int, cols: int) -> tuple[np.ndarray, Snapped, Snapped]:
    m = np.frombuffer(zlib.decompress(seconds), dtype=np.float64).reshape(rows, cols).copy()
    z = np.load(io.BytesIO(snaps))
    sides = [Snapped(*(z[f"{side}_{k}"] for k in ("edge", "fraction", "distance_m", "source", "target", "cost",
                                                   "reverse_cost"))) for side in ("origins", "destinations")]
    return m, sides[0], sides[1]


async def travel_times(engine: Any, network: Network, mode: Mode, origins: np.ndarray, destinations: np.ndarray,
                       max_snap_m: float = 1000.0, parallel: int = 2, use_cache: bool = True) -> TravelTimes:
    """Travel times in seconds from every origin to every destination (lon/lat arrays, shape (n, 2)).

    ``engine``: the service's SQLAlchemy async engine; the Dijkstra runs are split over ``parallel`` connections
    (one core each). A matrix is cached per network, mode and point set."""
    t0 = time.perf_counter()
    origins = np.asarray(origins, dtype=float).reshape(-1, 2)
    destinations = np.asarray(destinations, dtype=float).reshape(-1, 2)
    key = _key(mode, max_snap_m, network.speeds, origins, destinations)
    async with _raw(engine) as conn:
        await _can_route(conn, mode)
        if use_cache:
            row = await conn.fetchrow("SELECT rows, cols, seconds, snaps FROM travel_time_cache WHERE network_id = $1 "
                                      "AND mode = $2 AND key = $3", network.network_id, mode, key)
            if row is not None:
                m, o, d = _unpack(row["seconds"], row["snaps"], row["rows"], row["cols"])
                return TravelTimes(m, o, d, network, mode, max_snap_m, True, time.perf_counter() - t0)
        o = await snap(conn, network, mode, origins, max_snap_m)
        d = await snap(conn, network, mode, destinations, max_snap_m)
    seconds = await _combine(engine, network, mode, o, d, max(1, parallel))
    tt = TravelTimes(seconds, o, d, network, mode, max_snap_m, False, time.perf_counter() - t0)
    if use_cache:
        sec, snaps = _pack(tt)
        async with _raw(engine) as conn, conn.transaction():
            await conn.execute("INSERT INTO travel_time_cache (network_id, mode, key, rows, cols, seconds, snaps) "
                               "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING", network.network_id,
                               mode, key, len(origins), len(destinations), sec, snaps)
            await conn.execute("DELETE FROM travel_time_cache WHERE network_id = $1 AND key IN (SELECT key FROM "
                               "travel_time_cache WHERE network_id = $1 ORDER BY created_at DESC OFFSET $2)",
                               network.network_id, CACHE_PER_NETWORK)
    log.info("travel times %d × %d on %s (%s): %.2f s", len(origins), len(destinations), network.label, mode,
             tt.elapsed_s)
    return tt


class _raw:
    """An asyncpg connection of the engine's pool, without the API's statement limit (the job's limit governs)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    async def __aenter__(self) -> Any:
        self._cm = self.engine.connect()
        conn = await self._cm.__aenter__()
        self.driver = (await conn.get_raw_connection()).driver_connection
        await self.driver.execute("SET statement_timeout = 0")
        return self.driver

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.driver.execute("RESET statement_timeout")
        finally:
            await self._cm.__aexit__(*exc)


async def _combine(engine: Any, network: Network, mode: Mode, o: Snapped, d: Snapped, parallel: int) -> np.ndarray:
    """The matrix, by one Dijkstra per point of the smaller side. Each point becomes a vertex of its own, joined to
    the ends of its edge by virtual edges that cost the share of the edge (and straight to the points of the other
    side on the same edge), so pgRouting's times are the points' times; the off-road walks are added after."""
    n, m = len(o.edge), len(d.edge)
    out = np.full((n, m), np.nan)
    oi, di = np.flatnonzero(o.ok), np.flatnonzero(d.ok)
    if not len(oi) or not len(di):
        return out
    async with _raw(engine) as conn:
        top_v, top_e = await conn.fetchrow("SELECT max(greatest(source, target)), max(edge_id) FROM road_edge "
                                           "WHERE network_id = $1", network.network_id)
    ov = top_v + 1 + oi  # the points' own vertices: origins, then destinations
    dv = top_v + 1 + n + di
    ev, ec = _exits(o)
    nv, nc = _entries(d)
    # from the destinations on the reversed network when they are fewer: every virtual edge is then reversed too
    reverse = len(di) < len(oi)
    src: list[np.ndarray] = []
    tgt: list[np.ndarray] = []
    cst: list[np.ndarray] = []

    def virtual(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:  # a → b in the direction of travel
        keep = np.isfinite(c)
        src.append((b if reverse else a)[keep])
        tgt.append((a if reverse else b)[keep])
        cst.append(c[keep])

    for k in range(2):
        virtual(ov, ev[oi, k], ec[oi, k])  # origin → the ends of its edge
        virtual(nv[di, k], dv, nc[di, k])  # the ends of its edge → destination
    same = o.edge[oi][:, None] == d.edge[di][None, :]
    if same.any():  # straight along a shared edge
        r, c = np.nonzero(same)
        virtual(ov[r], dv[c], along(o.fraction[oi][r], d.fraction[di][c], o.cost[oi][r], o.reverse_cost[oi][r]))
    vs, vt, vc = np.concatenate(src), np.concatenate(tgt), np.concatenate(cst)
    records = list(zip((top_e + 1 + np.arange(len(vs))).tolist(), vs.tolist(), vt.tolist(), vc.tolist(),
                       strict=True))
    starts, ends = (dv, ov) if reverse else (ov, dv)
    chunks = [ch for ch in np.array_split(starts, min(parallel, len(starts))) if len(ch)]
    sql = (edges_sql(network.network_id, mode, reverse)
           + " UNION ALL SELECT id, source, target, cost, -1::float8 AS reverse_cost FROM pg_temp._virtual")

    async def run(chunk: np.ndarray) -> list[Any]:
        async with _raw(engine) as conn, conn.transaction():
            await conn.execute("CREATE TEMP TABLE _virtual (id bigint, source bigint, target bigint, cost float8) "
                               "ON COMMIT DROP")
            await conn.copy_records_to_table("_virtual", records=records)
            return await conn.fetch(
                "SELECT start_vid, array_agg(end_vid) AS e, array_agg(agg_cost) AS c "
                "FROM pgr_dijkstraCost($1, $2::bigint[], $3::bigint[], true) GROUP BY start_vid",
                sql, chunk.tolist(), ends.tolist())

    first = top_v + 1
    for rows in await asyncio.gather(*(run(ch) for ch in chunks)):
        for row in rows:
            a = int(row["start_vid"]) - first
            b = np.asarray(row["e"], dtype=np.int64) - first
            if reverse:  # start: a destination (n + j), ends: origins (i)
                out[b, a - n] = row["c"]
            else:
                out[a, b - n] = row["c"]
    speed = network.speeds.offroad_kmh / 3.6
    out += np.nan_to_num(o.distance_m, nan=0.0)[:, None] / speed + np.nan_to_num(d.distance_m, nan=0.0)[None, :] / speed
    return out


# ------------------------------------------------------------------------------------------------ isochrones
@dataclass
class Reach:
    """What a set of sites is reached from within a time budget: for each site, the travel time (s) *to* it from
    every vertex within the budget (the site's own off-road walk included) and the extent of those vertices; the
    sites' snaps; the usable edges around them (for the cells' nearest road)."""

    sites: Snapped
    to_site: list[dict[int, float]]
    extents: list[tuple[float, float, float, float] | None]  # lon/lat bounds of each site's reached vertices
    edges: list[Any]  # rows: edge_id, source, target, cost, reverse_cost (s; -1 closed), wkb (lon/lat)


async def reach(engine: Any, network: Network, mode: Mode, sites: np.ndarray, budget_s: float,
                max_snap_m: float = 1000.0) -> Reach:
    """Travel times to each site from the vertices that reach it within ``budget_s`` (pgRouting
    ``pgr_drivingDistance`` on the reversed network from the ends of each site's edge)."""
    sites = np.asarray(sites, dtype=float).reshape(-1, 2)
    async with _raw(engine) as conn:
        await _can_route(conn, mode)
        s = await snap(conn, network, mode, sites, max_snap_m)
        nv, nc = _entries(s)
        off = s.distance_m / (network.speeds.offroad_kmh / 3.6)
        starts = np.unique(nv[s.ok][np.isfinite(nc[s.ok])])
        dd: dict[int, dict[int, float]] = {}
        if len(starts):
            rows = await conn.fetch(
                "SELECT from_v, node, agg_cost FROM pgr_drivingDistance($1, $2::bigint[], $3, true)",
                edges_sql(network.network_id, mode, reverse=True), starts.tolist(), float(budget_s))
            for r in rows:
                dd.setdefault(r["from_v"], {})[r["node"]] = r["agg_cost"]
        to_site: list[dict[int, float]] = []
        for k in range(len(sites)):
            best: dict[int, float] = {}
            if s.ok[k]:
                for b in range(2):
                    if not np.isfinite(nc[k, b]):
                        continue
                    base = nc[k, b] + off[k]
                    for v, c in dd.get(int(nv[k, b]), {}).items():
                        t = base + c
                        if t <= budget_s and t < best.get(v, np.inf):
                            best[v] = t
            to_site.append(best)
        reached = sorted({v for b in to_site for v in b})
        pos = {r["vertex_id"]: (r["x"], r["y"]) for r in await conn.fetch(
            "SELECT vertex_id, ST_X(geom) AS x, ST_Y(geom) AS y FROM road_vertex WHERE network_id = $1 AND "
            "vertex_id = ANY($2::bigint[])", network.network_id, reached)}
        extents: list[tuple[float, float, float, float] | None] = []
        for k, best in enumerate(to_site):
            xy = np.array([pos[v] for v in best if v in pos] + ([sites[k].tolist()] if s.ok[k] else []))
            extents.append(None if not len(xy) else (*xy.min(axis=0), *xy.max(axis=0)))
        # the usable edges around the reached vertices (a cell's nearest road may be one that does not reach)
        grow = max_snap_m / 111_000.0 * 2.0  # degrees; generous at any latitude the service handles
        boxes = [e for e in extents if e is not None]
        edges: list[Any] = []
        if boxes:
            x0, y0 = min(b[0] for b in boxes) - grow, min(b[1] for b in boxes) - grow
            x1, y1 = max(b[2] for b in boxes) + grow, max(b[3] for b in boxes) + grow
            edges = list(await conn.fetch(
                f"SELECT edge_id, source, target, {_costs(mode)}, ST_AsBinary(geom) AS wkb "
                f"FROM road_edge WHERE network_id = $1 AND {_usable(mode)} AND "
                "geom && ST_MakeEnvelope($2, $3, $4, $5, 4326)",
                network.network_id, x0, y0, x1, y1))
    return Reach(s, to_site, extents, edges)
