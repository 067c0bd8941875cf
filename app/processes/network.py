"""Isochrones on the road network (docs/methodology.md#isochrones): for each site (a facility, a project site), the
area from which it is reached within each of the given travel times. The travel times to the sites are computed in
the database with pgRouting (``app.services.roads.reach``); the polygons are drawn by ``app.analysis.network`` in
the analysis child, like every analysis."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import shapely
from pydantic import Field, field_validator
from pyproj import Transformer

from app.analysis import network as nw
from app.analysis.spatial import AnalysisError, representative_lonlat
from app.processes import styles as st
from app.processes.base import (
    LAYER_SCHEMA,
    PROVENANCE,
    DatabaseJob,
    LayerOut,
    Outcome,
    OutputSpec,
    Process,
    Strict,
)
from app.processes.data import DataInput


class IsochroneInputs(Strict):
    sites: DataInput = Field(description="Facilities or project sites (points, or the point on each surface), "
                             "e.g. /collections/facilities/items?class=clinic")
    minutes: list[float] = Field([15.0, 30.0, 60.0], min_length=1, max_length=6,
                                 description="Travel times (minutes) of the isochrones, e.g. [15, 30, 60]")
    mode: Literal["motor", "walk"] = Field("motor", description="Travel mode on the network")
    max_snap_m: float = Field(1000.0, gt=0, le=50_000, title="Maximum snap distance",
                              description="Farthest a point may be from a road it is snapped to (m; walked "
                              "off-road); farther points are unreachable and listed")
    cell_m: float = Field(100.0, ge=5, le=5000, title="Cell size",
                          description="Size of the grid's cells (m): each cell's centre is measured like a point of a "
                          "travel-time matrix; the polygons follow the cells")
    dissolve: bool = Field(False, description="One polygon per travel time for all the sites together, instead of "
                           "one per site and travel time")

    @field_validator("minutes")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(not 0 < m <= 600 for m in v):
            raise ValueError("each travel time must be in (0, 600] minutes")
        return sorted(set(v))


class Isochrones(Process):
    id = "isochrones"
    title = "Isochrones: catchments by travel time on the road network"
    description = ("For each site (facility or project site), the area from which it is reached within each "
                   "travel time on the region's current road network (pgRouting), the walk off the road included; "
                   "sites farther than the snap distance from every road are listed, not drawn.")
    keywords = ("isochrones", "catchments", "travel time", "road network", "Stage 1")
    method = ("isochrones", "road-networks")
    Inputs = IsochroneInputs
    in_database = True
    data_inputs = ("sites",)
    outputs = {
        "isochrones": OutputSpec("Isochrones", "One polygon per site and travel time (or per travel time, "
                                 "dissolved), with its area", LAYER_SCHEMA, layer=True,
                                 style=st.distinct("minutes", "Travel time (minutes)")),
        "summary": OutputSpec("Summary", "The network, mode and speeds used, sites drawn and sites not snapped, "
                              "area per travel time", {"type": "object"}),
        "provenance": PROVENANCE,
    }
    example = {"sites": {"href": "/collections/facilities/items?class=hospital&filter=admin_code LIKE '211223%'"},
               "minutes": [15, 30, 60], "mode": "motor", "cell_m": 200}
    example_summary = "The areas within 15, 30 and 60 minutes by car of the hospitals of Xifeng, in the hilly east"

    async def run_in_database(self, job: DatabaseJob, inputs: IsochroneInputs) -> Outcome:
        from app.processes import inputs as job_inputs
        from app.services.roads import reach

        app = job.app
        data = await job_inputs.resolve(app, self, inputs, job.role, job.actor)
        sites = data["sites"]
        if not len(sites):
            raise AnalysisError("sites: no features")
        network, crs = await job_inputs.region_network(app, inputs, data, "isochrones")
        lonlat = representative_lonlat(sites.need_geometry())
        r = await reach(app.state.engine, network, inputs.mode, lonlat, max(inputs.minutes) * 60, inputs.max_snap_m)
        return await job.analyse({
            "ids": sites.ids, "crs": crs,
            "snap": {k: getattr(r.sites, k) for k in ("edge", "fraction", "distance_m")},
            "to_site": r.to_site, "extents": r.extents, "edges": [dict(e) for e in r.edges],
            "offroad_kmh": network.speeds.offroad_kmh, "network": network.describe(),
            "speeds": network.speeds.to_json()})

    def run(self, inputs: IsochroneInputs, data: dict[str, Any], threads: int) -> Outcome:
        crs = data["crs"]
        to_m = Transformer.from_crs(4326, crs, always_xy=True)
        to_ll = Transformer.from_crs(crs, 4326, always_xy=True)
        rows = data["edges"]
        lines = shapely.from_wkb([e["wkb"] for e in rows]) if rows else np.array([], dtype=object)
        lines = shapely.transform(lines, lambda xy: np.column_stack(to_m.transform(xy[:, 0], xy[:, 1])))
        es = nw.EdgeSet(np.array([e["edge_id"] for e in rows], dtype=np.int64),
                        np.array([e["source"] for e in rows], dtype=np.int64),
                        np.array([e["target"] for e in rows], dtype=np.int64),
                        np.array([e["cost"] for e in rows], dtype=float),
                        np.array([e["reverse_cost"] for e in rows], dtype=float), lines)
        snap = data["snap"]
        off = data["offroad_kmh"] / 3.6
        ids: list[str] = []
        geoms: list[Any] = []
        cols: dict[str, list[Any]] = {"site_id": [], "minutes": [], "area_km2": []}
        by_t: dict[float, list[Any]] = {m: [] for m in inputs.minutes}
        not_snapped = [sid for sid, e in zip(data["ids"], snap["edge"], strict=True) if e < 0]
        extents: list[tuple[float, float, float, float] | None] = []
        for e in data["extents"]:
            if e is None:
                extents.append(None)
                continue
            ex, ey = to_m.transform([e[0], e[0], e[2], e[2]], [e[1], e[3], e[1], e[3]])
            extents.append((min(ex), min(ey), max(ex), max(ey)))
        drawn = [e for e in extents if e is not None]
        grid = nw.snap_grid(es, (min(e[0] for e in drawn), min(e[1] for e in drawn), max(e[2] for e in drawn),
                                 max(e[3] for e in drawn)), inputs.cell_m, inputs.max_snap_m) if drawn else None
        for k, sid in enumerate(data["ids"]):
            extent = extents[k]
            if snap["edge"][k] < 0 or extent is None or grid is None:
                continue
            site = nw.SiteOnNetwork(int(snap["edge"][k]), float(snap["fraction"][k]),
                                    float(snap["distance_m"][k]) / off)
            polys = nw.isochrones(es, grid, data["to_site"][k], site, extent, [m * 60 for m in inputs.minutes],
                                  off, inputs.max_snap_m)
            for m, poly in zip(inputs.minutes, polys, strict=True):
                if inputs.dissolve:
                    by_t[m].append(poly)
                    continue
                ids.append(f"{sid}:{m:g}")
                geoms.append(poly)
                cols["site_id"].append(sid)
                cols["minutes"].append(m)
                cols["area_km2"].append(poly.area / 1e6)
        if inputs.dissolve:
            for m, polys in by_t.items():
                poly = shapely.union_all(polys) if polys else shapely.Polygon()
                ids.append(f"{m:g}")
                geoms.append(poly)
                cols["site_id"].append(None)
                cols["minutes"].append(m)
                cols["area_km2"].append(poly.area / 1e6)
        ll = [shapely.transform(g, lambda xy: np.column_stack(to_ll.transform(xy[:, 0], xy[:, 1]))) for g in geoms]
        area = {f"{m:g}": a for m, a in zip(cols["minutes"], cols["area_km2"], strict=True)}
        layer = LayerOut("Isochrones", f"Areas within {', '.join(f'{m:g}' for m in inputs.minutes)} minutes "
                         f"({inputs.mode})", ids, np.asarray(ll, dtype=object), {
                             "site_id": ("text", cols["site_id"]),
                             "minutes": ("double precision", np.asarray(cols["minutes"], dtype=float)),
                             "area_km2": ("double precision", np.asarray(cols["area_km2"], dtype=float))},
                         unit_column=None if inputs.dissolve else "site_id")
        return Outcome({"summary": {
            "cost": "network", "mode": inputs.mode, "network": data["network"], "speeds": data["speeds"],
            "max_snap_m": inputs.max_snap_m, "cell_m": inputs.cell_m, "sites": len(data["ids"]),
            "sites_drawn": len(data["ids"]) - len(not_snapped), "sites_not_snapped": len(not_snapped),
            "sites_not_snapped_ids": not_snapped[:100],
            "area_km2_by_minutes": area if inputs.dissolve else None}}, {"isochrones": layer})


NETWORK: tuple[Process, ...] = (Isochrones(),)
