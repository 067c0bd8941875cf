"""Isochrones: the area from which a site is reached within a travel time (docs/methodology.md#isochrones). Pure:
the travel times to the site from the network's vertices come from the database (``app.services.roads.reach``).

The area is drawn the way travel-time matrices measure a point: a grid of cells (``cell_m``) over the reach of the
site; each cell's centre is snapped to its nearest usable road (within the maximum snap distance), walks there
off-road, travels along the edge to one of its ends — or straight to the site on the site's own edge — and on from
the vertex as the network says. The cells within the time are merged into the polygon. So a point's membership
agrees with its travel time in a matrix, up to the cell size near the boundary — the way raster tools such as
WHO's AccessMod draw catchments, with the network's own times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from app.analysis.spatial import AnalysisError

MAX_CELLS = 4_000_000  # per site: beyond it the cell size must grow


@dataclass
class EdgeSet:
    """Usable edges in a metric CRS: ends, times along (cost, source → target) and against (reverse_cost) the line
    in seconds (-1: closed that way), the lines and their index."""

    edge_id: np.ndarray
    source: np.ndarray
    target: np.ndarray
    cost: np.ndarray
    reverse_cost: np.ndarray
    lines: np.ndarray  # shapely LineStrings, metric

    def __post_init__(self) -> None:
        self.tree = shapely.STRtree(self.lines)


@dataclass
class SiteOnNetwork:
    edge_id: int
    fraction: float  # along its edge, from the source
    offroad_s: float


def share(fraction: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """The time of a share of an edge in one direction: inf where that direction is closed (cost -1), except for
    no share at all (a point on the vertex itself is there whatever the direction)."""
    return np.where(fraction <= 0, 0.0, np.where(cost >= 0, fraction * cost, np.inf))


def along(f_from: np.ndarray, f_to: np.ndarray, cost: np.ndarray, reverse_cost: np.ndarray) -> np.ndarray:
    """The time straight along one edge from fraction ``f_from`` to ``f_to`` (with the line, or against it)."""
    return np.minimum(np.where(f_to >= f_from, share(f_to - f_from, cost), np.inf),
                      np.where(f_to <= f_from, share(f_from - f_to, reverse_cost), np.inf))


def time_to_site(es: EdgeSet, to_site: dict[int, float], site: SiteOnNetwork, xy: np.ndarray, offroad_mps: float,
                 max_snap_m: float) -> np.ndarray:
    """Seconds from each point (metric x, y) to the site; inf where it is not reached (or not snapped)."""
    out = np.full(len(xy), np.inf)
    if not len(xy) or not len(es.edge_id):
        return out
    ei, f, dist = _snap(es, xy, max_snap_m)
    ok = ei >= 0
    out[ok] = _times(es, _vertex_costs(es, to_site), site, ei[ok], f[ok], dist[ok], offroad_mps)
    return out


def _snap(es: EdgeSet, xy: np.ndarray, max_snap_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each point's nearest edge (-1: none within ``max_snap_m``), fraction along it, distance."""
    n = len(xy)
    ei, f, dist = np.full(n, -1, dtype=np.int64), np.zeros(n), np.zeros(n)
    pts = shapely.points(xy)
    (pi, e), d = es.tree.query_nearest(pts, max_distance=max_snap_m, return_distance=True, all_matches=False)
    if len(pi):
        ei[pi], dist[pi] = e, d
        f[pi] = shapely.line_locate_point(es.lines[e], pts[pi], normalized=True)
    return ei, f, dist


def _vertex_costs(es: EdgeSet, to_site: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """The time to the site from each edge's source and target (inf: not within the budget)."""
    cs = np.array([to_site.get(int(v), np.inf) for v in es.source])
    ct = np.array([to_site.get(int(v), np.inf) for v in es.target])
    return cs, ct


def _times(es: EdgeSet, vc: tuple[np.ndarray, np.ndarray], site: SiteOnNetwork, ei: np.ndarray, f: np.ndarray,
           dist: np.ndarray, offroad_mps: float) -> np.ndarray:
    c, rc = es.cost[ei], es.reverse_cost[ei]
    best = np.minimum(share(1 - f, c) + vc[1][ei], share(f, rc) + vc[0][ei])
    own = es.edge_id[ei] == site.edge_id
    if own.any():
        direct = along(f[own], np.full(int(own.sum()), site.fraction), c[own], rc[own]) + site.offroad_s
        best[own] = np.minimum(best[own], direct)
    return best + dist / offroad_mps


@dataclass
class Grid:
    """Cells over an extent with their centres snapped once to the nearest usable road (shared by every site)."""

    x0: float
    y0: float
    cell_m: float
    nx: int
    ny: int
    edge: np.ndarray  # per cell, row-major from (x0, y0); -1: no road within the snap distance
    fraction: np.ndarray
    dist: np.ndarray


def snap_grid(es: EdgeSet, extent: tuple[float, float, float, float], cell_m: float, max_snap_m: float) -> Grid:
    x0, y0, x1, y1 = extent
    x0, y0, x1, y1 = x0 - max_snap_m, y0 - max_snap_m, x1 + max_snap_m, y1 + max_snap_m
    nx_, ny_ = max(1, int(np.ceil((x1 - x0) / cell_m))), max(1, int(np.ceil((y1 - y0) / cell_m)))
    if nx_ * ny_ > MAX_CELLS:
        raise AnalysisError(f"the isochrones would need {nx_ * ny_:,} cells of {cell_m:g} m; give a larger cell_m "
                            f"(at most {MAX_CELLS:,} cells)")
    gx, gy = np.meshgrid(x0 + (np.arange(nx_) + 0.5) * cell_m, y0 + (np.arange(ny_) + 0.5) * cell_m)
    ei, f, dist = _snap(es, np.column_stack([gx.ravel(), gy.ravel()]), max_snap_m)
    return Grid(x0, y0, cell_m, nx_, ny_, ei, f, dist)


def isochrones(es: EdgeSet, grid: Grid, to_site: dict[int, float], site: SiteOnNetwork,
               extent: tuple[float, float, float, float], budgets_s: list[float], offroad_mps: float,
               max_snap_m: float) -> list[shapely.Geometry]:
    """One polygon (metric) per budget: the cells of the grid around ``extent`` (the site's reached vertices,
    grown by the snap distance) whose centres reach the site within it."""
    c0 = max(0, int((extent[0] - max_snap_m - grid.x0) // grid.cell_m))
    c1 = min(grid.nx, int(np.ceil((extent[2] + max_snap_m - grid.x0) / grid.cell_m)) + 1)
    r0 = max(0, int((extent[1] - max_snap_m - grid.y0) // grid.cell_m))
    r1 = min(grid.ny, int(np.ceil((extent[3] + max_snap_m - grid.y0) / grid.cell_m)) + 1)
    idx = (np.arange(r0, r1)[:, None] * grid.nx + np.arange(c0, c1)[None, :]).ravel()
    t = np.full(len(idx), np.inf)
    ei = grid.edge[idx]
    ok = ei >= 0
    t[ok] = _times(es, _vertex_costs(es, to_site), site, ei[ok], grid.fraction[idx][ok], grid.dist[idx][ok],
                   offroad_mps)
    t = t.reshape(r1 - r0, c1 - c0)
    x0, y0 = grid.x0 + c0 * grid.cell_m, grid.y0 + r0 * grid.cell_m
    return [_cells_polygon(t <= b, x0, y0, grid.cell_m) for b in budgets_s]


def _cells_polygon(mask: np.ndarray, x0: float, y0: float, cell_m: float) -> shapely.Geometry:
    """The union of the cells set in ``mask`` (rows of y): runs along each row, runs equal in consecutive rows
    merged into one box, then the boxes unioned."""
    boxes: list[tuple[int, int, int, int]] = []  # (start column, end column, first row, last row + 1)
    open_: dict[tuple[int, int], int] = {}  # run → index in boxes, for the row before
    for r in range(mask.shape[0]):
        row = np.r_[False, mask[r], False].astype(np.int8)
        d = np.diff(row)
        runs = list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))
        now: dict[tuple[int, int], int] = {}
        for run in runs:
            k = open_.get(run)
            if k is not None:
                a, b, top, _ = boxes[k]
                boxes[k] = (a, b, top, r + 1)
            else:
                k = len(boxes)
                boxes.append((run[0], run[1], r, r + 1))
            now[run] = k
        open_ = now
    if not boxes:
        return shapely.Polygon()
    b = np.array(boxes, dtype=float)
    return shapely.union_all(shapely.box(x0 + b[:, 0] * cell_m, y0 + b[:, 2] * cell_m, x0 + b[:, 1] * cell_m,
                                         y0 + b[:, 3] * cell_m))
