"""Geometry helpers shared by the analyses: metric coordinates, great-circle costs and spatial weights."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import shapely
from pyproj import CRS, Transformer
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info
from pyproj.exceptions import CRSError

EARTH_RADIUS_KM = 6371.0088  # IUGG mean Earth radius


class AnalysisError(ValueError):
    """Input that an analysis cannot work with (reported to the client as a 400)."""


def is_polygonal(geoms: np.ndarray) -> bool:
    """Every geometry is a Polygon or MultiPolygon."""
    return bool(np.isin(shapely.get_type_id(geoms), (3, 6)).all())


def representative_lonlat(geoms: np.ndarray) -> np.ndarray:
    """(n, 2) lon/lat of each geometry: points as they are, other shapes by a point on the surface."""
    if len(geoms) == 0:
        return np.zeros((0, 2))
    if shapely.is_empty(geoms).any() or shapely.is_missing(geoms).any():
        raise AnalysisError("Every feature needs a non-empty geometry.")
    pts = np.where(shapely.get_type_id(geoms) == 0, geoms, shapely.point_on_surface(geoms))
    return shapely.get_coordinates(pts)


def utm_crs(lonlat: np.ndarray) -> CRS:
    """The UTM zone (WGS 84) around the centre of the points: the default metric CRS of an analysis."""
    if len(lonlat) == 0:
        raise AnalysisError("There are no features to analyse.")
    lon, lat = float(np.mean(lonlat[:, 0])), float(np.mean(lonlat[:, 1]))
    info = query_utm_crs_info(datum_name="WGS 84", area_of_interest=AreaOfInterest(lon, lat, lon, lat))
    if not info:
        raise AnalysisError("No UTM zone covers the features; give an analysis CRS.")
    return CRS.from_epsg(int(info[0].code))


def metric_crs(lonlat: np.ndarray, epsg: int | None) -> CRS:
    if epsg is None:
        return utm_crs(lonlat)
    try:
        crs = CRS.from_epsg(epsg)
    except CRSError:
        raise AnalysisError(f"EPSG:{epsg} is not a coordinate reference system PROJ knows.") from None
    if not crs.is_projected or crs.axis_info[0].unit_name not in ("metre", "meter"):
        raise AnalysisError(f"EPSG:{epsg} is not a projected CRS in metres.")
    return crs


def to_metric(lonlat: np.ndarray, crs: CRS) -> np.ndarray:
    tr = Transformer.from_crs(4326, crs, always_xy=True)
    x, y = tr.transform(lonlat[:, 0], lonlat[:, 1])
    return np.column_stack([x, y])


def geoms_to_metric(geoms: np.ndarray, crs: CRS) -> np.ndarray:
    tr = Transformer.from_crs(4326, crs, always_xy=True)
    return shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def great_circle_km(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Haversine distances (km) between every lon/lat of ``a`` (n, 2) and of ``b`` (m, 2): an (n, m) matrix."""
    la1, la2 = np.radians(a[:, 1])[:, None], np.radians(b[:, 1])[None, :]
    dlon = np.radians(b[:, 0])[None, :] - np.radians(a[:, 0])[:, None]
    h = np.sin((la2 - la1) / 2) ** 2 + np.cos(la1) * np.cos(la2) * np.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def unit_sphere(lonlat: np.ndarray) -> np.ndarray:
    """3-D points on the unit sphere: chord length is monotone in great-circle distance (KD-tree queries)."""
    lon, lat = np.radians(lonlat[:, 0]), np.radians(lonlat[:, 1])
    return np.column_stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])


def chord_to_km(chord: np.ndarray) -> np.ndarray:
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.clip(np.asarray(chord) / 2, 0.0, 1.0))


def km_to_chord(km: Any) -> Any:
    """Chord length on the unit sphere of a great-circle distance (scalar or array)."""
    if np.ndim(km) == 0:
        return 2 * math.sin(min(float(km) / EARTH_RADIUS_KM, math.pi) / 2)
    return 2 * np.sin(np.minimum(np.asarray(km, dtype=float) / EARTH_RADIUS_KM, math.pi) / 2)


@dataclass(frozen=True)
class WeightsSpec:
    type: Literal["queen", "rook", "knn", "distance"] | None = None  # None: queen for polygons, knn for points
    k: int = 8
    threshold_km: float | None = None


@dataclass
class BuiltWeights:
    w: object  # libpysal.weights.W
    type: str
    islands_attached: int
    mean_neighbours: float


def build_weights(geoms: np.ndarray, xy: np.ndarray, spec: WeightsSpec) -> BuiltWeights:
    """Spatial weights as docs/methodology.md#weights prescribes (libpysal): contiguity for polygons, KNN or a distance
    band (binary) on metric coordinates for points. Islands are attached to their nearest neighbour."""
    from libpysal.weights import KNN, DistanceBand, Queen, Rook
    from libpysal.weights.util import attach_islands

    n = len(xy)
    if n < 3:
        raise AnalysisError("At least 3 features are needed for spatial weights.")
    polygons = is_polygonal(geoms)
    kind = spec.type or ("queen" if polygons else "knn")
    ids = list(range(n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # libpysal warns about islands and disconnected components
        if kind in ("queen", "rook"):
            if not polygons:
                raise AnalysisError(f"{kind} contiguity needs polygon features; use knn or distance weights.")
            cls = Queen if kind == "queen" else Rook
            w = cls.from_iterable(list(geoms), ids=ids)
        elif kind == "knn":
            if not 1 <= spec.k < n:
                raise AnalysisError(f"k must be between 1 and {n - 1} for {n} features.")
            w = KNN.from_array(xy, k=spec.k, ids=ids)
        elif kind == "distance":
            if spec.threshold_km is None or spec.threshold_km <= 0:
                raise AnalysisError("Distance weights need threshold_km > 0.")
            w = DistanceBand.from_array(xy, threshold=spec.threshold_km * 1000.0, binary=True, ids=ids,
                                        silence_warnings=True)
        else:
            raise AnalysisError(f"Unknown weights type {kind!r}.")
        islands = len(w.islands)
        if islands:
            w = attach_islands(w, KNN.from_array(xy, k=1, ids=ids))
    return BuiltWeights(w, kind, islands, float(w.mean_neighbors))


def geodesic_area_km2(geoms: np.ndarray) -> np.ndarray:
    """Area (km²) of lon/lat polygons on the WGS 84 ellipsoid (pyproj.Geod)."""
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    return np.array([abs(geod.geometry_area_perimeter(g)[0]) / 1e6 for g in geoms])
