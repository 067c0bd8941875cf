"""Geometries of an imported batch: parse, bring to WGS84, check, optionally repair, fit the target type.

Vectorised with shapely 2 and pyproj over the whole batch. The result is EWKB hex (SRID 4326) per row, which
the staging table receives as text and PostGIS reads with a plain ``::geometry`` cast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely

from app.ingest.coords import SourceCrs
from app.ingest.readers import Batch

_POLYGONAL = {"Polygon", "MultiPolygon"}


@dataclass
class GeometryOutcome:
    ewkb: list[str | None]
    errors: list[tuple[int, str, str | None, str]] = field(default_factory=list)  # (row index, field, value, why)
    repaired: int = 0
    reduced_to_point: int = 0


def _float(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, int | float):
        return float(v)
    s = str(v).strip().replace("，", ".")
    if not s:
        return None
    return float(s)


def batch_geometries(batch: Batch, *, x_idx: int | None, y_idx: int | None, wkt_idx: int | None,
                     src: SourceCrs | None, target_type: str, required: bool, repair: bool,
                     field_name: str) -> GeometryOutcome:
    n = len(batch.rows)
    errors: list[tuple[int, str, str | None, str]] = []
    geoms = np.full(n, None, dtype=object)
    if x_idx is not None and y_idx is not None:
        xs = np.full(n, np.nan)
        ys = np.full(n, np.nan)
        for i, row in enumerate(batch.rows):
            try:
                x, y = _float(row[x_idx]), _float(row[y_idx])
            except ValueError:
                errors.append((i, field_name, f"{row[x_idx]}, {row[y_idx]}", "coordinates are not numbers"))
                continue
            if x is not None and y is not None:
                xs[i], ys[i] = x, y
            elif (x is None) != (y is None):
                errors.append((i, field_name, f"{row[x_idx]}, {row[y_idx]}", "only one of the two coordinates"))
        have = ~np.isnan(xs)
        if src is not None and have.any():
            xs[have], ys[have] = src.to_wgs84(xs[have], ys[have])
        geoms[have] = shapely.points(xs[have], ys[have])
    elif wkt_idx is not None or batch.wkb is not None:
        if wkt_idx is not None:
            raw = np.array([None if r[wkt_idx] in (None, "") else str(r[wkt_idx]) for r in batch.rows], dtype=object)
            parsed = shapely.from_wkt(raw, on_invalid="ignore")
        else:
            raw = np.array(batch.wkb, dtype=object)
            parsed = shapely.from_wkb(raw, on_invalid="ignore")
        for i in np.flatnonzero((raw != None) & shapely.is_missing(parsed)):  # noqa: E711 (numpy elementwise)
            errors.append((int(i), field_name, _short(raw[i]), "not a readable geometry"))
        geoms = parsed
        have = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
        if src is not None and not src.is_wgs84 and have.any():
            geoms[have] = shapely.transform(geoms[have], lambda xy: np.column_stack(src.to_wgs84(xy[:, 0], xy[:, 1])))
    out = GeometryOutcome([None] * n, errors)
    bad_rows = {e[0] for e in errors}
    for i in range(n):
        g = geoms[i]
        if i in bad_rows:
            continue
        if g is None or g.is_empty:
            if required:
                out.errors.append((i, field_name, None, "required: no geometry"))
            continue
        coords = shapely.get_coordinates(g)
        if not np.isfinite(coords).all() or (np.abs(coords[:, 0]) > 180).any() or (np.abs(coords[:, 1]) > 90).any():
            out.errors.append((i, field_name, _short(g.wkt), "coordinates outside longitude/latitude range after "
                               "conversion to WGS84: check the source CRS and the x/y columns"))
            continue
        if not g.is_valid:
            if not repair:
                out.errors.append((i, field_name, _short(g.wkt), f"invalid geometry ({shapely.is_valid_reason(g)}); "
                                   "pass --repair to fix it with make_valid"))
                continue
            g = shapely.make_valid(g)
            out.repaired += 1
        g, why = _fit(g, target_type)
        if g is None:
            out.errors.append((i, field_name, _short(geoms[i].wkt), why))
            continue
        if why == "reduced":
            out.reduced_to_point += 1
        out.ewkb[i] = shapely.to_wkb(shapely.set_srid(g, 4326), hex=True, include_srid=True)
    return out


def _fit(g: Any, target: str) -> tuple[Any, str]:
    kind = g.geom_type
    if target == "POINT":
        if kind == "Point":
            return g, ""
        if kind == "MultiPoint" and len(g.geoms) == 1:
            return g.geoms[0], ""
        return shapely.point_on_surface(g), "reduced"
    if target == "MULTIPOLYGON":
        if kind == "GeometryCollection":  # from make_valid: keep the polygonal parts
            parts = [p for p in g.geoms if p.geom_type in _POLYGONAL]
            g = shapely.union_all(parts) if parts else None
            if g is None:
                return None, "no polygonal part"
            kind = g.geom_type
        if kind == "Polygon":
            return shapely.MultiPolygon([g]), ""
        if kind == "MultiPolygon":
            return g, ""
        return None, f"a {kind} where a (multi)polygon is expected"
    return g, ""


def _short(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 80 else s[:77] + "…"
