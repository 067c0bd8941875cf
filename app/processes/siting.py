"""Where projects should land (Stage 1): spatial autocorrelation and hot spots of the poor population, projects
against poor density, accessibility, coverage gaps and location-allocation.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import shapely
from pydantic import Field, model_validator

from app.analysis import accessibility as acc
from app.analysis import autocorrelation as ac
from app.analysis import gaps as gp
from app.analysis import location as loc
from app.analysis.spatial import (
    AnalysisError,
    geodesic_area_km2,
    geoms_to_metric,
    is_polygonal,
    metric_crs,
    representative_lonlat,
    to_metric,
)
from app.processes import styles as st
from app.processes.base import (
    ANALYSIS_CRS_HELP,
    LAYER_SCHEMA,
    NETWORK_COSTS,
    NUMBER,
    NUMBER_OR_NULL,
    PROVENANCE,
    CostChoice,
    Inference,
    LayerOut,
    Outcome,
    OutputSpec,
    Process,
    Strict,
    Weights,
    as_floats,
    costs,
    metric_xy,
    network_summary,
    of_types,
    snap_columns,
    spatial_weights,
)
from app.processes.data import DataInput, Units

# --------------------------------------------------------------------------------- autocorrelation
# Poor persons in the demo's villages whose counts are published, with 8 nearest neighbours (example inputs)
POOR_PERSONS_PER_VILLAGE = {"features": {"href": "/collections/village-poverty/items?filter=poor_persons IS NOT NULL"},
                            "variable": "poor_persons", "weights": {"type": "knn", "k": 8}, "permutations": 999,
                            "seed": 1}

class UnitVariableInputs(Inference):
    """One variable over a set of units, with spatial weights (autocorrelation, hot spots)."""

    features: DataInput
    variable: str = Field(description="Numeric property to test (e.g. poor_persons); the event count when rate_base "
                          "is given")
    rate_base: str | None = Field(None, description="Population at risk: test the empirical-Bayes rate "
                                  "variable/rate_base (Assunção–Reis) instead of the raw variable")
    weights: Weights = Field(default_factory=Weights)


class AutocorrelationInputs(UnitVariableInputs):
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of the local statistics")
    fdr: bool = Field(False, description="Bound the false discovery rate (esda.fdr) instead of alpha per unit")


WEIGHTS_OUT = OutputSpec("Weights used", "Type, neighbours, islands attached", {"type": "object"})


def _unit_variable(inputs: UnitVariableInputs, data: dict[str, Units]) -> tuple[Units, np.ndarray, Any, dict]:
    """The units, the variable (or its empirical-Bayes rate) and the spatial weights with their description."""
    units = data["features"]
    y = units.column(inputs.variable)
    if inputs.rate_base:
        y = ac.eb_rate(y, units.column(inputs.rate_base))
    w, wdesc = spatial_weights(units, inputs.weights, inputs.analysis_crs)
    return units, y, w, wdesc


class SpatialAutocorrelation(Process):
    id = "spatial-autocorrelation"
    method = ("global-moran", "lisa", "eb-rate", "weights")
    example_summary = "Poor persons per village of the demo (villages whose counts are published)"
    example = POOR_PERSONS_PER_VILLAGE
    title = "Spatial autocorrelation (global and local Moran's I, Geary's C)"
    description = ("Is the poor population clustered? Global Moran's I with normal and permutation inference, "
                   "Geary's C, and local Moran (LISA) clusters HH/LH/LL/HL with pseudo p-values (esda).")
    keywords = ("Moran", "LISA", "Geary", "Stage 1")
    Inputs = AutocorrelationInputs
    outputs = {
        "global": OutputSpec("Global statistics", "moran_i, expected_i, z_norm, p_norm, p_sim, geary_c",
                             {"type": "object", "properties": {k: NUMBER_OR_NULL for k in (
                                 "moran_i", "expected_i", "z_norm", "p_norm", "p_sim", "geary_c", "geary_p_sim")}}),
        "features": OutputSpec("Local Moran (LISA)", "Per feature: local_i, quadrant, p_sim, significant",
                               LAYER_SCHEMA, layer=True, style=st.LISA),
        "weights": WEIGHTS_OUT,
        "provenance": PROVENANCE,
    }
    data_inputs = ("features",)

    def run(self, inputs: AutocorrelationInputs, data: dict[str, Units], threads: int) -> Outcome:
        units, y, w, wdesc = _unit_variable(inputs, data)
        g = ac.global_autocorrelation(y, w, inputs.permutations, inputs.seed)
        lo = ac.local_moran(y, w, inputs.permutations, inputs.seed, inputs.alpha, inputs.fdr)
        layer = LayerOut(
            "Local Moran (LISA)", f"LISA of {inputs.variable}", units.ids, units.geoms, {
                inputs.variable: ("double precision", as_floats(y)),
                "local_i": ("double precision", as_floats(lo.local_i)),
                "quadrant": ("text", lo.quadrant),
                "p_sim": ("double precision", as_floats(lo.p_sim)),
                "significant": ("boolean", [bool(v) for v in lo.significant]),
                "cluster": ("text", [q if s else "not-significant" for q, s in zip(lo.quadrant, lo.significant,
                                                                                  strict=True)]),
            })
        return Outcome({"global": {"moran_i": g.moran_i, "expected_i": g.expected_i, "z_norm": g.z_norm,
                                   "p_norm": g.p_norm, "p_sim": g.p_sim, "geary_c": g.geary_c,
                                   "geary_p_sim": g.geary_p_sim, "n": len(y)},
                        "weights": wdesc}, {"features": layer})


# --------------------------------------------------------------------------------- hotspots
class HotspotInputs(UnitVariableInputs):
    """Gi* needs a non-negative variable."""


class Hotspots(Process):
    id = "hotspots"
    method = ("gi-star", "eb-rate", "weights")
    example_summary = "Hot and cold spots of poor persons per village of the demo"
    example = POOR_PERSONS_PER_VILLAGE
    title = "Hot and cold spots (Getis-Ord Gi*)"
    description = ("Getis-Ord Gi* z-scores with binary weights, the unit itself included (esda.G_Local star=True); "
                   "classes hot/cold at 99, 95 and 90 % by the normal z (|z| ≥ 2.576, 1.960, 1.645).")
    keywords = ("Getis-Ord", "Gi*", "hot spots", "Stage 1")
    Inputs = HotspotInputs
    outputs = {
        "summary": OutputSpec("Counts by class", "Features per class", {"type": "object"}),
        "features": OutputSpec("Gi* per feature", "gi_z, p_norm, p_sim, class", LAYER_SCHEMA, layer=True,
                               style=st.GI_STAR),
        "weights": WEIGHTS_OUT,
        "provenance": PROVENANCE,
    }
    data_inputs = ("features",)

    def run(self, inputs: HotspotInputs, data: dict[str, Units], threads: int) -> Outcome:
        units, y, w, wdesc = _unit_variable(inputs, data)
        r = ac.getis_ord(y, w, inputs.permutations, inputs.seed)
        counts: dict[str, int] = {}
        for c in r.classes:
            counts[c] = counts.get(c, 0) + 1
        layer = LayerOut("Getis-Ord Gi*", f"Gi* of {inputs.variable}", units.ids, units.geoms, {
            inputs.variable: ("double precision", as_floats(y)),
            "gi_z": ("double precision", as_floats(r.gi_z)),
            "p_norm": ("double precision", as_floats(r.p_norm)),
            "p_sim": ("double precision", as_floats(r.p_sim)),
            "class": ("text", r.classes),
        })
        return Outcome({"summary": counts, "weights": wdesc}, {"features": layer})


# --------------------------------------------------------------------------------- bivariate
class CoverageCorrelationInputs(Inference):
    units: DataInput = Field(description="Areal or point units with the poor population (e.g. village-poverty)")
    poor_variable: str = Field("poor_persons", description="Property with the poor population of a unit")
    projects: DataInput = Field(description="Projects (points or shapes), e.g. /collections/projects/items")
    capacity_property: str | None = Field(None, description="Sum this property (e.g. capacity) instead of counting")
    project_types: list[str] | None = Field(None, description="Keep projects whose type_property is one of these")
    type_property: str = "type"
    weights: Weights = Field(default_factory=Weights)
    alpha: float = Field(0.05, gt=0, lt=1)
    fdr: bool = False


def unit_areas_km2(units: Units, xy: np.ndarray, crs: Any) -> tuple[np.ndarray, str]:
    """Polygon areas on the ellipsoid; for points, the area of their Voronoi cells within the hull of the
    points grown by the median nearest-neighbour distance (each point's catchment)."""
    geoms = units.need_geometry()
    if is_polygonal(geoms):
        return geodesic_area_km2(geoms), "polygon area"
    from scipy.spatial import cKDTree

    pts = shapely.points(xy)
    d, _ = cKDTree(xy).query(xy, k=2)
    grow = float(np.median(d[:, 1])) if len(xy) > 1 else 1000.0
    hull = shapely.buffer(shapely.convex_hull(shapely.multipoints(xy)), grow)
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(xy), extend_to=hull))
    tree = shapely.STRtree(cells)
    which = tree.query(pts, predicate="within")
    area = np.zeros(len(xy))
    area[which[0]] = shapely.area(shapely.intersection(cells[which[1]], hull)) / 1e6
    return area, "Voronoi cell of the point within the points' hull"


def assign_to_units(units: Units, unit_xy: np.ndarray, crs: Any, projects: Units) -> np.ndarray:
    """The unit each project falls in (polygons) or is nearest to (points); -1 outside every polygon."""
    from scipy.spatial import cKDTree

    plonlat = representative_lonlat(projects.need_geometry())
    pxy = to_metric(plonlat, crs)
    geoms = units.need_geometry()
    if is_polygonal(geoms):
        tree = shapely.STRtree(geoms_to_metric(geoms, crs))
        hits = tree.query(shapely.points(pxy), predicate="intersects")
        out = np.full(len(pxy), -1)
        out[hits[0][::-1]] = hits[1][::-1]  # first hit wins
        return out
    return cKDTree(unit_xy).query(pxy, k=1)[1]


class ProjectCoverageCorrelation(Process):
    id = "project-coverage-correlation"
    method = ("bivariate", "weights")
    example_summary = "Poor-population density against project capacity per km² in the demo"
    example = {"units": {"href": "/collections/village-poverty/items?filter=poor_persons IS NOT NULL"},
               "projects": {"href": "/collections/projects/items"},
               "capacity_property": "capacity"}
    title = "Projects against the poor population (bivariate Moran)"
    description = ("Bivariate Moran's I between the poor-population density of units and the density (count or "
                   "capacity per km²) of projects around them (esda.Moran_BV, Moran_Local_BV). Candidate siting "
                   "zones: significant HL units — high poverty surrounded by few projects.")
    keywords = ("bivariate Moran", "siting", "Stage 1")
    Inputs = CoverageCorrelationInputs
    outputs = {
        "global": OutputSpec("Global bivariate Moran", "i_b, p_sim, z_sim", {"type": "object"}),
        "features": OutputSpec("Local bivariate clusters", "poor_density, project_density, local_i, quadrant, "
                               "p_sim, significant, cluster, candidate_zone", LAYER_SCHEMA, layer=True,
                               style=st.BIVARIATE),
        "candidate_zones": OutputSpec("Candidate siting zones", "Count, ids and poor population of the significant "
                                      "high-poverty / low-project units", {"type": "object"}),
        "weights": WEIGHTS_OUT,
        "provenance": PROVENANCE,
    }
    data_inputs = ("units", "projects")

    def run(self, inputs: CoverageCorrelationInputs, data: dict[str, Units], threads: int) -> Outcome:
        units, projects = data["units"], data["projects"]
        projects = of_types(projects, inputs.project_types, inputs.type_property)
        poor = units.column(inputs.poor_variable)
        _, xy, crs = metric_xy(units, inputs.analysis_crs)
        area, area_method = unit_areas_km2(units, xy, crs)
        if (area <= 0).any():
            raise AnalysisError("Some units have no area; give polygons or distinct points.")
        measure = np.zeros(len(units))
        outside = 0
        if len(projects):
            which = assign_to_units(units, xy, crs, projects)
            amount = projects.column(inputs.capacity_property) if inputs.capacity_property else np.ones(len(projects))
            ok = which >= 0
            outside = int((~ok).sum())
            np.add.at(measure, which[ok], amount[ok])
        x = poor / area
        y = measure / area
        w, wdesc = spatial_weights(units, inputs.weights, inputs.analysis_crs, (xy, crs))
        r = ac.bivariate(x, y, w, inputs.permutations, inputs.seed, inputs.alpha, inputs.fdr)
        zone = np.array([q == "HL" for q in r.quadrant]) & r.significant
        layer = LayerOut("Poverty against projects (bivariate LISA)", "Local bivariate Moran of poor density and "
                         "the lag of project density", units.ids, units.geoms, {
                             inputs.poor_variable: ("double precision", as_floats(poor)),
                             "area_km2": ("double precision", as_floats(area)),
                             "poor_density": ("double precision", as_floats(x)),
                             "projects": ("double precision", as_floats(measure)),
                             "project_density": ("double precision", as_floats(y)),
                             "local_i": ("double precision", as_floats(r.local_i)),
                             "quadrant": ("text", r.quadrant),
                             "p_sim": ("double precision", as_floats(r.p_sim_local)),
                             "significant": ("boolean", [bool(v) for v in r.significant]),
                             "cluster": ("text", [q if sig else "not-significant" for q, sig in zip(
                                 r.quadrant, r.significant, strict=True)]),
                             "candidate_zone": ("boolean", [bool(v) for v in zone]),
                         })
        total = float(poor.sum())
        zones = {"count": int(zone.sum()), "ids": [units.ids[i] for i in np.flatnonzero(zone)],
                 "poor_population": float(poor[zone].sum()),
                 "poor_share": float(poor[zone].sum() / total) if total else 0.0}
        return Outcome({"global": {"i_b": r.i_b, "p_sim": r.p_sim, "z_sim": r.z_sim, "n": len(units),
                                   "projects_used": len(projects) - outside, "projects_outside_units": outside,
                                   "area_method": area_method},
                        "candidate_zones": zones, "weights": wdesc}, {"features": layer})


# --------------------------------------------------------------------------------- accessibility
class Step(Strict):
    upper: float = Field(gt=0, description="Upper bound of the zone (inclusive), in cost units")
    weight: float = Field(ge=0, le=1)


CostMatrix = list[list[float | None]]


class AccessibilityInputs(CostChoice):
    demand: DataInput
    demand_weight: str = Field("poor_persons", description="Property with the demand (e.g. poor persons)")
    supply: DataInput
    supply_capacity: str = Field("capacity", description="Property with the capacity of a supply site")
    method: Literal["2sfca", "e2sfca", "gaussian"] = "2sfca"
    max_cost: float = Field(30.0, gt=0, description="Catchment size d0 (km; minutes on the network; or the cost "
                            "matrix's unit)")
    steps: list[Step] | None = Field(None, description="E2SFCA zones; default Luo & Qi 1/0.68/0.22 over thirds")
    cost_matrix: CostMatrix | None = Field(None, description="Demand × supply costs (null = unreachable); default "
                                           "great-circle km")


class Accessibility(Process):
    id = "accessibility"
    method = ("accessibility", "distances")
    example_summary = "Hospital beds within 30 km of the poor population (E2SFCA) in the demo"
    example = {"demand": {"href": "/collections/village-poverty/items?filter=poor_persons IS NOT NULL"},
               "demand_weight": "poor_persons",
               "supply": {"href": "/collections/facilities/items?class=hospital"},
               "supply_capacity": "capacity",
               "method": "e2sfca",
               "max_cost": 30}
    title = "Accessibility (2SFCA, enhanced 2SFCA, Gaussian)"
    description = ("Two-step floating catchment area accessibility of each demand unit to supply sites "
                   "(access package): R_j = S_j / Σ_k P_k W(d_kj), A_i = Σ_j W(d_ij) R_j.")
    keywords = ("2SFCA", "accessibility", "Stage 1")
    Inputs = AccessibilityInputs
    outputs = {
        "features": OutputSpec("Accessibility per demand unit", "access, demand weight", LAYER_SCHEMA, layer=True,
                               style=st.graduated("access", "Accessibility", st.YLGNBU)),
        "supply": OutputSpec("Supply-to-demand ratio per site", "ratio R_j", LAYER_SCHEMA, layer=True,
                             style=st.graduated("ratio", "Supply-to-demand ratio", st.PURPLES)),
        "summary": OutputSpec("Summary", "mean/min/max access, demand with zero access", {"type": "object"}),
        "provenance": PROVENANCE,
    }
    data_inputs = ("demand", "supply")
    network_between = ("demand", "supply")

    def run(self, inputs: AccessibilityInputs, data: dict[str, Units], threads: int) -> Outcome:
        demand, supply = data["demand"], data["supply"]
        cost, cost_kind = costs(demand, supply, inputs.cost_matrix, data)
        p = demand.column(inputs.demand_weight)
        s = supply.column(inputs.supply_capacity)
        steps = [(st.upper, st.weight) for st in inputs.steps] if inputs.steps else None
        a, ratio = acc.accessibility(p, s, cost, inputs.method, inputs.max_cost, steps)
        zero = a <= 0
        total = float(p.sum())
        return Outcome(
            {"summary": {"method": inputs.method, "max_cost": inputs.max_cost, "cost": cost_kind,
                         "network": network_summary(data),
                         "mean_access": float(a.mean()) if len(a) else None,
                         "weighted_mean_access": float((a * p).sum() / total) if total else None,
                         "min_access": float(a.min()) if len(a) else None,
                         "max_access": float(a.max()) if len(a) else None,
                         "zero_access_units": int(zero.sum()), "zero_access_weight": float(p[zero].sum())}},
            {"features": LayerOut("Accessibility", f"{inputs.method} accessibility", demand.ids, demand.geoms, {
                inputs.demand_weight: ("double precision", as_floats(p)),
                "access": ("double precision", as_floats(a)), **snap_columns(data, 0)}),
             "supply": LayerOut("Supply-to-demand ratio", "R_j of each supply site", supply.ids, supply.geoms, {
                 inputs.supply_capacity: ("double precision", as_floats(s)),
                 "ratio": ("double precision", as_floats(ratio)), **snap_columns(data, 1)})})


# --------------------------------------------------------------------------------- coverage gaps
class GapInputs(CostChoice):
    demand: DataInput
    demand_weight: str = Field("poor_persons", description="Property with the (poor) population of a unit")
    supply: DataInput = Field(description="Projects or facilities, e.g. /collections/facilities/items")
    type_property: str | None = Field("class", description="Property with the supply type (class of a facility, "
                                      "type of a project); null: one type")
    types: list[str] | None = Field(None, description="Types to analyse; default every type present")
    threshold: float | None = Field(None, gt=0, description="Threshold for every type (km or cost units)")
    thresholds: dict[str, float] | None = Field(None, description="Threshold per type, e.g. {'clinic': 10}")
    cost_matrix: CostMatrix | None = Field(None, description="Demand × supply costs; default great-circle km")

    @model_validator(mode="after")
    def _some_threshold(self) -> GapInputs:
        if self.threshold is None and not self.thresholds:
            raise ValueError("give threshold or thresholds")
        if self.thresholds and any(v <= 0 for v in self.thresholds.values()):
            raise ValueError("thresholds must be positive")
        return self


class CoverageGaps(Process):
    id = "coverage-gaps"
    method = ("coverage-gaps", "distances")
    example_summary = "Villages farther than 3 km from a clinic, 5 km from a primary school or 10 km from a market"
    example = {"demand": {"href": "/collections/village-poverty/items?filter=poor_persons IS NOT NULL"},
               "demand_weight": "poor_persons",
               "supply": {"href": "/collections/facilities/items?filter=class IN ('clinic', 'school_primary', "
                                  "'market')"},
               "type_property": "class",
               "thresholds": {"clinic": 3, "school_primary": 5, "market": 10}}
    title = "Coverage gaps by project or facility type"
    description = ("Demand units whose nearest supply of a type is farther than the type's threshold, with the "
                   "poor population affected and its share (KD-tree on great-circle distance).")
    keywords = ("gaps", "coverage", "Stage 1")
    Inputs = GapInputs
    outputs = {
        "summary": OutputSpec("Gaps per type", "threshold, units in the gap, population affected and share",
                              {"type": "object"}),
        "gaps": OutputSpec("Units in a gap", "One feature per (unit, type) in the gap", LAYER_SCHEMA, layer=True,
                           style=st.distinct("type", "Type of supply out of reach")),
        "cost": OutputSpec("Cost", "What distances were measured in (great-circle km, network minutes, a cost "
                           "matrix) and, on a network, its version, mode, speeds and the points not snapped",
                           {"type": "object"}),
        "provenance": PROVENANCE,
    }
    data_inputs = ("demand", "supply")
    network_between = ("demand", "supply")

    def run(self, inputs: GapInputs, data: dict[str, Units], threads: int) -> Outcome:
        demand, supply = data["demand"], data["supply"]
        weight = demand.column(inputs.demand_weight)
        stypes = supply.text(inputs.type_property) if inputs.type_property else ["all"] * len(supply)
        wanted = inputs.types or sorted({t for t in stypes if t is not None} | set(inputs.thresholds or {}))
        cost = None
        if inputs.cost_matrix is not None or NETWORK_COSTS in data:
            cost, cost_kind = costs(demand, supply, inputs.cost_matrix, data)
        else:
            cost_kind = "great-circle km"
            dl = representative_lonlat(demand.need_geometry())
            sl = representative_lonlat(supply.need_geometry()) if len(supply) else np.zeros((0, 2))
        summary: dict[str, Any] = {}
        ids: list[str] = []
        geoms: list[Any] = []
        cols: dict[str, list[Any]] = {"unit_id": [], "type": [], "nearest": [], "nearest_id": [], "threshold": [],
                                      inputs.demand_weight: []}
        for t in wanted:
            limit = (inputs.thresholds or {}).get(t, inputs.threshold)
            if limit is None:
                raise AnalysisError(f"No threshold for type {t!r}.")
            members = np.array([s == t for s in stypes], dtype=bool)
            idx = np.flatnonzero(members)
            if cost is not None:
                near, nidx = gp.nearest_from_matrix(cost[:, idx])
            else:
                near, nidx = gp.nearest_km(dl, sl[idx])
            r = gp.coverage_gap(near, nidx, weight, limit)
            summary[t] = {"threshold": limit, "supply_sites": int(len(idx)), "units": len(demand),
                          "units_in_gap": int(r.in_gap.sum()), "population_affected": r.affected,
                          "population_total": r.total, "share": r.share}
            for i in np.flatnonzero(r.in_gap):
                ids.append(f"{demand.ids[i]}:{t}")
                if demand.geoms is not None:
                    geoms.append(demand.geoms[i])
                cols["unit_id"].append(demand.ids[i])
                cols["type"].append(t)
                cols["nearest"].append(None if not np.isfinite(near[i]) else float(near[i]))
                cols["nearest_id"].append(supply.ids[idx[nidx[i]]] if nidx[i] >= 0 else None)
                cols["threshold"].append(float(limit))
                cols[inputs.demand_weight].append(float(weight[i]))
        types = {"unit_id": "text", "type": "text", "nearest": "double precision", "nearest_id": "text",
                 "threshold": "double precision", inputs.demand_weight: "double precision"}
        where = {u: i for i, u in enumerate(demand.ids)}
        layer = LayerOut("Coverage gaps", "Demand units beyond the threshold of a type", ids,
                         np.array(geoms, dtype=object) if demand.geoms is not None else None,
                         {**{k: (types[k], v) for k, v in cols.items()},
                          **snap_columns(data, 0, np.array([where[u] for u in cols["unit_id"]], dtype=int))},
                         unit_column="unit_id")
        return Outcome({"summary": summary, "cost": {"kind": cost_kind, "network": network_summary(data)}},
                       {"gaps": layer})


# --------------------------------------------------------------------------------- location-allocation
class H3Grid(Strict):
    """Candidate sites at the centres of the H3 cells (resolution 5–10) covering the demand's hull."""

    h3_resolution: int = Field(ge=5, le=10)
    buffer_km: float = Field(0.0, ge=0, le=100, description="Grow the hull by this much first")


class LocationInputs(CostChoice):
    model: Literal["lscp", "mclp", "pmedian", "pcenter"]
    demand: DataInput
    demand_weight: str = Field("poor_persons", description="Property with the demand weight a_i")
    candidates: DataInput | H3Grid = Field(description="Candidate sites (features or table), or an H3 grid")
    existing: DataInput | None = Field(None, description="Sites that stay open (they count towards p)")
    p: int | None = Field(None, ge=1, le=10_000, description="Sites to open in all, existing included (mclp, pmedian, "
                          "pcenter)")
    service_radius: float | None = Field(None, gt=0, description="Coverage radius (lscp, mclp; optional for the "
                                         "coverage figure of pmedian/pcenter)")
    cost_matrix: CostMatrix | None = Field(None, description="Demand × (candidates then existing) costs; default "
                                           "great-circle km")
    time_limit_s: float = Field(60.0, gt=0, le=3600, description="Solver time limit")
    analysis_crs: int | None = Field(None, description=ANALYSIS_CRS_HELP + " (the hull of an H3 grid)")
    mip_gap: float = Field(0.0, ge=0, le=0.5, description="Relative gap at which p-median may stop")

    @model_validator(mode="after")
    def _model_needs(self) -> LocationInputs:
        if self.model in ("lscp", "mclp") and self.service_radius is None:
            raise ValueError(f"{self.model} needs service_radius")
        if self.model != "lscp" and self.p is None:
            raise ValueError(f"{self.model} needs p")
        if isinstance(self.candidates, H3Grid) and self.cost_matrix is not None:
            raise ValueError("a cost matrix cannot refer to an H3 grid; give candidate features")
        return self


def h3_candidates(demand: Units, grid: H3Grid, epsg: int | None = None) -> Units:
    import h3

    lonlat = representative_lonlat(demand.need_geometry())
    crs = metric_crs(lonlat, epsg)
    hull = shapely.convex_hull(shapely.multipoints(to_metric(lonlat, crs)))
    hull = shapely.buffer(hull, max(grid.buffer_km * 1000.0, 1.0))
    from pyproj import Transformer

    back = Transformer.from_crs(crs, 4326, always_xy=True)
    ring = np.column_stack(back.transform(*np.asarray(hull.exterior.coords).T))
    cells = sorted(h3.polygon_to_cells(h3.LatLngPoly([(lat, lon) for lon, lat in ring]), grid.h3_resolution))
    cells = sorted(set(cells) | {h3.latlng_to_cell(lat, lon, grid.h3_resolution) for lon, lat in lonlat})
    if len(cells) > 20_000:
        raise AnalysisError(f"The H3 grid has {len(cells)} cells; use a coarser resolution.")
    centres = [h3.cell_to_latlng(c) for c in cells]
    geoms = np.array([shapely.Point(lon, lat) for lat, lon in centres], dtype=object)
    return Units("candidates", cells, geoms, [{"h3": c} for c in cells], f"h3 res {grid.h3_resolution}")


class LocationAllocation(Process):
    id = "location-allocation"
    method = ("location-allocation", "distances")
    example_summary = "Ten sites on an H3 grid covering the most poor persons within 10 km (MCLP)"
    example = {"model": "mclp",
               "demand": {"href": "/collections/village-poverty/items?filter=poor_persons IS NOT NULL"},
               "demand_weight": "poor_persons",
               "candidates": {"h3_resolution": 6},
               "p": 10,
               "service_radius": 10,
               "time_limit_s": 30}
    title = "Location-allocation (LSCP, MCLP, p-median, p-center)"
    description = ("Where should new projects go? Set cover, maximal cover, p-median and p-center "
                   "solved with PuLP/CBC; p-median by fast interchange with a Lagrangian lower bound at scale. "
                   "Reports the status (optimal or feasible) and the proven gap; coverage is weighted by demand.")
    keywords = ("location-allocation", "MCLP", "p-median", "Stage 1")
    Inputs = LocationInputs
    outputs = {
        "selected": OutputSpec("Selected sites", "Open sites (existing or new), demand served", LAYER_SCHEMA,
                               layer=True, style=st.SITE_KIND),
        "assignment": OutputSpec("Assignment", "Demand units with the site serving them and the cost",
                                 LAYER_SCHEMA, layer=True, style=st.COVERED),
        "objective": OutputSpec("Objective", "Sites (lscp), weight covered (mclp), weighted cost (pmedian), "
                                "largest cost (pcenter)", NUMBER),
        "coverage_weighted_pct": OutputSpec("Weighted coverage (%)", "Share of demand weight within the service "
                                            "radius of an open site", {"type": ["number", "null"]}),
        "status": OutputSpec("Status", "optimal or feasible", {"type": "string", "enum": ["optimal", "feasible"]}),
        "mip_gap": OutputSpec("Proven gap", "(upper − lower) / |upper|", {"type": ["number", "null"]}),
        "bounds": OutputSpec("Bounds", "lower and upper bound, notes of the solver", {"type": "object"}),
        "provenance": PROVENANCE,
    }
    data_inputs = ("demand", "candidates", "existing")
    @staticmethod
    def _sites(inputs: LocationInputs, data: dict[str, Units]) -> tuple[Units, Units, Units | None]:
        """(all sites: the candidates then the existing ones, the candidates, the existing)."""
        cands = data["candidates"] if "candidates" in data else \
            h3_candidates(data["demand"], inputs.candidates, inputs.analysis_crs)
        existing = data.get("existing")
        sites_ids = list(cands.ids) + ([f"existing:{i}" for i in existing.ids] if existing else [])
        site_geoms = None
        if cands.geoms is not None and (existing is None or existing.geoms is not None):
            site_geoms = np.concatenate([cands.geoms] + ([existing.geoms] if existing else []))
        return Units("sites", sites_ids, site_geoms, cands.props + (existing.props if existing else []), ""), \
            cands, existing

    def network_points(self, inputs: LocationInputs, data: dict[str, Units]) -> tuple[Units, Units]:
        return data["demand"], self._sites(inputs, data)[0]

    def run(self, inputs: LocationInputs, data: dict[str, Units], threads: int) -> Outcome:
        demand = data["demand"]
        all_sites, cands, existing = self._sites(inputs, data)
        sites_ids, site_geoms = all_sites.ids, all_sites.geoms
        kind = ["candidate"] * len(cands) + ["existing"] * (len(existing) if existing else 0)
        cost, cost_kind = costs(demand, all_sites, inputs.cost_matrix, data)
        a = demand.column(inputs.demand_weight)
        fixed = list(range(len(cands), len(sites_ids)))
        limit = inputs.time_limit_s
        if inputs.model == "mclp":
            r = loc.mclp(cost, a, inputs.p or 0, inputs.service_radius or 0.0, fixed, limit, threads)
        elif inputs.model == "lscp":
            r = loc.lscp(cost, a, inputs.service_radius or 0.0, fixed, limit, threads)
        elif inputs.model == "pmedian":
            r = loc.pmedian(cost, a, inputs.p or 0, fixed, limit, threads, inputs.service_radius, inputs.mip_gap)
        else:
            r = loc.pcenter(cost, a, inputs.p or 0, fixed, limit, threads, inputs.service_radius)
        served = np.zeros(len(sites_ids))
        count = np.zeros(len(sites_ids), dtype=int)
        ok = r.assignment >= 0
        np.add.at(served, r.assignment[ok], a[ok])
        np.add.at(count, r.assignment[ok], 1)
        sel = r.selected
        selected = LayerOut("Selected sites", f"{inputs.model} solution", [sites_ids[j] for j in sel],
                            None if site_geoms is None else site_geoms[sel], {
                                "kind": ("text", [kind[j] for j in sel]),
                                "demand_units": ("integer", [int(count[j]) for j in sel]),
                                "demand_served": ("double precision", [float(served[j]) for j in sel]),
                            })
        assignment = LayerOut("Assignment", "Demand units and the site serving them", demand.ids, demand.geoms, {
            inputs.demand_weight: ("double precision", as_floats(a)),
            "site_id": ("text", [sites_ids[j] if j >= 0 else None for j in r.assignment]),
            "cost": ("double precision", as_floats(r.cost_to_site)),
            "covered": ("boolean", [bool(v) for v in (r.covered if r.covered is not None else ok)]),
            **snap_columns(data, 0),
        })
        return Outcome({
            "objective": r.objective, "coverage_weighted_pct": r.coverage_weighted_pct, "status": r.status,
            "mip_gap": r.mip_gap,
            "bounds": {"lower": r.lower_bound, "upper": r.upper_bound, "solver_seconds": round(r.solver_seconds, 3),
                       "candidates": len(cands), "existing": len(fixed), "notes": r.notes,
                       "cost": cost_kind, "network": network_summary(data)},
        }, {"selected": selected, "assignment": assignment})




SITING: tuple[Process, ...] = (SpatialAutocorrelation(), Hotspots(), ProjectCoverageCorrelation(), Accessibility(),
                                CoverageGaps(), LocationAllocation())
