"""Road files read into the edges of a routable network (docs/methodology.md#road-networks).

Two kinds of source:

* an OpenStreetMap extract (``.osm.pbf``, ``.osm``), read with pyosmium: the ``highway`` ways, split into edges at
  every node another way shares (OSM's own topology: roads meet where they share a node);
* any line layer GDAL reads (GeoPackage, Shapefile, GeoJSON, FlatGeobuf), with a mapping of its fields: lines are
  split where another line shares a vertex (crossings without a shared vertex — bridges — stay apart), and
  endpoints closer than 1 cm are one vertex.

The topology is made here, at read time, from node ids or coordinates: that is what pgRouting's
``pgr_createTopology`` does with a tolerance, and that function is deprecated since pgRouting 3.8 and gone in 4.0,
so the network does not depend on it. pgRouting routes on the result (``app.services.roads``).

Speeds: each edge gets a motor speed (null: closed to motor traffic) and a walking speed (null: closed to
pedestrians) from its road class (:data:`DEFAULT_SPEEDS`, overridable per region), capped on unpaved surfaces; an
OSM ``maxspeed`` caps the motor speed, a line layer's speed field is taken as the travel speed itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import yaml

from app.errors import InvalidParameter
from app.ingest.coords import WGS84, SourceCrs, parse_source_crs

# Motor and walking speeds (km/h) per road class (OpenStreetMap's highway values; a line layer's classes are mapped
# to them). Motor speeds are the lower design speeds of the Chinese highway standard JTG B01-2014 for the grade a
# class usually is (expressway 80; class-1 60; class-2 40 … class-4 20) — travel on rural roads rarely reaches the
# upper design speed; walking is 5 km/h, the flat-ground speed of Tobler's hiking function (Tobler 1993). Sources
# and the override file in docs/methodology.md#road-networks.
DEFAULT_SPEEDS: dict[str, tuple[float | None, float | None]] = {
    "motorway": (80.0, None), "motorway_link": (40.0, None),
    "trunk": (60.0, 5.0), "trunk_link": (40.0, 5.0),
    "primary": (60.0, 5.0), "primary_link": (40.0, 5.0),
    "secondary": (40.0, 5.0), "secondary_link": (30.0, 5.0),
    "tertiary": (30.0, 5.0), "tertiary_link": (25.0, 5.0),
    "unclassified": (20.0, 5.0), "residential": (20.0, 5.0), "living_street": (10.0, 5.0),
    "service": (15.0, 5.0), "road": (20.0, 5.0), "track": (15.0, 5.0),
    "path": (None, 4.0), "footway": (None, 5.0), "pedestrian": (None, 5.0), "steps": (None, 2.0),
    "bridleway": (None, 4.0), "cycleway": (None, 5.0),
}
UNPAVED_MOTOR_KMH = 30.0  # the most a motor vehicle makes on an unpaved surface (our default; a setting)
OFFROAD_KMH = 4.0  # walking off the road, to and from the network (slower than on a road; a setting)
UNPAVED = frozenset({"unpaved", "gravel", "fine_gravel", "dirt", "earth", "ground", "sand", "mud", "grass",
                     "compacted", "pebblestone", "rock", "soil"})
ONEWAY_FORWARD = frozenset({"yes", "true", "1", "f", "ft"})  # OSM; Geofabrik shapefiles: F (= FT)
ONEWAY_BACKWARD = frozenset({"-1", "reverse", "t", "tf"})
ONEWAY_BOTH = frozenset({"", "no", "false", "0", "b"})
_GRID = 1e7  # vertex coordinates are matched at 1e-7 degrees (about 1 cm)


@dataclass(frozen=True)
class Speeds:
    """Speeds per road class (km/h; None: closed to that mode) and the cap on unpaved surfaces."""

    classes: dict[str, tuple[float | None, float | None]]
    unpaved_motor_kmh: float | None = UNPAVED_MOTOR_KMH
    offroad_kmh: float = OFFROAD_KMH  # walking from a point to the road it is snapped to

    @classmethod
    def default(cls) -> Speeds:
        return cls(dict(DEFAULT_SPEEDS))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Speeds:
        """``{"classes": {"primary": {"motor": 60, "walk": 5}, …}, "unpaved_motor_kmh": 30, "offroad_kmh": 4}`` as
        stored with a network (and written in a speeds file): the classes given replace the defaults of those
        classes."""
        if not isinstance(data, dict) or not set(data) <= {"classes", "unpaved_motor_kmh", "offroad_kmh"}:
            raise InvalidParameter("a speeds file has the members 'classes', 'unpaved_motor_kmh' and 'offroad_kmh'")
        classes = dict(DEFAULT_SPEEDS)
        for name, v in (data.get("classes") or {}).items():
            if not isinstance(v, dict) or not set(v) <= {"motor", "walk"}:
                raise InvalidParameter(f"speeds of {name!r}: give {{\"motor\": km/h or null, \"walk\": km/h or null}}")
            pair = tuple(_speed(v.get(k), f"{name}.{k}") for k in ("motor", "walk"))
            classes[str(name)] = (pair[0], pair[1])
        cap = data.get("unpaved_motor_kmh", UNPAVED_MOTOR_KMH)
        offroad = _speed(data.get("offroad_kmh", OFFROAD_KMH), "offroad_kmh")
        if offroad is None:
            raise InvalidParameter("offroad_kmh: a walking speed off the road is needed (km/h)")
        return cls(classes, _speed(cap, "unpaved_motor_kmh"), offroad)

    def to_json(self) -> dict[str, Any]:
        return {"classes": {k: {"motor": m, "walk": w} for k, (m, w) in sorted(self.classes.items())},
                "unpaved_motor_kmh": self.unpaved_motor_kmh, "offroad_kmh": self.offroad_kmh}


def _speed(v: Any, what: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 200:
        raise InvalidParameter(f"speed {what}: a number of km/h in (0, 200], or null (closed), not {v!r}")
    return float(v)


@dataclass
class Edges:
    """The edges read from a file: vertex ids at both ends, the line (lon/lat), attributes."""

    source: list[int] = field(default_factory=list)
    target: list[int] = field(default_factory=list)
    lines: list[np.ndarray] = field(default_factory=list)
    road_class: list[str] = field(default_factory=list)
    name: list[str | None] = field(default_factory=list)
    oneway: list[int] = field(default_factory=list)
    surface: list[str | None] = field(default_factory=list)
    speed: list[float] = field(default_factory=list)  # the file's speed (NaN: none)
    speed_is_cap: bool = True  # OSM maxspeed caps the class speed; a layer's speed field is the speed
    skipped: dict[str, int] = field(default_factory=dict)  # why features were not made edges, with counts

    def add(self, s: int, t: int, line: np.ndarray, cls: str, name: str | None, oneway: int, surface: str | None,
            speed: float) -> None:
        if s == t and len(line) < 3:
            return  # a loop on one point: no way through
        self.source.append(s)
        self.target.append(t)
        self.lines.append(line)
        self.road_class.append(cls)
        self.name.append(name)
        self.oneway.append(oneway)
        self.surface.append(surface)
        self.speed.append(speed)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def __len__(self) -> int:
        return len(self.source)

    def speeds_kmh(self, speeds: Speeds) -> tuple[np.ndarray, np.ndarray]:
        """(motor, walk) km/h per edge; NaN where the mode may not use it."""
        motor = np.full(len(self), np.nan)
        walk = np.full(len(self), np.nan)
        for i, cls in enumerate(self.road_class):
            m, w = speeds.classes.get(cls, (None, None))
            given = self.speed[i]
            if not math.isnan(given):
                m = given if not self.speed_is_cap or m is None else min(m, given)
            if m is not None and speeds.unpaved_motor_kmh is not None and (self.surface[i] or "") in UNPAVED:
                m = min(m, speeds.unpaved_motor_kmh)
            motor[i] = np.nan if m is None else m
            walk[i] = np.nan if w is None else w
        return motor, walk


def parse_oneway(value: Any) -> int | None:
    """1 (along the line), -1 (against it), 0 (both ways); None if the value is not one of the known spellings."""
    v = "" if value is None else str(value).strip().lower()
    if v in ONEWAY_FORWARD:
        return 1
    if v in ONEWAY_BACKWARD:
        return -1
    if v in ONEWAY_BOTH:
        return 0
    return None


_MAXSPEED = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(mph|km/h|kmh|kph)?\s*$", re.IGNORECASE)


def parse_speed(value: Any) -> float:
    """A speed in km/h from a number or an OSM maxspeed ("50", "30 mph"); NaN when absent, zero or unreadable."""
    if value is None:
        return math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if value > 0 else math.nan
    m = _MAXSPEED.match(str(value))
    if m is None:
        return math.nan
    v = float(m.group(1)) * (1.609344 if (m.group(2) or "").lower() == "mph" else 1.0)
    return v if v > 0 else math.nan


# ---------------------------------------------------------------------------------------------- OpenStreetMap
def is_osm(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".osm.pbf", ".pbf", ".osm", ".osm.bz2", ".osm.gz"))


def read_osm(path: Path, speeds: Speeds, progress: Callable[[int], None] | None = None) -> Edges:
    """The ``highway`` ways of an OSM extract whose class has a speed for some mode, split at shared nodes."""
    import osmium

    wanted = {k for k, (m, w) in speeds.classes.items() if m is not None or w is not None}
    uses: dict[int, int] = {}
    ways = 0
    try:
        for w in osmium.FileProcessor(str(path), osmium.osm.WAY):
            if w.tags.get("highway") in wanted and w.tags.get("area") != "yes":
                for n in w.nodes:
                    uses[n.ref] = uses.get(n.ref, 0) + 1
                ways += 1
    except RuntimeError as exc:  # osmium's reader errors (not an OSM file, truncated)
        raise InvalidParameter(f"cannot read {path.name} as OpenStreetMap data: {exc}") from None
    out = Edges(speed_is_cap=True)
    done = 0
    for w in osmium.FileProcessor(str(path), osmium.osm.NODE | osmium.osm.WAY).with_locations():
        if not isinstance(w, osmium.osm.Way):
            continue
        tags = w.tags
        cls = tags.get("highway")
        if cls not in wanted or tags.get("area") == "yes":
            continue
        oneway = parse_oneway(tags.get("oneway"))
        if oneway is None:
            oneway = 0
        if tags.get("oneway") is None and (cls in ("motorway", "motorway_link") or tags.get("junction") in
                                           ("roundabout", "circular")):
            oneway = 1  # implied by OSM's conventions
        ids: list[int] = []
        pts: list[tuple[float, float]] = []
        for n in w.nodes:
            if not n.location.valid():
                out.skip("a way with a node outside the extract")
                ids = []
                break
            ids.append(n.ref)
            pts.append((n.location.lon, n.location.lat))
        if len(ids) < 2:
            continue
        name = tags.get("name")
        surface = tags.get("surface")
        speed = parse_speed(tags.get("maxspeed"))
        start = 0
        for k in range(1, len(ids)):
            if k == len(ids) - 1 or uses.get(ids[k], 0) > 1:
                out.add(ids[start], ids[k], np.asarray(pts[start:k + 1]), cls, name, oneway, surface, speed)
                start = k
        done += 1
        if progress is not None and done % 10_000 == 0:
            progress(10_000)
    if progress is not None:
        progress(done % 10_000)
    return out


# ---------------------------------------------------------------------------------------------- line layers
@dataclass(frozen=True)
class LineMapping:
    """Which fields of a line layer hold the road class, speed, one-way, surface and name, and how class values map
    to road classes. YAML::

        fields: {class: fclass, speed: maxspeed, oneway: oneway, surface: surface, name: name}
        classes: {国道: trunk, 省道: primary, 县道: secondary, 乡道: tertiary, 村道: unclassified}
        default_class: unclassified      # for features without a class (default: refused)
        source_crs: EPSG:4547            # when the file declares none (or gcj02 / bd09)
    """

    fields: dict[str, str | None]
    classes: dict[str, str]
    default_class: str | None = None
    source_crs: str | None = None

    @classmethod
    def load(cls, path: Path | None) -> LineMapping:
        data: dict[str, Any] = {}
        if path is not None:
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
            except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
                raise InvalidParameter(f"cannot read the mapping {path.name}: {exc}") from None
            if not isinstance(data, dict) or not set(data) <= {"fields", "classes", "default_class", "source_crs"}:
                raise InvalidParameter("a road mapping has the members fields, classes, default_class, source_crs")
        fields = data.get("fields") or {}
        if not isinstance(fields, dict) or not set(fields) <= {"class", "speed", "oneway", "surface", "name"}:
            raise InvalidParameter("mapping fields: class, speed, oneway, surface, name")
        return cls({k: (None if v is None else str(v)) for k, v in fields.items()},
                   {str(k): str(v) for k, v in (data.get("classes") or {}).items()},
                   data.get("default_class"), data.get("source_crs"))


# fields looked for when the mapping names none (OSM-derived layers, Geofabrik shapefiles)
_GUESS = {"class": ("class", "highway", "fclass", "road_class", "type"), "speed": ("speed", "maxspeed", "speed_kmh"),
          "oneway": ("oneway", "one_way"), "surface": ("surface",), "name": ("name",)}


def read_lines(path: Path, speeds: Speeds, mapping: LineMapping, source_crs: str | None = None,
               layer: str | None = None, progress: Callable[[int], None] | None = None) -> Edges:
    from app.ingest.readers import open_source

    src = open_source(path, layer=layer)
    if src.kind != "vector" or not src.geometry_type or "line" not in src.geometry_type.lower():
        raise InvalidParameter(f"{path.name} is not a line layer (geometry: {src.geometry_type or 'none'})")
    lower = {c.lower(): c for c in src.columns}
    col: dict[str, int | None] = {}
    for key, guesses in _GUESS.items():
        given = mapping.fields.get(key, "")
        if given:
            if given not in src.columns:
                raise InvalidParameter(f"{path.name} has no field {given!r} (fields: {', '.join(src.columns)})")
            col[key] = src.columns.index(given)
        elif key in mapping.fields:  # named null: not used
            col[key] = None
        else:
            found = next((lower[g] for g in guesses if g in lower), None)
            col[key] = None if found is None else src.columns.index(found)
    if col["class"] is None and mapping.default_class is None:
        raise InvalidParameter(f"{path.name}: no road class field found (looked for {', '.join(_GUESS['class'])}); "
                               "name it in the mapping (fields.class) or give default_class")
    crs = parse_source_crs(source_crs or mapping.source_crs) or (parse_source_crs(src.crs) if src.crs else None)
    if crs is None:
        raise InvalidParameter(f"{path.name} declares no CRS: give --source-crs (EPSG:xxxx, gcj02 or bd09)")
    parts: list[np.ndarray] = []
    attrs: list[tuple[str, str | None, int, str | None, float]] = []
    unknown: dict[str, int] = {}
    for batch in src.batches(20_000):
        geoms = shapely.from_wkb([b for b in batch.wkb or []])
        for row, g in zip(batch.rows, geoms, strict=True):
            raw_cls = _text(row[col["class"]]) if col["class"] is not None else None
            cls = mapping.classes.get(raw_cls, raw_cls) if raw_cls is not None else mapping.default_class
            if cls is None or cls not in speeds.classes:
                unknown[str(raw_cls)] = unknown.get(str(raw_cls), 0) + 1
                continue
            oneway = parse_oneway(row[col["oneway"]]) if col["oneway"] is not None else 0
            if oneway is None:
                raise InvalidParameter(f"{path.name}: one-way value {row[col['oneway']]!r} is not one of "
                                       "yes/no/-1/F/T/B")
            a = (cls, _text(row[col["name"]]) if col["name"] is not None else None, oneway,
                 _text(row[col["surface"]]) if col["surface"] is not None else None,
                 parse_speed(row[col["speed"]]) if col["speed"] is not None else math.nan)
            if g is None or g.is_empty:
                continue
            for line in (g.geoms if g.geom_type == "MultiLineString" else [g]):
                xy = shapely.get_coordinates(line)
                if len(xy) >= 2:
                    parts.append(xy)
                    attrs.append(a)
        if progress is not None:
            progress(len(batch.rows))
    if unknown:
        listed = ", ".join(f"{k!r} ({n})" for k, n in sorted(unknown.items(), key=lambda kv: -kv[1])[:10])
        raise InvalidParameter(f"{path.name}: road classes without speeds: {listed}. Map them to classes in the "
                               "mapping (classes:) or give their speeds in a speeds file")
    return _noded(parts, attrs, crs)


def _text(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    s = str(v).strip()
    return s or None


def _noded(parts: list[np.ndarray], attrs: list[tuple[Any, ...]], crs: SourceCrs) -> Edges:
    """Lines split at vertices they share with another line (or elsewhere on themselves), vertices numbered."""
    out = Edges(speed_is_cap=False)
    if not parts:
        return out
    xy = np.concatenate(parts)
    if crs is not WGS84 and not crs.is_wgs84:
        lon, lat = crs.to_wgs84(xy[:, 0], xy[:, 1])
        xy = np.column_stack([lon, lat])
    keys = np.round(xy * _GRID).astype(np.int64)
    _, vid, count = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    vid = vid.ravel() + 1
    shared = count[vid - 1] > 1
    start = 0
    for xyp, (cls, name, oneway, surface, speed) in zip(parts, attrs, strict=True):
        n = len(xyp)
        ids, line, cut = vid[start:start + n], xy[start:start + n], shared[start:start + n]
        a = 0
        for k in range(1, n):
            if k == n - 1 or cut[k]:
                out.add(int(ids[a]), int(ids[k]), line[a:k + 1], cls, name, oneway, surface, speed)
                a = k
        start += n
    return out


def read_roads(path: Path, speeds: Speeds, mapping: LineMapping, source_crs: str | None = None,
               layer: str | None = None, progress: Callable[[int], None] | None = None) -> Edges:
    if not path.exists():
        raise InvalidParameter(f"no file {path}")
    edges = read_osm(path, speeds, progress) if is_osm(path) else read_lines(path, speeds, mapping, source_crs,
                                                                             layer, progress)
    if not len(edges):
        raise InvalidParameter(f"{path.name} holds no road with a speed for any mode")
    return edges


def components(source: Iterable[int], target: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """(vertex ids, component of each) of the undirected graph: the islands of a network, largest first (0)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    s = np.fromiter(source, dtype=np.int64)
    t = np.fromiter(target, dtype=np.int64)
    ids, inv = np.unique(np.concatenate([s, t]), return_inverse=True)
    n = len(ids)
    g = coo_matrix((np.ones(len(s)), (inv[:len(s)], inv[len(s):])), shape=(n, n))
    _, labels = connected_components(g, directed=False)
    order = np.argsort(-np.bincount(labels), kind="stable")  # relabel: 0 = the largest
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return ids, rank[labels]
