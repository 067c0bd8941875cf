"""Data inputs of processes: inline GeoJSON or tables, or references to our own collections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import shapely
from pydantic import BaseModel, ConfigDict, Field

from app.analysis.spatial import AnalysisError


class InlineFeature(BaseModel):
    model_config = ConfigDict(extra="allow", title="InlineFeature", strict=True)
    type: Literal["Feature"]
    id: str | int | None = None
    geometry: dict[str, Any] | None
    properties: dict[str, Any] | None = None


class InlineFeatures(BaseModel):
    """A GeoJSON FeatureCollection given inline (coordinates in CRS84 longitude/latitude)."""

    model_config = ConfigDict(extra="allow", title="InlineFeatureCollection", strict=True)
    type: Literal["FeatureCollection"]
    features: list[InlineFeature]


class CollectionRef(BaseModel):
    """A reference to one of this service's collections, e.g. ``/collections/villages/items?filter=...``.

    Query parameters of the items request apply (filter, bbox, datetime, property equality); the same
    access rules as for reading the collection apply. Links to other hosts are refused."""

    model_config = ConfigDict(extra="forbid", title="CollectionReference", strict=True)
    href: str = Field(min_length=1, max_length=4096, examples=["/collections/village-poverty/items"])


TableRow = dict[str, Any]
DataInput = Annotated[
    InlineFeatures | CollectionRef | list[TableRow],
    Field(description="Inline GeoJSON FeatureCollection, a table (list of objects with an 'id'), or {'href': ...} "
          "to a collection of this service."),
]


@dataclass
class Units:
    """Resolved features: ids, shapely geometries (None for tables) and properties."""

    name: str
    ids: list[str]
    geoms: np.ndarray | None
    props: list[dict[str, Any]]
    source: str  # "inline", "table" or the href

    def __len__(self) -> int:
        return len(self.ids)

    # Units travel to the analysis process pickled. The properties go as one JSON text (orjson) and the
    # geometries as WKB: pickling 25,000 dicts and shapely objects one by one costs ten times more.
    def __getstate__(self) -> dict[str, Any]:
        import orjson

        try:
            props = orjson.dumps(self.props, default=str, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:  # integers beyond 64 bits, e.g. 1e300 back from jsonb (numeric) as 10**300: as floats
            props = orjson.dumps(big_ints_as_floats(self.props), default=str, option=orjson.OPT_SERIALIZE_NUMPY)
        return {"name": self.name, "ids": self.ids, "source": self.source,
                "geoms": None if self.geoms is None else shapely.to_wkb(self.geoms), "props": props}

    def __setstate__(self, state: dict[str, Any]) -> None:
        import orjson

        self.name, self.ids, self.source = state["name"], state["ids"], state["source"]
        self.props = orjson.loads(state["props"])
        self.geoms = None if state["geoms"] is None else np.asarray(shapely.from_wkb(state["geoms"]), dtype=object)

    def column(self, prop: str) -> np.ndarray:
        """The property as floats; numbers, or strings that read as numbers (booleans are not numbers)."""
        out = np.empty(len(self.ids))
        for i, p in enumerate(self.props):
            v = _number(p.get(prop))
            if v is None:
                raise AnalysisError(f"{self.name}: feature {self.ids[i]!r} has no numeric '{prop}'.")
            out[i] = v
        return out

    def text(self, prop: str) -> list[str | None]:
        return [None if p.get(prop) is None else str(p.get(prop)) for p in self.props]

    def need_geometry(self) -> np.ndarray:
        if self.geoms is None:
            raise AnalysisError(f"{self.name}: features with geometries are needed (or give a cost matrix).")
        return self.geoms

    def subset(self, keep: np.ndarray) -> Units:
        idx = np.flatnonzero(keep)
        return Units(self.name, [self.ids[i] for i in idx], None if self.geoms is None else self.geoms[idx],
                     [self.props[i] for i in idx], self.source)


@dataclass
class NetworkCosts(Units):
    """Travel times on a road network from one input's features to another's (minutes; NaN: unreachable), computed
    in the database before the analysis (``app.services.roads``) and carried to it with the data. It has no features
    of its own; ``summary`` says which network, mode and speeds were used and what was not snapped."""

    minutes: np.ndarray | None = None
    summary: dict[str, Any] | None = None
    snap_m: tuple[np.ndarray, np.ndarray] | None = None  # off-road metres of the origins, of the destinations (NaN:
    # not snapped)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "minutes": self.minutes, "summary": self.summary, "snap_m": self.snap_m}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.minutes, self.summary, self.snap_m = state["minutes"], state["summary"], state["snap_m"]


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def units_from_geojson(name: str, features: list[dict[str, Any]], source: str) -> Units:
    ids: list[str] = []
    geoms = []
    props = []
    for i, f in enumerate(features):
        g = f.get("geometry")
        if g is None:
            raise AnalysisError(f"{name}: feature {i} has no geometry.")
        try:
            geom = shapely.from_geojson(_dumps(g))
        except Exception:
            raise AnalysisError(f"{name}: feature {i} has an invalid geometry.") from None
        if geom.is_empty:
            raise AnalysisError(f"{name}: feature {i} has an empty geometry.")
        x0, y0, x1, y1 = geom.bounds
        if x0 < -180 or x1 > 180 or y0 < -90 or y1 > 90:
            raise AnalysisError(f"{name}: feature {i} has coordinates outside longitude/latitude ranges (CRS84).")
        fid = f.get("id")
        p = dict(f.get("properties") or {})
        ids.append(str(fid if fid is not None else p.get("id", i)))
        geoms.append(geom)
        props.append(p)
    _unique(name, ids)
    return Units(name, ids, np.array(geoms, dtype=object), props, source)


def units_from_table(name: str, rows: list[dict[str, Any]]) -> Units:
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise AnalysisError(f"{name}: row {i} is not an object.")
    ids = [str(r.get("id", i)) for i, r in enumerate(rows)]
    _unique(name, ids)
    return Units(name, ids, None, [dict(r) for r in rows], "table")


def _unique(name: str, ids: list[str]) -> None:
    if len(set(ids)) != len(ids):
        raise AnalysisError(f"{name}: feature ids are not unique.")


def big_ints_as_floats(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        try:
            return float(value)
        except OverflowError:  # beyond the float range: a number the analyses refuse as not finite
            return float("inf") if value > 0 else float("-inf")
    if isinstance(value, dict):
        return {k: big_ints_as_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [big_ints_as_floats(v) for v in value]
    return value


def _dumps(obj: Any) -> str:
    import orjson

    return orjson.dumps(obj).decode()
