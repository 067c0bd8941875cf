"""What households and villages need (Stage 2): the needs assessment and matching needs to projects.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
import shapely
from pydantic import Field
from pydantic import Strict as PydStrict

from app.analysis import matching as mt
from app.analysis import needs as nd
from app.analysis.spatial import (
    AnalysisError,
    representative_lonlat,
)
from app.models.codes import Cause, HouseholdStatus, Need, ProjectType
from app.processes import styles as st
from app.processes.base import (
    LAYER_SCHEMA,
    NETWORK_COSTS,
    OBJECT,
    PROVENANCE,
    CostChoice,
    HouseholdsInput,
    LayerOut,
    Outcome,
    OutputSpec,
    Process,
    Strict,
    as_floats,
    costs,
    group_labels,
    group_layer,
    network_summary,
    of_types,
    split_list,
)
from app.processes.data import DataInput, Units


# --------------------------------------------------------------------------------- needs-assessment
class CauseRow(Strict):
    cause: Cause = Field(strict=False)  # code lists arrive as their JSON strings
    need: Need | None = Field(None, strict=False)
    project_type: ProjectType | None = Field(None, strict=False)


class HealthWeights(Strict):
    illness: float = Field(0.5, ge=0, description="Weight of [any chronic or major illness]")
    uninsured: float = Field(0.3, ge=0, description="Weight of [any member uninsured]")
    clinic: float = Field(0.2, ge=0, description="Weight of the clinic-distance term")


class HouseGrades(Strict):
    A: float = Field(0.0, ge=0, le=1)
    B: float = Field(0.0, ge=0, le=1)
    C: float = Field(0.7, ge=0, le=1)
    D: float = Field(1.0, ge=0, le=1)


class RoadQuality(Strict):
    dirt: float = Field(0.0, ge=0, le=1)
    gravel: float = Field(1 / 3, ge=0, le=1)
    cement: float = Field(2 / 3, ge=0, le=1)
    asphalt: float = Field(1.0, ge=0, le=1)


class RulesInput(Strict):
    """Parameters of the scoring rules (docs/methodology.md#needs). Every one has the documented default."""

    health_weights: HealthWeights = Field(default_factory=HealthWeights, description="L_HEALTH weights")
    clinic_free_min: float = Field(30.0, ge=0, description="Minutes to a clinic that count as no need")
    clinic_span_min: float = Field(30.0, gt=0, description="Minutes beyond that over which the need reaches 1")
    travel_speed_kmh: float = Field(30.0, gt=0, description="Speed turning clinic km into minutes")
    house_grades: HouseGrades = Field(default_factory=HouseGrades, description="L_HOUSE per safety grade")
    road_quality: RoadQuality = Field(default_factory=RoadQuality, description="Road quality per access road "
                                      "(P_ROAD = 1 − this)")
    arable_target_mu: float = Field(1.4, gt=0, description="Arable mu per person at which P_LAND is 0")
    market_far_km: float = Field(20.0, gt=0, description="Distance to a market at which P_MARKET is 1")
    cause_prior: float = Field(0.5, ge=0, le=1, description="Minimum score of the needs listed for the main cause")
    threshold: float = Field(0.5, gt=0, le=1, description="A need is active from this score")
    living_index: Literal["max", "mean"] = Field("max", description="LN: max (binding constraint) or mean")
    prior_statuses: list[Annotated[HouseholdStatus, PydStrict(False)]] = Field(
        default_factory=lambda: [HouseholdStatus(x) for x in
                                 nd.NeedRules.__dataclass_fields__["prior_statuses"].default],
        description="Registry statuses whose main cause sets the priors (rows without a status always get them)")
    illness_term: Literal["without_doctor", "any"] = Field(
        "without_doctor", description="L_HEALTH's illness term: an ill member in a household without a contracted "
        "family doctor (the registry's test), or any ill member")
    labour_needs: list[Annotated[Need, PydStrict(False)]] = Field(
        default_factory=lambda: [Need(n) for n in nd.NeedRules.__dataclass_fields__["labour_needs"].default],
        description="Production needs that presuppose a member able to work: 0 for households without ordinary "
        "or skilled labour, whatever the cause ([] applies them to everyone)")

    def rules(self, poverty_line: float) -> nd.NeedRules:
        hw = self.health_weights
        return nd.NeedRules(poverty_line=poverty_line, **{
            **self.model_dump(), "health_weights": (hw.illness, hw.uninsured, hw.clinic),
            "labour_needs": tuple(str(n) for n in self.labour_needs),
            "prior_statuses": tuple(str(x) for x in self.prior_statuses)})


class NeedsInputs(Strict):
    households: HouseholdsInput = Field(description="The registry of a region ({'region': ...}), or households as "
                                        "a table or features with the fields of the scoring rules")
    poverty_line: float | None = Field(None, gt=0, description="Income line of L_FOOD; default the region's")
    rules: RulesInput = Field(default_factory=RulesInput)
    cause_table: list[CauseRow] | None = Field(None, description="Cause → need → project rows; default the "
                                               "region's table (cause_need_project)")
    aggregate_by: str = Field("village_code", description="Property grouping households (village_code, "
                              "township_code, county_code for the registry)")
    group_need_share: float = Field(0.2, gt=0, le=1, description="A group lists a need active in at least this "
                                    "share of its households")
    max_recommended: int = Field(3, ge=1, le=18)


def cause_links(rows: Units) -> nd.CauseTable:
    needs: dict[str, set[str]] = {}
    types: dict[str, list[str]] = {}
    for p in rows.props:
        c = str(p["cause"])
        if p.get("need"):
            needs.setdefault(c, set()).add(str(p["need"]))
        if p.get("project_type"):
            types.setdefault(c, [])
            if p["project_type"] not in types[c]:
                types[c].append(str(p["project_type"]))
    return nd.CauseTable(needs, types)


class NeedsAssessment(Process):
    id = "needs-assessment"
    method = ("needs", "living-needs", "production-needs", "priors", "ln",
              "recommendations", "needs-groups", "cause-table", "poverty-lines")
    example_summary = "Needs of the poor and returned households of the demo registry (analyst key)"
    example = {"households": {"region": "tieling-demo", "statuses": ["poor", "returned"]}}
    title = "Living and production-development needs of households and villages"
    description = ("Scores in [0, 1] of the living needs (L_FOOD … L_WATER) and production-development needs (P_*) "
                   "of every household by the transparent rules of the method (each score with its inputs), the "
                   "living-need index (max and mean), priors of the main cause, and project types recommended "
                   "through the region's cause → need → project table; aggregated per village (or township, "
                   "county) with released telecom indicators where present.")
    keywords = ("needs", "两不愁三保障", "Stage 2")
    Inputs = NeedsInputs
    outputs = {
        "households": OutputSpec("Needs per household", "Scores, active needs, recommended project types, "
                                 "capacity components and the inputs behind each score", LAYER_SCHEMA, layer=True,
                                 style=st.NEED_LEVELS),
        "villages": OutputSpec("Needs per village", "Mean scores, shares of households in need, capacity means, "
                               "telecom indicators, recommended types", LAYER_SCHEMA, layer=True,
                               style=st.NEED_LEVELS),
        "rules": OutputSpec("Rules", "The formula of every score with the parameters in force", OBJECT),
        "summary": OutputSpec("Summary", "Households, share in need per need, mean living-need index", OBJECT),
        "provenance": PROVENANCE,
    }
    data_inputs = ("households",)
    context_data = ("cause_table",)

    def run(self, inputs: NeedsInputs, data: dict[str, Units], threads: int) -> Outcome:
        hh = data["households"]
        line = inputs.poverty_line
        if line is None and "region" in data:
            line = float(data["region"].props[0]["poverty_line"])
        if line is None:
            raise AnalysisError("poverty_line is needed for households given inline.")
        table = cause_links(Units("cause_table", [], None, [r.model_dump(mode="json") for r in inputs.cause_table],
                                  "input") if inputs.cause_table is not None else data["cause_table"])
        rules = inputs.rules.rules(line)
        a = nd.assess(hh.props, rules, table, inputs.max_recommended)
        ln = a.index(rules.living_index)
        cols: dict[str, tuple[str, list[Any]]] = {}
        for key in ("village_code", "township_code", "county_code", "status", "main_cause"):
            if any(key in p for p in hh.props[:1]):
                cols[key] = ("text", hh.text(key))
        if inputs.aggregate_by not in cols:
            cols[inputs.aggregate_by] = ("text", hh.text(inputs.aggregate_by))
        cols["size"] = ("integer", [int(p.get("size") or 0) for p in hh.props])
        for n in nd.NEEDS:
            cols[n.lower()] = ("double precision", as_floats(a.scores[n]))
        cols["ln"] = ("double precision", as_floats(ln))
        cols["ln_max"] = ("double precision", as_floats(a.ln_max))
        cols["ln_mean"] = ("double precision", as_floats(a.ln_mean))
        cols["needs"] = ("text", [",".join(x) for x in a.active])
        cols["n_needs"] = ("integer", [len(x) for x in a.active])
        cols["recommended"] = ("text", [",".join(x) for x in a.recommended])
        for k, v in a.capacity.items():
            cols[k] = ("double precision", as_floats(v))
        cols["explain"] = ("json", a.explain)  # json, not jsonb: stored as written (half the time of jsonb)
        households = LayerOut("Needs per household", "Need scores with their inputs", hh.ids, hh.geoms,
                              cols)
        villages, summary = self._aggregate(inputs, hh, a, ln, data.get("groups"))
        return Outcome({"rules": rules.describe(), "summary": summary},
                       {"households": households, "villages": villages})

    def _aggregate(self, inputs: NeedsInputs, hh: Units, a: nd.Assessment, ln: np.ndarray,
                   groups: Units | None) -> tuple[LayerOut, dict[str, Any]]:
        labels = group_labels(hh, inputs.aggregate_by)
        keys = sorted(set(labels))
        index = {k: i for i, k in enumerate(keys)}
        g = np.array([index[x] for x in labels], dtype=int)
        count = np.bincount(g, minlength=len(keys)).astype(float)
        size = np.array([float(p.get("size") or 0) for p in hh.props])

        def mean(v: np.ndarray) -> np.ndarray:
            ok = np.isfinite(v)
            s = np.bincount(g[ok], weights=v[ok], minlength=len(keys))
            c = np.bincount(g[ok], minlength=len(keys))
            return np.divide(s, c, out=np.full(len(keys), np.nan), where=c > 0)

        active = {n: a.active_matrix[:, k] for k, n in enumerate(nd.NEEDS)}
        cols: dict[str, tuple[str, list[Any]]] = {
            "households": ("integer", [int(c) for c in count]),
            "persons": ("integer", [int(v) for v in np.bincount(g, weights=size, minlength=len(keys))]),
        }
        shares = {}
        for n in nd.NEEDS:
            cols[n.lower()] = ("double precision", as_floats(mean(a.scores[n])))
            shares[n] = np.bincount(g, weights=active[n].astype(float), minlength=len(keys)) / np.maximum(count, 1)
            cols[f"{n.lower()}_share"] = ("double precision", as_floats(shares[n]))
        in_need = a.active_matrix.any(axis=1)
        cols["households_in_need"] = ("integer", [int(v) for v in np.bincount(g, weights=in_need.astype(float),
                                                                               minlength=len(keys))])
        cols["ln"] = ("double precision", as_floats(mean(ln)))
        cols["living_security"] = ("double precision", as_floats(1.0 - mean(ln)))
        for k, v in a.capacity.items():
            cols[k] = ("double precision", as_floats(mean(v)))
        group_needs = [",".join(n for n in nd.NEEDS if shares[n][i] >= inputs.group_need_share - 1e-12)
                       for i in range(len(keys))]
        cols["needs"] = ("text", group_needs)
        tally: list[dict[str, int]] = [{} for _ in keys]
        for gi, rec in zip(g, a.recommended, strict=True):
            for t in rec:
                tally[gi][t] = tally[gi].get(t, 0) + 1
        cols["recommended"] = ("text", [",".join(t for t, _ in sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))[
            :inputs.max_recommended]) for d in tally])
        if groups is not None:
            where = {gid: i for i, gid in enumerate(groups.ids)}
            names = sorted({k for p in groups.props for k in p if k.startswith("tc_")})
            cols["name"] = ("text", [groups.props[where[k]].get("name") if k in where else None for k in keys])
            for name in names:
                vals = [groups.props[where[k]].get(name) if k in where else None for k in keys]
                cols[name] = ("double precision", [None if v is None else float(v) for v in vals])
        layer = group_layer("Needs per group", f"Household needs aggregated by {inputs.aggregate_by}", hh, labels,
                             groups, cols, keys)
        total = len(hh)
        summary = {
            "households": total, "groups": len(keys), "households_in_need": int(in_need.sum()),
            "share_in_need": {n: (float(active[n].mean()) if total else 0.0) for n in nd.NEEDS},
            "mean_living_need_index": float(ln.mean()) if total else None,
            "living_index": inputs.rules.living_index,
        }
        return layer, summary


# --------------------------------------------------------------------------------- needs-matching
class MatchingInputs(CostChoice):
    units: DataInput = Field(description="Households or villages with their needs, e.g. the 'households' or "
                             "'villages' output of needs-assessment")
    projects: DataInput = Field(description="Projects with the needs they address, capacity and service radius, "
                                "e.g. /collections/projects/items")
    needs_property: str = Field("needs", description="Needs of a unit (list or comma-separated)")
    demand_property: str | None = Field(None, description="Demand of a unit (e.g. households_in_need); default 1")
    priority_property: str | None = Field("ln", description="Living-need index in [0, 1] of a unit (priority)")
    priority: Literal["cost", "penalty", "none"] = Field(
        "cost", description="cost: distances × (1.5 − LN); penalty: unmet cost × (0.5 + LN); none")
    group_property: str | None = Field("village_code", description="Report unmet demand per this property; null: "
                                       "per unit")
    project_needs_property: str = "addresses_needs"
    capacity_property: str = "capacity"
    radius_property: str = "service_radius_km"
    default_capacity: int | None = Field(None, ge=0, description="Slots of a project without capacity; null: "
                                         "unlimited")
    default_radius_km: float = Field(10.0, gt=0, description="Radius of a project without one")
    penalty: float = Field(1000.0, gt=0, description="Cost M of one unit of unmet demand (km-equivalent; "
                           "minutes with cost network)")
    max_minutes: float = Field(60.0, gt=0, le=600, title="Longest trip",
                               description="With cost network: the longest trip to a project (minutes), in place of "
                               "the projects' service radius")
    project_types: list[str] | None = Field(None, description="Only projects of these types")
    type_property: str = "type"


class NeedsMatching(Process):
    id = "needs-matching"
    method = ("matching",)
    example_summary = ("Poor and monitored households matched to active projects by the needs on their registry "
                       "form (analyst key)")
    example = {"units": {"href": "/collections/households/items?filter=status IN ('poor', 'returned', "
                                 "'monitored')"},
               "needs_property": "reported_needs",
               "priority_property": None,
               "projects": {"href": "/collections/projects/items?filter=status IN ('planned', "
                                    "'under_construction', 'operating')"}}
    title = "Match households or villages to projects (capacitated min-cost flow)"
    description = ("Assign units to projects whose addressed needs meet theirs and whose service radius reaches "
                   "them, within project capacities, minimising distance (weighted by priority) plus a penalty for "
                   "unmet demand (OR-Tools min-cost flow).")
    keywords = ("matching", "min-cost flow", "Stage 2")
    Inputs = MatchingInputs
    outputs = {
        "assignments": OutputSpec("Assignments", "Lines from each unit to its project, with flow and distance",
                                  LAYER_SCHEMA, layer=True, style=st.graduated("distance_km", "Distance (km)",
                                                                               st.YLORRD)),
        "unmet": OutputSpec("Unmet demand per group", "demand, served, unmet, units without a compatible project",
                            LAYER_SCHEMA, layer=True, style=st.graduated("unmet_share", "Share of demand unmet",
                                                                         st.YLORRD, [0.0, 0.25, 0.5, 0.75])),
        "utilisation": OutputSpec("Utilisation per project", "capacity, used, utilisation", LAYER_SCHEMA,
                                  layer=True, style=st.graduated("utilisation", "Utilisation", st.YLGNBU,
                                                                 [0.25, 0.5, 0.75, 0.999999])),
        "total_cost": OutputSpec("Total cost", "Σ flow × cost + penalty × unmet", {"type": "number"}),
        "summary": OutputSpec("Summary", "demand, served, unmet, distances, solver status", OBJECT),
        "provenance": PROVENANCE,
    }
    data_inputs = ("units", "projects")
    def network_points(self, inputs: MatchingInputs, data: dict[str, Units]) -> tuple[Units, Units]:
        return data["units"], of_types(data["projects"], inputs.project_types, inputs.type_property)

    def run(self, inputs: MatchingInputs, data: dict[str, Units], threads: int) -> Outcome:
        units, projects = data["units"], data["projects"]
        projects = of_types(projects, inputs.project_types, inputs.type_property)
        codes = {n.value: i for i, n in enumerate(Need)}
        umask = mt.need_masks([split_list(p.get(inputs.needs_property)) for p in units.props], codes)
        pmask = mt.need_masks([split_list(p.get(inputs.project_needs_property)) for p in projects.props], codes)
        demand = (np.rint(units.column(inputs.demand_property)).astype(np.int64) if inputs.demand_property
                  else np.ones(len(units), dtype=np.int64))
        demand = np.where(umask != 0, demand, 0)  # a unit without needs asks for nothing
        cap_raw = [p.get(inputs.capacity_property) for p in projects.props]
        unlimited = int(demand.sum())
        capacity = np.array([unlimited if v is None and inputs.default_capacity is None else
                             int(inputs.default_capacity if v is None else float(v)) for v in cap_raw], dtype=np.int64)
        radius = np.array([inputs.default_radius_km if p.get(inputs.radius_property) is None else
                           float(p[inputs.radius_property]) for p in projects.props])
        if inputs.priority_property and inputs.priority != "none":
            lnv = np.clip(units.column(inputs.priority_property), 0.0, 1.0)
        else:
            lnv = np.zeros(len(units))
        factor = 1.5 - lnv if inputs.priority == "cost" else np.ones(len(units))
        pen = inputs.penalty * ((0.5 + lnv) if inputs.priority == "penalty" else np.ones(len(units)))
        ull = representative_lonlat(units.need_geometry())
        pll = representative_lonlat(projects.need_geometry()) if len(projects) else np.zeros((0, 2))
        network = NETWORK_COSTS in data
        if network:  # travel minutes on the road network, within max_minutes (unreachable pairs never match)
            minutes, _ = costs(units, projects, None, data)
            u, p, d = mt.pairs_from_matrix(minutes, inputs.max_minutes, umask, pmask)
        else:
            u, p, d = mt.candidate_pairs(ull, pll, radius, umask, pmask)
        r = mt.min_cost_match(demand, capacity, u, p, d, factor, pen)
        lines = np.asarray([shapely.LineString([ull[i], pll[j]]) for i, j in zip(r.unit, r.project, strict=True)],
                           dtype=object)
        labels = group_labels(units, inputs.group_property)
        assign = LayerOut("Assignments", "Unit → project", [f"{units.ids[i]}>{projects.ids[j]}" for i, j in
                                                             zip(r.unit, r.project, strict=True)], lines, {
            "unit_id": ("text", [units.ids[i] for i in r.unit]),
            "project_id": ("text", [projects.ids[j] for j in r.project]),
            "group": ("text", [labels[i] for i in r.unit]),
            "flow": ("integer", [int(v) for v in r.flow]),
            ("minutes" if network else "distance_km"): ("double precision", as_floats(r.distance_km)),
            "cost": ("double precision", as_floats(r.cost)),
        }, unit_column="unit_id")
        keys = sorted(set(labels))
        index = {k: i for i, k in enumerate(keys)}
        gi = np.array([index[x] for x in labels], dtype=int)
        gd = np.bincount(gi, weights=demand, minlength=len(keys))
        gu = np.bincount(gi, weights=r.unmet, minlength=len(keys))
        no_match = np.bincount(gi, weights=((demand > 0) & ~r.compatible).astype(float), minlength=len(keys))
        unmet = group_layer("Unmet demand", f"Demand per {inputs.group_property or 'unit'}", units, labels, None, {
            "demand": ("integer", [int(v) for v in gd]),
            "served": ("integer", [int(v) for v in gd - gu]),
            "unmet": ("integer", [int(v) for v in gu]),
            "unmet_share": ("double precision", [float(b / a) if a else None for a, b in zip(gd, gu, strict=True)]),
            "units_without_compatible_project": ("integer", [int(v) for v in no_match]),
        }, keys)
        finite = capacity < unlimited if unlimited else np.ones(len(capacity), dtype=bool)
        util = LayerOut("Project utilisation", "Slots used per project", projects.ids, projects.geoms, {
            "type": ("text", projects.text(inputs.type_property)),
            "capacity": ("integer", [int(c) if f else None for c, f in zip(capacity, finite, strict=True)]),
            "used": ("integer", [int(v) for v in r.used]),
            "utilisation": ("double precision", [float(v / c) if f and c > 0 else None
                                                  for v, c, f in zip(r.used, capacity, finite, strict=True)]),
            "radius_km": ("double precision", as_floats(radius)),
        })
        served = int(demand.sum() - r.unmet.sum())
        return Outcome({"total_cost": r.total_cost, "summary": {
            "units": len(units), "projects": len(projects), "demand": int(demand.sum()), "served": served,
            "unmet": int(r.unmet.sum()), "served_share": float(served / demand.sum()) if demand.sum() else None,
            "assignment_cost": float((r.cost * r.flow).sum()), "penalty_cost": float(r.total_cost - (r.cost *
                                                                                                      r.flow).sum()),
            "distance_km_total": float((r.distance_km * r.flow).sum()),
            "distance_km_mean": float((r.distance_km * r.flow).sum() / served) if served else None,
            "compatible_pairs": r.pairs, "status": r.status, "priority": inputs.priority,
            "penalty": inputs.penalty, "cost": "network minutes" if network else "great-circle km",
            "network": network_summary(data)}}, {"assignments": assign, "unmet": unmet, "utilisation": util})




NEEDS: tuple[Process, ...] = (NeedsAssessment(), NeedsMatching())
