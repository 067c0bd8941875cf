"""Deterministic generator of the demo region "Tieling (demo)" (region id ``tieling-demo``).

Real facts (app/data/tieling, see PROVENANCE.md): the 7 county-level units of Tieling with their
names, codes, seat coordinates and 2020 census indicators, and the 106 township codes and names.
Everything else is synthetic and drawn from one ``numpy.random.Generator`` seeded by the caller:

* county areas: a region outline of Tieling's real area (about 12,980 km²), split among the county
  seats (urban districts as discs, rural counties as Voronoi cells) — clearly *approximate*;
* township areas: Voronoi cells of seeds inside each county (subdistricts near the county seat);
* about 1,200 villages, allotted to counties by rural population (census ``POPU`` × (1 − ``POPU_URB``));
* about 25,000 registered households and their persons, whose causes and needs follow the county
  indicators: more agriculture (``EMPL_INDU_AGHU``) and less piped water (``HOUS_SAMP_WATR``) give more
  water and income needs, lower schooling (``EDUC_AVGY``) fewer skills, minority shares set ethnicity;
* about 300 projects (types of docs/methodology.md#codes) with capacities, service radii, beneficiaries;
* about 2,000 facilities (schools, clinics, hospitals, markets, banks, bus stops, water plants,
  township governments).

Geometry is built in the region's metric CRS (UTM 51N) and stored in EPSG:4326. The function is pure:
the same seed gives byte-identical tables (see :meth:`DemoData.checksum`).

Example
-------
>>> data = generate(seed=1, n_villages=60, n_households=600, n_projects=15, n_facilities=120)
>>> sorted(data.tables)[:3]
['admin_unit', 'facility', 'household']
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer
from scipy.spatial import cKDTree
from shapely.geometry import MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

from app.demo import panel
from app.models.codes import (
    PROJECT_TYPE_NEEDS,
    AccessRoad,
    Cause,
    CookingFuel,
    FacilityClass,
    Need,
    ProjectStatus,
    ProjectType,
    SafetyGrade,
)

REGION_ID = "tieling-demo"
ANALYSIS_CRS = 32651  # WGS 84 / UTM zone 51N: Tieling lies between 123.3° and 125° E
REFERENCE_YEAR = 2020  # census year; the registry snapshot is for this year
POVERTY_LINE_CNY = Decimal("4000.00")
GENERATOR_VERSION = "1"
# Fixed, public key: the demo's "national ids" are synthetic, so their pseudonyms need no secret.
DEMO_PSEUDONYM_KEY = b"tpa-gis demo region - not a secret"

REGION_AREA_KM2 = 12_980.0  # Tieling City, official area
REGION_CENTRE = (124.10, 42.62)  # lon, lat; the outline is an ellipse of the real area around it
REGION_AXES_KM = (82.0, 50.4)  # semi-axes: π·a·b ≈ REGION_AREA_KM2
REGION_ROTATION_DEG = 28.0  # the major axis points east-north-east, as Tieling does
# Real areas (km²) of the urban units, which become discs around their seats.
URBAN_AREA_KM2 = {"211202": 194.0, "211204": 578.0, "211281": 263.0}

SNAPSHOT_FROM = dt.date(REFERENCE_YEAR, 1, 1)
SNAPSHOT_TO = dt.date(REFERENCE_YEAR + 1, 1, 1)
CODES_FROM = dt.date(2023, 1, 1)  # vintage of the NBS township code list


def _source(seed: int) -> str:
    return f"tpa-gis demo generator v{GENERATOR_VERSION} (seed {seed}); synthetic"


# ----------------------------------------------------------------------------------------------- input facts
@dataclass(frozen=True)
class County:
    adcode: str
    name: str
    name_en: str
    lon: float
    lat: float
    indicators: dict[str, float]

    @property
    def rural_population(self) -> float:
        return self.indicators["POPU"] * (1.0 - self.indicators["POPU_URB"])


@dataclass(frozen=True)
class Township:
    code: str
    name: str
    county: str
    kind: str  # 街道 (subdistrict), 镇 (town), 乡 (township), 区 (development zone)


def _read_csv(name: str) -> list[dict[str, str]]:
    text = resources.files("app.data").joinpath("tieling", name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


@cache
def load_facts() -> tuple[tuple[County, ...], tuple[Township, ...]]:
    """The real facts of Tieling shipped with the package."""
    seats = {r["adcode"]: r for r in _read_csv("county_seats.csv")}
    counties = []
    for row in _read_csv("census2020_county_indicators.csv"):
        code = row["adcode"]
        ind = {k: float(v) for k, v in row.items() if k not in ("adcode", "name") and v not in ("", None)}
        seat = seats[code]
        counties.append(County(code, row["name"], seat["name_en"], float(seat["lon"]), float(seat["lat"]), ind))
    towns = tuple(
        Township(r["town_code"], r["town_name"], r["county_adcode"], r["town_type"])
        for r in _read_csv("townships_nbs2023.csv")
    )
    return tuple(sorted(counties, key=lambda c: c.adcode)), towns


# ----------------------------------------------------------------------------------------------- output
@dataclass
class Table:
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass
class DemoData:
    """Generated rows per table, in load order (parents before children)."""

    seed: int
    region: dict[str, Any]
    tables: dict[str, Table]

    def checksum(self) -> str:
        """SHA-256 over a canonical serialisation of every table (geometries as WKB)."""
        h = hashlib.sha256()
        h.update(json.dumps(self.region, sort_keys=True, default=_canon).encode())
        for name in sorted(self.tables):
            t = self.tables[name]
            h.update(name.encode() + b"\x00" + ",".join(t.columns).encode())
            for row in t.rows:
                h.update(b"\x1e")
                for v in row:
                    h.update(b"\x1f" + _canon(v).encode())
        return h.hexdigest()

    def counts(self) -> dict[str, int]:
        return {k: len(v.rows) for k, v in self.tables.items()}


def _canon(v: Any) -> str:
    if isinstance(v, BaseGeometry):
        return shapely.to_wkb(v, hex=True, include_srid=False)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_canon(x) for x in v) + "]"
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True, default=_canon)
    return repr(v)


# ----------------------------------------------------------------------------------------------- helpers
def pseudonym(national_id: str, key: bytes = DEMO_PSEUDONYM_KEY) -> str:
    """HMAC-SHA256 pseudonym (docs/methodology.md#registry)."""
    return hmac.new(key, national_id.encode(), hashlib.sha256).hexdigest()


def _money(x: float) -> Decimal:
    return Decimal(f"{x:.2f}")


def _dec(x: float, digits: int = 2) -> Decimal:
    return Decimal(f"{x:.{digits}f}")


def _pick(rng: np.random.Generator, options: Sequence[Any], p: Sequence[float]) -> Any:
    p = np.asarray(p, dtype=float)
    return options[int(rng.choice(len(options), p=p / p.sum()))]


def _allot(total: int, weights: np.ndarray, minimum: int = 0) -> np.ndarray:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder), each ≥ ``minimum``."""
    n = len(weights)
    base = np.full(n, minimum, dtype=int)
    rest = total - base.sum()
    if rest <= 0:
        return base
    share = weights / weights.sum() * rest
    floor = np.floor(share).astype(int)
    order = np.argsort(-(share - floor), kind="stable")
    floor[order[: rest - floor.sum()]] += 1
    return base + floor


class _Projector:
    def __init__(self) -> None:
        self.fwd = Transformer.from_crs(4326, ANALYSIS_CRS, always_xy=True)
        self.inv = Transformer.from_crs(ANALYSIS_CRS, 4326, always_xy=True)

    def to_metric(self, lon: float, lat: float) -> tuple[float, float]:
        return self.fwd.transform(lon, lat)

    def to_lonlat(self, geom: BaseGeometry) -> BaseGeometry:
        def f(coords: np.ndarray) -> np.ndarray:
            x, y = self.inv.transform(coords[:, 0], coords[:, 1])
            return np.round(np.column_stack([x, y]), 7)

        # Densify first: a straight edge in UTM is not straight in lon/lat, and neighbours that split a
        # shared edge differently would otherwise overlap or leave slivers after the transform.
        out = shapely.transform(shapely.segmentize(geom, 250.0), f)
        if not out.is_valid:
            out = shapely.make_valid(out)
        return out


def _multi(geom: BaseGeometry) -> MultiPolygon:
    if isinstance(geom, MultiPolygon):
        return geom
    if isinstance(geom, Polygon):
        return MultiPolygon([geom])
    polys = [g for g in getattr(geom, "geoms", []) if isinstance(g, (Polygon, MultiPolygon))]
    parts: list[Polygon] = []
    for g in polys:
        parts.extend(g.geoms if isinstance(g, MultiPolygon) else [g])
    return MultiPolygon(parts)


def _sample_in(rng: np.random.Generator, poly: BaseGeometry, n: int) -> np.ndarray:
    """``n`` uniform points inside ``poly`` (rejection sampling on its bounding box)."""
    minx, miny, maxx, maxy = poly.bounds
    out = np.empty((0, 2))
    shapely.prepare(poly)
    while len(out) < n:
        cand = rng.uniform((minx, miny), (maxx, maxy), size=(max(4 * n, 16), 2))
        out = np.vstack([out, cand[shapely.contains_xy(poly, cand[:, 0], cand[:, 1])]])
    return out[:n]


def _spread_in(rng: np.random.Generator, poly: BaseGeometry, n: int, existing: np.ndarray | None = None) -> np.ndarray:
    """``n`` well-spread points in ``poly``: Mitchell's best-candidate sampling (10 candidates each)."""
    pts = np.empty((0, 2)) if existing is None else existing.copy()
    chosen = []
    for _ in range(n):
        cand = _sample_in(rng, poly, 10)
        if len(pts):
            d = np.min(np.hypot(cand[:, None, 0] - pts[None, :, 0], cand[:, None, 1] - pts[None, :, 1]), axis=1)
            best = cand[int(np.argmax(d))]
        else:
            best = cand[0]
        chosen.append(best)
        pts = np.vstack([pts, best])
    return np.array(chosen).reshape(-1, 2)


def _voronoi_cells(points: np.ndarray, clip: BaseGeometry) -> list[BaseGeometry]:
    """Voronoi cell of each point (same order), clipped to ``clip``."""
    if len(points) == 1:
        return [clip]
    cells = shapely.voronoi_polygons(shapely.multipoints(points), extend_to=clip, ordered=True)
    return [shapely.intersection(c, clip) for c in cells.geoms]


# ----------------------------------------------------------------------------------------------- areas
def _region_outline(proj: _Projector) -> Polygon:
    cx, cy = proj.to_metric(*REGION_CENTRE)
    a, b = REGION_AXES_KM[0] * 1000, REGION_AXES_KM[1] * 1000
    t = np.linspace(0, 2 * np.pi, 181)[:-1]
    rot = math.radians(REGION_ROTATION_DEG)
    x, y = a * np.cos(t), b * np.sin(t)
    xr = cx + x * math.cos(rot) - y * math.sin(rot)
    yr = cy + x * math.sin(rot) + y * math.cos(rot)
    return Polygon(np.column_stack([xr, yr]))


def _county_areas(counties: Sequence[County], proj: _Projector) -> dict[str, BaseGeometry]:
    outline = _region_outline(proj)
    seats = {c.adcode: np.array(proj.to_metric(c.lon, c.lat)) for c in counties}
    discs: dict[str, BaseGeometry] = {}
    for code, area in URBAN_AREA_KM2.items():
        nearest = min(np.hypot(*(seats[code] - s)) for k, s in seats.items() if k != code)
        r = min(math.sqrt(area * 1e6 / math.pi), 0.45 * nearest)
        discs[code] = Point(seats[code]).buffer(r, quad_segs=16).intersection(outline)
    urban = shapely.union_all(list(discs.values()))
    rural_codes = [c.adcode for c in counties if c.adcode not in discs]
    cells = _voronoi_cells(np.array([seats[c] for c in rural_codes]), outline)
    areas = {code: cell.difference(urban) for code, cell in zip(rural_codes, cells, strict=True)}
    areas.update(discs)
    return areas


def _township_areas(
    rng: np.random.Generator, county: County, area: BaseGeometry, towns: Sequence[Township], proj: _Projector
) -> tuple[list[BaseGeometry], np.ndarray]:
    """Township cells and seat points for one county; subdistricts cluster around the county seat."""
    seat = np.array(proj.to_metric(county.lon, county.lat))
    urban = [t.kind in ("街道", "区") for t in towns]
    n_urban = sum(urban)
    core_r = min(3000.0 + 600.0 * n_urban, 0.6 * math.sqrt(area.area / math.pi))
    core = Point(seat).buffer(core_r).intersection(area)
    pts = np.zeros((len(towns), 2))
    urban_idx = [i for i, u in enumerate(urban) if u]
    rural_idx = [i for i, u in enumerate(urban) if not u]
    if urban_idx:
        pts[urban_idx] = _spread_in(rng, core, len(urban_idx))
    if rural_idx:
        others = pts[urban_idx] if urban_idx else None
        pts[rural_idx] = _spread_in(rng, area, len(rural_idx), existing=others)
        # Two Lloyd steps even out the rural cells; subdistrict seeds stay where they are.
        for _ in range(2):
            cells = _voronoi_cells(pts, area)
            for i in rural_idx:
                c = cells[i].centroid if not cells[i].is_empty else Point(pts[i])
                pts[i] = (c.x, c.y)
    cells = _voronoi_cells(pts, area)
    return cells, pts


# ----------------------------------------------------------------------------------------------- names
_PREFIX = list("东西南北前后大小新老上下中")
_STEMS = [
    "河", "山", "岭", "台", "沟", "屯", "堡", "泉", "甸", "营", "岗", "林", "岔", "湾", "洼", "峪", "坨",
    "榆树", "柳河", "杨树", "马家", "王家", "李家", "张家", "刘家", "三台", "二道", "头道", "双井", "太平",
    "永安", "长兴", "兴隆", "福兴", "五家子", "靠山", "石砬子", "黄花", "白家", "腰堡", "四家子", "八里",
    "东升", "红旗", "光明", "胜利", "幸福", "和平", "平安", "金山", "银河", "松树", "榛子", "梨树",
]


def _village_name(rng: np.random.Generator, used: set[str]) -> str:
    for _ in range(30):
        stem = _STEMS[int(rng.integers(len(_STEMS)))]
        name = (_PREFIX[int(rng.integers(len(_PREFIX)))] if rng.random() < 0.45 else "") + stem + "村"
        if name not in used:
            used.add(name)
            return name
    k = 2
    while f"{name[:-1]}{k}村" in used:
        k += 1
    used.add(f"{name[:-1]}{k}村")
    return f"{name[:-1]}{k}村"


_PROJECT_LABEL = {
    ProjectType.industry: "特色种养产业", ProjectType.employment: "扶贫车间就业",
    ProjectType.relocation: "易地扶贫搬迁", ProjectType.infrastructure_road: "通村道路硬化",
    ProjectType.infrastructure_water: "农村饮水安全", ProjectType.infrastructure_power_broadband: "电网与宽带改造",
    ProjectType.housing_renovation: "危房改造", ProjectType.education: "教育资助",
    ProjectType.health: "健康扶贫", ProjectType.social_security: "低保兜底",
    ProjectType.ecological_compensation: "生态护林员", ProjectType.photovoltaic: "光伏扶贫电站",
    ProjectType.ecommerce: "电商服务站", ProjectType.tourism: "乡村旅游",
    ProjectType.microfinance: "扶贫小额信贷", ProjectType.asset_income: "合作社入股分红",
    ProjectType.land_transfer: "土地流转", ProjectType.skills_training: "技能培训",
}

# type: (share of projects, capacity range, service radius km, budget median CNY, benefit type)
_PROJECT_SPEC: dict[ProjectType, tuple[float, tuple[int, int], float, float, str]] = {
    ProjectType.industry: (0.15, (30, 200), 15.0, 1_500_000, "dividend"),
    ProjectType.employment: (0.07, (20, 80), 10.0, 600_000, "wage"),
    ProjectType.relocation: (0.02, (20, 120), 25.0, 8_000_000, "housing"),
    ProjectType.infrastructure_road: (0.10, (100, 600), 5.0, 3_000_000, "service"),
    ProjectType.infrastructure_water: (0.09, (80, 500), 6.0, 1_200_000, "service"),
    ProjectType.infrastructure_power_broadband: (0.03, (100, 800), 8.0, 900_000, "service"),
    ProjectType.housing_renovation: (0.07, (20, 120), 12.0, 1_000_000, "subsidy"),
    ProjectType.education: (0.05, (30, 150), 10.0, 400_000, "subsidy"),
    ProjectType.health: (0.05, (50, 300), 12.0, 700_000, "service"),
    ProjectType.social_security: (0.03, (50, 300), 20.0, 500_000, "transfer"),
    ProjectType.ecological_compensation: (0.03, (10, 60), 15.0, 300_000, "wage"),
    ProjectType.photovoltaic: (0.08, (30, 300), 15.0, 2_000_000, "dividend"),
    ProjectType.ecommerce: (0.04, (20, 150), 15.0, 300_000, "service"),
    ProjectType.tourism: (0.03, (20, 100), 15.0, 1_000_000, "wage"),
    ProjectType.microfinance: (0.04, (20, 150), 20.0, 1_000_000, "loan"),
    ProjectType.asset_income: (0.05, (30, 200), 20.0, 800_000, "dividend"),
    ProjectType.land_transfer: (0.03, (20, 100), 10.0, 200_000, "rent"),
    ProjectType.skills_training: (0.08, (30, 200), 20.0, 150_000, "training"),
}

# Liaoning's effective irrigated area over its cultivated land, about 0.31 [K: provincial statistical yearbook,
# not re-checked]: most of the province's maize is rain-fed.
IRRIGATED_SHARE = 0.31
# Share of registered workers counted as skilled after the training of 2016-2020 [K, an assumption of the demo].
SKILLED_SHARE = 0.45

# The national registry mix of main causes (docs/methodology.md#codes) [K], before county modulation.
_CAUSE_BASE = {
    Cause.illness: 0.40, Cause.disability: 0.13, Cause.schooling: 0.03, Cause.disaster: 0.015,
    Cause.lack_land: 0.03, Cause.lack_water: 0.015, Cause.lack_skills: 0.08, Cause.lack_labour: 0.09,
    Cause.lack_capital: 0.10, Cause.poor_transport: 0.02, Cause.lack_motivation: 0.06, Cause.other: 0.03,
}
# Needs the registry form records for a main cause (docs/methodology.md#cause-table, default map).
_CAUSE_NEEDS: dict[Cause, tuple[Need, ...]] = {
    Cause.illness: (Need.L_HEALTH, Need.P_JOB, Need.P_CAPITAL),
    Cause.disability: (Need.L_HEALTH, Need.L_HOUSE, Need.P_JOB, Need.P_SKILL),
    Cause.schooling: (Need.L_EDU, Need.P_CAPITAL),
    Cause.disaster: (Need.L_HOUSE, Need.L_WATER, Need.L_FOOD, Need.P_RESIL, Need.P_CAPITAL),
    Cause.lack_land: (Need.L_FOOD, Need.P_LAND, Need.P_JOB),
    Cause.lack_water: (Need.L_WATER, Need.P_IRRIG),
    Cause.lack_skills: (Need.P_SKILL, Need.P_INDUSTRY),
    Cause.lack_labour: (Need.L_FOOD, Need.L_HEALTH),
    Cause.lack_capital: (Need.P_CAPITAL, Need.P_INDUSTRY),
    Cause.poor_transport: (Need.L_HEALTH, Need.L_EDU, Need.P_ROAD, Need.P_MARKET),
    Cause.lack_motivation: (Need.P_MOTIV, Need.P_SKILL),
    Cause.other: (),
}


def _cause_probs(ind: dict[str, float], remote: float) -> np.ndarray:
    """Main-cause probabilities for a village: the national mix tilted by county facts."""
    agri = ind["EMPL_INDU_AGHU"]
    no_water = 1.0 - ind["HOUS_SAMP_WATR"]
    low_school = max(0.0, (10.5 - ind["EDUC_AVGY"]) / 2.0)
    old = ind["AGES_65P"] / 0.18
    tilt = {
        Cause.lack_water: 1.0 + 8.0 * no_water,
        Cause.lack_skills: 0.6 + 1.2 * agri + 0.6 * low_school,
        Cause.lack_capital: 0.7 + 1.0 * agri,
        Cause.lack_land: 0.5 + 1.5 * (1.0 - agri),
        Cause.poor_transport: 0.5 + 2.0 * remote,
        Cause.lack_labour: 0.8 * old,
        Cause.disaster: 0.6 + 1.0 * agri,
    }
    p = np.array([_CAUSE_BASE[c] * tilt.get(c, 1.0) for c in Cause])
    return p / p.sum()


# ----------------------------------------------------------------------------------------------- main entry
def generate(
    seed: int = 42,
    *,
    n_villages: int = 1200,
    n_households: int = 25_000,
    n_projects: int = 300,
    n_facilities: int = 2000,
    progress: Callable[[str, int], None] | None = None,
) -> DemoData:
    """Generate the demo region. ``progress(step, percent)`` is called between steps."""
    rng = np.random.default_rng(seed)
    report = progress or (lambda step, pct: None)
    proj = _Projector()
    counties, towns = load_facts()
    source = _source(seed)
    county_by = {c.adcode: c for c in counties}

    report("areas", 0)
    county_areas = _county_areas(counties, proj)
    towns_by_county: dict[str, list[Township]] = {}
    for t in towns:
        towns_by_county.setdefault(t.county, []).append(t)

    admin = Table(("code", "region_id", "level", "parent_code", "name", "name_en", "geom", "properties",
                   "valid_from", "valid_to", "source"))
    admin.rows.append(("CN", REGION_ID, 0, None, "中国", "China", None, {"note": "no boundary loaded"},
                       CODES_FROM, None, "ISO 3166-1"))
    admin.rows.append(("210000", REGION_ID, 1, "CN", "辽宁省", "Liaoning", None, {"note": "no boundary loaded"},
                       CODES_FROM, None, "GB/T 2260"))
    prefecture_geom = _multi(proj.to_lonlat(shapely.union_all(list(county_areas.values()))))
    admin.rows.append(("211200", REGION_ID, 2, "210000", "铁岭市", "Tieling", prefecture_geom,
                       {"geometry_quality": "approximate: an ellipse of Tieling's real area (12,980 km²)",
                        "area_km2_official": REGION_AREA_KM2}, CODES_FROM, None, source))
    census_keys = ("POPU", "POPU_URB", "EMPL_INDU_AGHU", "HOUS_SAMP_WATR", "HOUS_SAMP_WC", "EDUC_AVGY",
                   "EDUC_LITR", "AGES_65P", "POPU_ETHNIC")
    for c in counties:
        props = {
            "geometry_quality": "approximate: built from the county seat coordinates, not a real boundary",
            "seat": {"lon": c.lon, "lat": c.lat},
            "census2020": {k: c.indicators[k] for k in census_keys},
            "census_source": "NBS 2020 census by county, compiled by thebamboogrove/tudigong (MIT)",
        }
        admin.rows.append((c.adcode, REGION_ID, 3, "211200", c.name, c.name_en,
                           _multi(proj.to_lonlat(county_areas[c.adcode])), props, CODES_FROM, None,
                           "GB/T 2260 code; " + source + " area"))

    # ---- townships
    report("townships", 8)
    town_cells: dict[str, BaseGeometry] = {}
    town_seats: dict[str, np.ndarray] = {}
    for c in counties:
        ts = towns_by_county[c.adcode]
        cells, pts = _township_areas(rng, c, county_areas[c.adcode], ts, proj)
        for t, cell, pt in zip(ts, cells, pts, strict=True):
            town_cells[t.code], town_seats[t.code] = cell, pt
            admin.rows.append((t.code, REGION_ID, 4, c.adcode, t.name, None, _multi(proj.to_lonlat(cell)),
                               {"town_type": t.kind, "geometry_quality": "synthetic Voronoi cell"},
                               CODES_FROM, None, "NBS 统计用区划代码 2023; " + source + " area"))

    # ---- villages
    report("villages", 15)
    rural = np.array([c.rural_population for c in counties])
    per_county = _allot(n_villages, rural, minimum=len(counties))
    village = Table(("code", "region_id", "is_poverty_village", "households", "population", "labour_force",
                     "migrant_workers", "arable_mu", "km_to_township", "paved_road", "bus_service", "grid_power",
                     "broadband", "clinic", "licensed_doctors", "collective_income", "unsafe_water_households",
                     "geom_point", "valid_from", "valid_to", "source"))
    v_code: list[str] = []
    v_xy: list[np.ndarray] = []
    v_county: list[str] = []
    v_town: list[str] = []
    v_name: list[str] = []
    v_cells: list[BaseGeometry] = []
    v_remote: list[float] = []
    v_poverty: list[bool] = []
    v_unsafe_share: list[float] = []
    v_pop: list[int] = []
    for c, nv in zip(counties, per_county, strict=True):
        ts = towns_by_county[c.adcode]
        w = np.array([(0.25 if t.kind in ("街道", "区") else 1.0) * math.sqrt(town_cells[t.code].area) for t in ts])
        per_town = _allot(int(nv), w, minimum=1)
        for t, k in zip(ts, per_town, strict=True):
            cell = town_cells[t.code]
            pts = _spread_in(rng, cell, int(k))
            cells = _voronoi_cells(pts, cell)
            used: set[str] = set()
            for j, (pt, vc) in enumerate(zip(pts, cells, strict=True), start=1):
                v_code.append(f"{t.code}{j:03d}")
                v_xy.append(pt)
                v_county.append(c.adcode)
                v_town.append(t.code)
                v_name.append(_village_name(rng, used))
                v_cells.append(vc)
    v_xy_arr = np.array(v_xy)
    seat_xy = np.array([town_seats[t] for t in v_town])
    km_town = np.hypot(*(v_xy_arr - seat_xy).T) / 1000.0
    remote_all = np.clip(km_town / 15.0, 0, 1)
    for i, code in enumerate(v_code):
        c = county_by[v_county[i]]
        ind = c.indicators
        remote = float(remote_all[i])
        urbanish = ind["POPU_URB"]
        p_pov = 0.05 + 0.25 * ind["EMPL_INDU_AGHU"] + 0.15 * remote
        is_pov = bool(rng.random() < p_pov)
        pop = int(max(150, rng.normal(c.rural_population / per_county[counties.index(c)], 250)))
        hh = int(pop / rng.uniform(2.4, 2.9))
        labour = int(pop * rng.uniform(0.5, 0.62))
        migrants = int(labour * np.clip(rng.normal(0.25 + 0.15 * ind["EMPL_INDU_AGHU"], 0.08), 0.02, 0.7))
        unsafe_share = float(np.clip(rng.normal((1 - ind["HOUS_SAMP_WATR"]) * 0.6, 0.08), 0, 1))
        row = (
            code, REGION_ID, is_pov, hh, pop, labour, migrants,
            _dec(pop * rng.uniform(2.0, 7.0) * (0.3 + ind["EMPL_INDU_AGHU"]), 1),
            _dec(km_town[i]),
            bool(rng.random() < 0.98 - 0.25 * remote),
            bool(rng.random() < 0.85 - 0.5 * remote + 0.1 * urbanish),
            bool(rng.random() < 0.998),
            bool(rng.random() < 0.95 - 0.2 * remote),
            bool(rng.random() < 0.85 - 0.3 * remote),
            int(rng.integers(0, 3) + (0 if rng.random() < 0.15 + 0.2 * remote else 1)),
            _money(max(0.0, rng.lognormal(math.log(60_000 if not is_pov else 15_000), 0.8))),
            int(round(hh * unsafe_share)),
            Point(v_xy_arr[i]),
            SNAPSHOT_FROM, SNAPSHOT_TO, source,
        )
        village.rows.append(row)
        v_remote.append(remote)
        v_poverty.append(is_pov)
        v_unsafe_share.append(unsafe_share)
        v_pop.append(pop)
    # the village point in lon/lat (after all random draws, so transforms never disturb the stream)
    village.rows = [r[:17] + (proj.to_lonlat(r[17]),) + r[18:] for r in village.rows]
    for code, town, name, cell in zip(v_code, v_town, v_name, v_cells, strict=True):
        admin.rows.append((code, REGION_ID, 5, town, name, None, _multi(proj.to_lonlat(cell)),
                           {"synthetic": True}, CODES_FROM, None, source))
    clinic_by_village = {r[0]: r[13] for r in village.rows}

    # ---- households and persons
    report("households", 30)
    hh_table, history_table, person_table, hh_meta = _households(
        rng, n_households, counties, county_by, v_code, v_county, v_cells, v_xy_arr, v_remote, v_poverty,
        v_unsafe_share, v_pop, clinic_by_village, proj, source, seed,
    )

    # ---- facilities
    report("facilities", 70)
    facility = _facilities(rng, n_facilities, counties, towns, town_seats, town_cells, v_code, v_town, v_xy_arr,
                           village.rows, county_areas, proj, source)

    # ---- projects and beneficiaries
    report("projects", 85)
    project, beneficiary = _projects(rng, n_projects, v_code, v_town, v_name, v_xy_arr, town_seats, hh_meta,
                                     proj, source)

    report("done", 100)
    region = {
        "region_id": REGION_ID,
        "name": "Tieling (demo)",
        "country": "CN",
        "code_system": "GB/T 2260 (counties) + NBS 统计用区划代码 2023 (townships); synthetic village codes",
        "analysis_crs": ANALYSIS_CRS,
        "poverty_line": POVERTY_LINE_CNY,
        "currency": "CNY",
        "poverty_line_note": "China's line of CNY 2,300 per person per year at 2010 prices, about CNY 4,000 "
        "at 2020 prices [K]",
        "default_year": REFERENCE_YEAR,
        "description": "Synthetic demonstration region built on real facts of Tieling City, Liaoning: county "
        "names, codes, seats and 2020 census indicators; township codes. Areas are approximate; villages, "
        "households, persons, projects and facilities are synthetic.",
        "attribution": "Census 2020 county indicators compiled by thebamboogrove/tudigong (MIT, Copyright (c) "
        "thebamboogrove); GHSL: JRC GHSL GHS-POP R2023A (CC BY 4.0); township codes: NBS 2023 via "
        "modood/Administrative-divisions-of-China (WTFPL).",
        "metadata": {"generator": "app.demo.generate", "version": GENERATOR_VERSION, "seed": seed,
                     "synthetic": True, "country_name": "China",
                     "admin_levels": {"0": "Country 国家", "1": "Province 省", "2": "Prefecture 地级市",
                                      "3": "County 县/区", "4": "Township 乡镇/街道", "5": "Village 村"}},
    }
    tables = {
        "admin_unit": admin, "village": village, "household": hh_table, "household_history": history_table,
        "person": person_table,
        "project": project, "project_beneficiary": beneficiary, "facility": facility,
    }
    return DemoData(seed=seed, region=region, tables=tables)


@dataclass
class _HouseholdMeta:
    ids: list[str]
    xy: np.ndarray
    needs: list[frozenset[str]]
    village_idx: np.ndarray


def _households(
    rng: np.random.Generator, n: int, counties: Sequence[County], county_by: dict[str, County],
    v_code: list[str], v_county: list[str], v_cells: list[BaseGeometry], v_xy: np.ndarray,
    v_remote: list[float], v_poverty: list[bool], v_unsafe: list[float], v_pop: list[int],
    clinic_by_village: dict[str, bool], proj: _Projector, source: str, seed: int,
) -> tuple[Table, Table, Table, _HouseholdMeta]:
    hh = Table(("hh_id", "region_id", "village_code", "geom", "id_standard", "hh_type", "main_cause",
                "other_causes", "status", "year_identified", "year_exited", "size", "income_wage",
                "income_business", "income_property", "income_transfer", "expense_production", "net_income_pc",
                "house_area_m2", "house_structure", "house_safety_grade", "water_safe", "water_difficulty",
                "toilet", "cooking_fuel", "electricity", "access_road", "km_to_main_road", "arable_mu",
                "irrigated_mu", "forest_mu", "coop_member", "microcredit", "food_insecure", "clothing_insecure",
                "family_doctor", "reported_needs", "valid_from", "valid_to", "source", "expense_medical",
                "expense_education", "loss_disaster"))
    pe = Table(("person_id", "hh_id", "region_id", "relation", "sex", "birth_year", "ethnicity", "education",
                "in_school", "health", "labour", "migrant_months", "med_insured", "pension_insured",
                "disability_grade", "valid_from", "valid_to", "source"))
    # Households per village: population × county deprivation × remoteness × poverty-village status.
    depr = {
        c.adcode: 0.2 + c.indicators["EMPL_INDU_AGHU"] + 0.8 * (1 - c.indicators["HOUS_SAMP_WATR"])
        + 0.1 * max(0.0, 10.5 - c.indicators["EDUC_AVGY"])
        for c in counties
    }
    w = np.array([v_pop[i] * depr[v_county[i]] * (1 + v_remote[i]) * (1.8 if v_poverty[i] else 1.0)
                  for i in range(len(v_code))])
    per_village = _allot(n, w)
    causes = list(Cause)
    history = Table(hh.columns)
    prng = np.random.default_rng([seed, 2016])  # the panel's own stream: the yearly records
    disasters = panel.village_disasters(prng, len(v_code))
    ids: list[str] = []
    xy_all: list[np.ndarray] = []
    needs_all: list[frozenset[str]] = []
    vidx_all: list[int] = []
    serial = 0
    for vi, k in enumerate(per_village):
        if k == 0:
            continue
        c = county_by[v_county[vi]]
        ind = c.indicators
        remote = v_remote[vi]
        cprobs = _cause_probs(ind, remote)
        # positions: around the village point, inside the village cell
        cell = v_cells[vi]
        shapely.prepare(cell)
        offs = v_xy[vi] + rng.normal(0, 350, size=(int(k), 2))
        inside = shapely.contains_xy(cell, offs[:, 0], offs[:, 1])
        offs[~inside] = v_xy[vi]
        for j in range(int(k)):
            serial += 1
            hh_type = _pick(rng, ("general", "dibao", "tekun"), (0.6, 0.32, 0.08))
            main = causes[int(rng.choice(len(causes), p=cprobs))]
            n_other = int(_pick(rng, (0, 1, 2), (0.45, 0.35, 0.2)))
            others_pool = [x for x in causes if x not in (main, Cause.other)]
            others = [others_pool[i] for i in sorted(rng.choice(len(others_pool), size=n_other, replace=False))]
            size = 1 if hh_type == "tekun" else int(_pick(rng, (1, 2, 3, 4, 5, 6), (0.2, 0.36, 0.2, 0.14, 0.07, 0.03)))
            year_id = int(_pick(rng, (2014, 2015, 2016, 2017, 2018, 2019), (0.62, 0.14, 0.1, 0.07, 0.05, 0.02)))
            hh_id = pseudonym(f"HH-{c.adcode}-{serial:07d}")
            persons, labour_count, skilled, migrant, chronic = _persons(rng, hh_id, size, main, others, hh_type, ind,
                                                                        source)
            pe.rows.extend(persons)
            # when identified: housing, water, land; the panel (app/demo/panel.py) moves them on year by year
            grade0 = _pick(rng, list(SafetyGrade), (0.25, 0.45, 0.2, 0.1))
            unsafe = v_unsafe[vi] * (1.6 if main in (Cause.lack_water, Cause.disaster) else 1.0)
            water_safe0 = bool(rng.random() >= min(1.0, unsafe))
            water_diff0 = bool((not water_safe0 and rng.random() < 0.5) or rng.random() < 0.03 + 0.1 * remote)
            p_flush = float(np.clip(ind["HOUS_SAMP_WC"] - 0.45, 0.02, 0.9))
            toilet = _pick(rng, ("flush", "dry", "none"), (p_flush, 1 - p_flush - 0.03, 0.03))
            urb = ind["POPU_URB"]
            fuel = _pick(rng, list(CookingFuel), (0.12 + 0.3 * urb, 0.05 + 0.3 * urb, 0.02, 0.25, 0.3, 0.2, 0.01, 0.02))
            road = _pick(rng, list(AccessRoad), (0.03 + 0.1 * remote, 0.1 + 0.2 * remote, 0.72, 0.12))
            arable_pc = max(0.0, rng.normal(1.5 + 6.0 * ind["EMPL_INDU_AGHU"], 1.2))
            if main == Cause.lack_land:
                arable_pc *= 0.2
            arable = arable_pc * size
            # irrigated land: most of Liaoning's farmland is rain-fed (IRRIGATED_SHARE); plots are either
            # irrigated or not, so a household's share is bimodal
            irrigated_share0 = (rng.uniform(0.6, 1.0) if rng.random() < IRRIGATED_SHARE * (
                0.3 if main == Cause.lack_water else 1.0) else rng.uniform(0.0, 0.15))
            forest = max(0.0, rng.normal(2.0 if c.adcode == "211223" else 0.3, 1.0))
            profile = panel.Profile(
                year_id, size, hh_type, labour_count, migrant, chronic,
                bool({Cause.disaster, Cause.lack_water} & ({main} | set(others))), grade0, water_safe0, water_diff0,
                irrigated_share0, arable,
                float(rng.lognormal(-0.08 + 0.15 * (labour_count > 0) - 0.25 * (hh_type != "general"), 0.4)),
                sum(1 for pr in persons if pr[8] in ("senior", "vocational", "tertiary")))
            static = dict(
                id_standard=_pick(rng, ("national", "provincial", "municipal"), (0.85, 0.1, 0.05)),
                house_area=_dec(max(12.0, rng.normal(55 + 8 * size, 15)), 1),
                structure=_pick(rng, ("brick_concrete", "brick_wood", "earth_wood", "other"), (0.55, 0.3, 0.12, 0.03)),
                electricity=bool(rng.random() < 0.998), km_road=_dec(max(0.0, rng.exponential(1.0 + 4.0 * remote))),
            )
            records = panel.simulate(prng, profile, disasters[vi])
            pos = offs[j]
            for r in records:
                needs = _recorded_needs(prng, r, main, labour_count, skilled, road, arable, ind)
                row = (
                    hh_id, REGION_ID, v_code[vi], Point(pos), static["id_standard"], hh_type, str(main),
                    [str(x) for x in others], r.status, year_id, r.year_exited, size,
                    *(_money(v) for v in panel.income_columns(r, size).values()),
                    static["house_area"], static["structure"], r.grade, r.water_safe, r.water_difficulty, toilet, fuel,
                    static["electricity"], road, static["km_road"], _dec(arable), _dec(r.irrigated), _dec(forest),
                    r.coop, r.credit, r.food_insecure, r.clothing_insecure, r.doctor, needs,
                    dt.date(r.year, 1, 1), None if r.year == panel.LAST_YEAR else dt.date(r.year + 1, 1, 1), source,
                    _money(r.expense_medical), _money(r.expense_education), _money(r.loss_disaster),
                )
                (hh if r.year == panel.LAST_YEAR else history).rows.append(row)
                if r.year == REFERENCE_YEAR:
                    needs_ref = needs
            ids.append(hh_id)
            xy_all.append(pos)
            needs_all.append(frozenset(needs_ref))
            vidx_all.append(vi)
    for t in (hh, history):
        t.rows = [r[:3] + (proj.to_lonlat(r[3]),) + r[4:] for r in t.rows]
    meta = _HouseholdMeta(ids, np.array(xy_all).reshape(-1, 2), needs_all, np.array(vidx_all, dtype=int))
    return hh, history, pe, meta


def _recorded_needs(rng: np.random.Generator, r: panel.YearRecord, main: Cause, labour: int, skilled: int,
                    road: str, arable: float, ind: dict[str, float]) -> list[str]:
    """The needs a cadre records on the form for a year: the main cause's needs while the household is poor or
    monitored, and what its conditions show."""
    needs: set[Need] = set(_CAUSE_NEEDS[main]) if r.status != "exited" else set()
    if not r.water_safe or r.water_difficulty:
        needs.add(Need.L_WATER)
    if r.grade in ("C", "D"):
        needs.add(Need.L_HOUSE)
    if r.income_pc < float(POVERTY_LINE_CNY) or r.food_insecure:
        needs.add(Need.L_FOOD)
    if labour and not r.coop and rng.random() < 0.2 + 0.6 * ind["EMPL_INDU_AGHU"]:
        needs.add(Need.P_INDUSTRY if rng.random() < 0.5 else Need.P_JOB)
    if labour and skilled == 0 and r.status != "exited" and rng.random() < 0.3:
        needs.add(Need.P_SKILL)
    if arable > 0 and r.irrigated < 0.2 * arable and main == Cause.lack_water:
        needs.add(Need.P_IRRIG)
    if road in ("dirt", "gravel"):
        needs.add(Need.P_ROAD)
    return sorted(str(x) for x in needs)


_EDU_LEVELS = ("illiterate", "primary", "junior", "senior", "tertiary")


def _persons(
    rng: np.random.Generator, hh_id: str, size: int, main: Cause, others: list[Cause], hh_type: str,
    ind: dict[str, float], source: str,
) -> tuple[list[tuple[Any, ...]], int, int, bool, bool]:
    """Members of one household: relation, age, schooling, health and labour status (as of the reference year;
    the members stay the same over the panel)."""
    rows = []
    head_age = int(np.clip(rng.normal(70 if hh_type == "tekun" else 56, 11), 22, 95))
    ages = [head_age]
    relations = ["head"]
    for k in range(1, size):
        if k == 1 and rng.random() < 0.8:
            relations.append("spouse")
            ages.append(int(np.clip(head_age + rng.normal(-2, 3), 18, 98)))
        elif head_age > 62 and rng.random() < 0.35:
            relations.append("grandchild")
            ages.append(int(rng.integers(3, 18)))
        elif head_age < 45 and rng.random() < 0.3:
            relations.append("parent")
            ages.append(int(np.clip(head_age + rng.normal(27, 3), 45, 98)))
        else:
            relations.append("child")
            ages.append(int(np.clip(head_age - rng.normal(27, 4), 0, 75)))
    sick = {Cause.illness, Cause.disability} & ({main} | set(others))
    sick_member = int(rng.integers(size)) if sick else -1
    avg_school = ind["EDUC_AVGY"]
    p_illit = min(0.5, ind["EDUC_LITR"] * 4)
    p_minority = ind.get("POPU_ETHNIC", 0.05) * 0.95
    labour_count = skilled = 0
    migrant_any = False
    for k in range(size):
        age = ages[k]
        sex = "male" if (relations[k] == "head") == (rng.random() < 0.82) else "female"
        health = "healthy"
        disability = None
        if k == sick_member:
            if Cause.disability in sick and (main == Cause.disability or Cause.illness not in sick):
                health, disability = "disabled", int(rng.integers(1, 5))
            else:
                health = "chronic" if rng.random() < 0.6 else "major_illness"
        elif age >= 60 and rng.random() < 0.25:
            health = "chronic"
        in_school = "none"
        if 3 <= age <= 5:
            in_school = "preschool"
        elif 6 <= age <= 11:
            in_school = "primary"
        elif 12 <= age <= 14:
            in_school = "junior"
        elif 15 <= age <= 17:
            in_school = "senior" if rng.random() < 0.6 else "vocational"
        elif 18 <= age <= 21 and rng.random() < 0.35:
            in_school = "tertiary"
        if 6 <= age <= 15 and health == "healthy" and rng.random() < 0.015:
            in_school = "none"  # a compulsory-school-age dropout (L_EDU)
        if age < 6:
            edu = None
        elif in_school != "none":
            edu = {"preschool": None, "primary": "primary", "junior": "junior", "senior": "junior",
                   "vocational": "junior", "tertiary": "senior"}[in_school] if age >= 7 else None
        elif rng.random() < p_illit * (2.0 if age > 60 else 0.5):
            edu = "illiterate"
        else:
            mean_idx = (avg_school - 6) / 3 + (0.5 if age < 45 else -0.4)
            edu = _EDU_LEVELS[int(np.clip(round(rng.normal(mean_idx + 1, 0.8)), 1, 4))]
        if age < 16 or in_school != "none":
            labour = "none"
        elif age > 70 or health in ("major_illness",) or (health == "disabled" and disability and disability <= 2):
            labour = "lost"
        elif age >= 60 or health in ("chronic", "disabled"):
            labour = "weak"
        else:
            # skilled: trained workers (雨露计划 and the skills training of 2016-2020 reached most registered
            # workers) — SKILLED_SHARE, more with upper-secondary schooling
            p_skilled = SKILLED_SHARE + 0.15 * (edu in ("senior", "tertiary"))
            labour = "skilled" if rng.random() < p_skilled else "ordinary"
        migrant = 0
        if labour in ("ordinary", "skilled") and rng.random() < 0.35:
            migrant = int(rng.integers(3, 13))
            migrant_any = True
        labour_count += labour in ("ordinary", "skilled")
        skilled += labour == "skilled"
        ethnicity = "汉族"
        if rng.random() < p_minority:
            ethnicity = _pick(rng, ("满族", "蒙古族", "回族", "朝鲜族"), (0.85, 0.08, 0.04, 0.03))
        rows.append((
            pseudonym(f"P-{hh_id[:16]}-{k}"), hh_id, REGION_ID, relations[k], sex, REFERENCE_YEAR - age, ethnicity,
            edu, in_school, health, labour, migrant, bool(rng.random() < 0.97), bool(age >= 16 and rng.random() < 0.88),
            disability, dt.date(panel.FIRST_YEAR, 1, 1), None, source,
        ))
    chronic = any(r[9] in ("chronic", "major_illness") for r in rows)
    return rows, labour_count, skilled, migrant_any, chronic


def _facilities(
    rng: np.random.Generator, n_target: int, counties: Sequence[County], towns: Sequence[Township],
    town_seats: dict[str, np.ndarray], town_cells: dict[str, BaseGeometry], v_code: list[str], v_town: list[str],
    v_xy: np.ndarray, village_rows: list[tuple[Any, ...]], county_areas: dict[str, BaseGeometry],
    proj: _Projector, source: str,
) -> Table:
    fac = Table(("fac_id", "region_id", "class", "name", "capacity", "admin_code", "geom", "valid_from",
                 "valid_to", "source"))
    items: list[tuple[str, str, int | None, str, np.ndarray]] = []

    def near(xy: np.ndarray, sd: float) -> np.ndarray:
        return xy + rng.normal(0, sd, size=2)

    for c in counties:  # county hospitals and water plants near the seat
        seat = np.array(proj.to_metric(c.lon, c.lat))
        items.append((FacilityClass.hospital, f"{c.name}人民医院", int(rng.integers(300, 900)), c.adcode,
                      near(seat, 800)))
        items.append((FacilityClass.hospital, f"{c.name}中医院", int(rng.integers(100, 400)), c.adcode,
                      near(seat, 1200)))
        for k in range(3):
            items.append((FacilityClass.water_plant, f"{c.name}第{k + 1}水厂", int(rng.integers(5_000, 60_000)),
                          c.adcode, _sample_in(rng, county_areas[c.adcode], 1)[0]))
    for t in towns:
        seat = town_seats[t.code]
        cell = town_cells[t.code]
        items.append((FacilityClass.township_government, f"{t.name}人民政府", None, t.code, seat))
        items.append((FacilityClass.hospital, f"{t.name}卫生院", int(rng.integers(20, 80)), t.code, near(seat, 400)))
        for k in range(int(rng.integers(1, 3))):
            items.append((FacilityClass.market, f"{t.name}集贸市场{k + 1}", int(rng.integers(50, 400)), t.code,
                          near(seat, 700)))
        for k in range(int(rng.integers(1, 3))):
            items.append((FacilityClass.bank, f"{t.name}信用社{k + 1}", None, t.code, near(seat, 500)))
        items.append((FacilityClass.school_junior, f"{t.name}中学", int(rng.integers(200, 1200)), t.code,
                      near(seat, 600)))
        for k, pt in enumerate(_sample_in(rng, cell, int(rng.integers(2, 5)))):
            items.append((FacilityClass.school_primary, f"{t.name}第{k + 1}小学", int(rng.integers(60, 600)),
                          t.code, pt))
    # village clinics where the village form says there is one, bus stops where there is a bus service;
    # bus stops are thinned so the total lands near n_target.
    clinics = [i for i, r in enumerate(village_rows) if r[13]]
    for i in clinics:
        items.append((FacilityClass.clinic, "村卫生室", None, v_code[i], near(v_xy[i], 150)))
    bus = [i for i, r in enumerate(village_rows) if r[10]]
    room = max(0, n_target - len(items))
    if bus and room:
        chosen = np.sort(rng.choice(len(bus), size=min(room, len(bus)), replace=False))
        for ci in chosen:
            i = bus[int(ci)]
            items.append((FacilityClass.bus_stop, "公交站", None, v_code[i], near(v_xy[i], 250)))
    for k, (cls, name, cap, admin_code, xy) in enumerate(items, start=1):
        fac.rows.append((f"TL-F{k:05d}", REGION_ID, str(cls), name, cap, admin_code,
                         proj.to_lonlat(Point(xy)), SNAPSHOT_FROM, None, source))
    return fac


def _projects(
    rng: np.random.Generator, n: int, v_code: list[str], v_town: list[str], v_name: list[str], v_xy: np.ndarray,
    town_seats: dict[str, np.ndarray], hh: _HouseholdMeta, proj: _Projector, source: str,
) -> tuple[Table, Table]:
    project = Table(("project_id", "region_id", "name", "type", "subtype", "geom", "admin_code", "start_date",
                     "end_date", "status", "budget_total", "budget_by_level", "capacity", "service_radius_km",
                     "addresses_needs", "valid_from", "valid_to", "source"))
    ben = Table(("project_id", "hh_id", "year", "benefit_type", "amount"))
    types = list(_PROJECT_SPEC)
    counts = _allot(n, np.array([_PROJECT_SPEC[t][0] for t in types]))
    poor_per_village = np.bincount(hh.village_idx, minlength=len(v_code)).astype(float)
    p_village = (poor_per_village + 0.5) / (poor_per_village + 0.5).sum()
    tree = cKDTree(hh.xy)
    taken: dict[str, int] = {}
    serial = 0
    for t, k in zip(types, counts, strict=True):
        share, (cap_lo, cap_hi), radius, budget_med, benefit = _PROJECT_SPEC[t]
        needs = sorted(str(x) for x in PROJECT_TYPE_NEEDS[t])
        for _ in range(int(k)):
            serial += 1
            vi = int(rng.choice(len(v_code), p=p_village))
            start = dt.date(int(rng.integers(2015, 2021)), int(rng.integers(1, 13)), 1)
            end = start + dt.timedelta(days=int(rng.integers(120, 1100)))
            status = _pick(rng, list(ProjectStatus), (0.06, 0.1, 0.5, 0.32, 0.02))
            if status == ProjectStatus.planned:
                start = dt.date(REFERENCE_YEAR + 1, int(rng.integers(1, 13)), 1)
                end = start + dt.timedelta(days=int(rng.integers(180, 900)))
            budget = float(rng.lognormal(math.log(budget_med), 0.5))
            shares = rng.dirichlet((4, 3, 1, 2))
            levels = {lvl: float(_money(budget * s)) for lvl, s in zip(("central", "provincial", "municipal", "county"),
                                                                        shares, strict=True)}
            capacity = int(rng.integers(cap_lo, cap_hi + 1))
            site = v_xy[vi] + rng.normal(0, 300, size=2)
            if t == ProjectType.infrastructure_road:
                geom: BaseGeometry = shapely.LineString([v_xy[vi], town_seats[v_town[vi]]])
                if geom.length < 50:
                    geom = Point(site)
                admin_code = v_town[vi]
            else:
                geom = Point(site)
                admin_code = v_code[vi]
            pid = f"TL-{start.year}-{serial:04d}"
            project.rows.append((
                pid, REGION_ID, f"{v_name[vi]}{_PROJECT_LABEL[t]}项目", str(t), None, proj.to_lonlat(geom),
                admin_code, start, end, str(status), _money(budget), levels, capacity, _dec(radius), needs,
                start, None, source,
            ))
            if status in (ProjectStatus.planned, ProjectStatus.cancelled):
                continue
            # beneficiaries: households in reach whose recorded needs the project addresses
            cand = tree.query_ball_point(site, r=radius * 1000.0)
            eligible = sorted(i for i in cand if hh.needs[i] & set(needs) and taken.get(hh.ids[i], 0) < 3)
            if not eligible:
                continue
            m = min(len(eligible), int(capacity * rng.uniform(0.4, 1.0)))
            pick = np.sort(rng.choice(len(eligible), size=m, replace=False))
            for pi in pick:
                i = eligible[int(pi)]
                taken[hh.ids[i]] = taken.get(hh.ids[i], 0) + 1
                amount = _money(rng.lognormal(math.log(1500), 0.6)) if benefit != "service" else None
                ben.rows.append((pid, hh.ids[i], max(start.year, 2015), benefit, amount))
    return project, ben

