"""Tile matrix sets (OGC Two Dimensional Tile Matrix Set 2.0) for OGC API - Tiles.

The definitions, tile bounds and TMS documents come from morecantile (the library tipg and titiler use), so the
numbers are the registered ones rather than ours:

* ``WebMercatorQuad`` (EPSG:3857), what web maps (MapLibre, OpenLayers, Leaflet plug-ins) ask for;
* ``WorldCRS84Quad`` (CRS84, two tiles at level 0);
* ``CGCS2000Quad``: the same pyramid on China's geodetic datum CGCS2000 (EPSG:4490, latitude first by its EPSG
  definition), the grid of Chinese government base maps (Tianditu's ``c`` matrix set starts one level down:
  its level n is our level n - 1).

Features are stored in lon/lat, and a tile of any of these three sets is a lon/lat rectangle (Mercator keeps
meridians and parallels straight), so a tile's features are found with the same bbox filter the features API uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import morecantile
from pyproj import CRS

# Mercator's y is finite only below ±85.0511°; WebMercatorQuad covers exactly that band
_MERCATOR_LAT = 85.0511287798066


@dataclass(frozen=True, eq=False)
class TileGrid:
    id: str
    title: str
    tms: morecantile.TileMatrixSet
    srid: int  # PostGIS SRID of the tile coordinates (x/y = lon/lat for the geographic ones)
    geographic: bool

    @property
    def crs_uri(self) -> str:
        return str(self.tms.crs.root) if hasattr(self.tms.crs, "root") else str(self.tms.crs)

    @property
    def uri(self) -> str | None:
        return self.tms.uri

    def matrix_size(self, z: int) -> tuple[int, int]:
        m = self.tms.matrix(z)
        return m.matrixWidth, m.matrixHeight

    def bounds(self, z: int, row: int, col: int) -> tuple[float, float, float, float]:
        """The tile's corners in the grid's CRS, x/y order (easting/northing, or lon/lat)."""
        b = self.tms.xy_bounds(morecantile.Tile(col, row, z))
        return b.left, b.bottom, b.right, b.top

    def lonlat_bounds(self, z: int, row: int, col: int, margin: float = 0.0) -> tuple[float, float, float, float]:
        """The tile widened by ``margin`` (a fraction of its size) on every side, as a lon/lat box."""
        x0, y0, x1, y1 = self.bounds(z, row, col)
        dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
        x0, y0, x1, y1 = x0 - dx, y0 - dy, x1 + dx, y1 + dy
        if not self.geographic:
            (x0, y0), (x1, y1) = self.tms.lnglat(x0, y0, truncate=False), self.tms.lnglat(x1, y1, truncate=False)
            # the top and bottom rows reach the poles: Mercator's edge stands for everything beyond it
            if row == 0:
                y1 = 90.0
            if row == self.matrix_size(z)[1] - 1:
                y0 = -90.0
        return max(-180.0, x0), max(-90.0, y0), min(180.0, x1), min(90.0, y1)

    def degrees_per_unit(self, z: int, row: int, col: int, extent: int) -> float:
        """The smaller side of the tile in degrees over the tile grid: one grid unit, for simplification."""
        x0, y0, x1, y1 = self.lonlat_bounds(z, row, col)
        return max(min(x1 - x0, y1 - y0), 0.0) / extent

    def limits(self, bbox: tuple[float, float, float, float] | None, max_zoom: int) -> list[dict[str, Any]]:
        """tileMatrixSetLimits: the tiles that hold data of a lon/lat extent, per tile matrix up to ``max_zoom``
        (kept per extent: every tile request checks them, and morecantile takes ~0.1 ms per corner)."""
        return _limits(self, bbox, max_zoom)

    def _compute_limits(self, bbox: tuple[float, float, float, float] | None, max_zoom: int) -> list[dict[str, Any]]:
        out = []
        for z in range(min(max_zoom, self.tms.maxzoom) + 1):
            width, height = self.matrix_size(z)
            if bbox is None:
                rows, cols = (0, height - 1), (0, width - 1)
            else:
                rows, cols = self._span(bbox, z)
            out.append({"tileMatrix": str(z), "minTileRow": rows[0], "maxTileRow": rows[1],
                        "minTileCol": cols[0], "maxTileCol": cols[1]})
        return out

    def _span(self, bbox: tuple[float, float, float, float], z: int) -> tuple[tuple[int, int], tuple[int, int]]:
        minx, miny, maxx, maxy = bbox
        if not self.geographic:
            miny, maxy = max(miny, -_MERCATOR_LAT), min(maxy, _MERCATOR_LAT)
        width, height = self.matrix_size(z)
        ul = self.tms.tile(minx, maxy, z, truncate=True)
        lr = self.tms.tile(maxx, miny, z, truncate=True)
        clamp = lambda v, n: min(max(v, 0), n - 1)  # noqa: E731
        return ((clamp(ul.y, height), clamp(lr.y, height)), (clamp(ul.x, width), clamp(lr.x, width)))

    def within(self, limits: list[dict[str, Any]], z: int, row: int, col: int) -> bool:
        if z >= len(limits):
            return False
        lim = limits[z]
        return lim["minTileRow"] <= row <= lim["maxTileRow"] and lim["minTileCol"] <= col <= lim["maxTileCol"]

    def document(self) -> dict[str, Any]:
        """The tile matrix set in the TMS 2.0 JSON encoding."""
        return self.tms.model_dump(exclude_none=True, mode="json")

    def center(self, bbox: tuple[float, float, float, float] | None) -> tuple[float, float]:
        if bbox is None:
            return 0.0, 0.0
        return (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2


@lru_cache(maxsize=4096)
def _limits(grid: TileGrid, bbox: tuple[float, float, float, float] | None, max_zoom: int) -> list[dict[str, Any]]:
    return grid._compute_limits(bbox, max_zoom)


def _zoom_for(bbox: tuple[float, float, float, float], grid: TileGrid) -> int:
    """A zoom at which the extent spans about one or two tiles (the TileJSON ``center``)."""
    span = max(bbox[2] - bbox[0], (bbox[3] - bbox[1]) * 2, 1e-6)
    return max(0, min(18, int(math.floor(math.log2(360.0 / span)))))


@lru_cache(maxsize=1)
def grids() -> dict[str, TileGrid]:
    cgcs = morecantile.TileMatrixSet.custom(
        [-180.0, -90.0, 180.0, 90.0], CRS.from_epsg(4490), matrix_scale=[2, 1], minzoom=0, maxzoom=23,
        id="CGCS2000Quad", title="CGCS2000 for the World (EPSG:4490, China's geodetic datum)",
        ordered_axes=["Lat", "Lon"])
    cgcs = cgcs.model_copy(update={"orderedAxes": ["Lat", "Lon"]})  # morecantile uses the axes but does not keep them
    return {
        "WebMercatorQuad": TileGrid("WebMercatorQuad", "Google Maps Compatible for the World",
                                    morecantile.tms.get("WebMercatorQuad"), 3857, False),
        "WorldCRS84Quad": TileGrid("WorldCRS84Quad", "CRS84 for the World", morecantile.tms.get("WorldCRS84Quad"),
                                   4326, True),
        "CGCS2000Quad": TileGrid("CGCS2000Quad", cgcs.title or "CGCS2000Quad", cgcs, 4490, True),
    }


def center_zoom(grid: TileGrid, bbox: tuple[float, float, float, float] | None) -> int:
    return 0 if bbox is None else _zoom_for(bbox, grid)
