"""What every process is made of: typed inputs (pydantic → JSON Schema), output specs, the layers and values a run
returns, spatial weights and the helpers for grouped layers. Each ``run`` takes the parsed inputs and the resolved
data (``Units``) and calls the pure functions of ``app.analysis``; it knows nothing of HTTP or SQL. Spatial outputs
come back as ``LayerOut`` and are published as collections by the job machinery (``publish``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import shapely
from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.analysis.spatial import (
    AnalysisError,
    WeightsSpec,
    build_weights,
    geoms_to_metric,
    metric_crs,
    representative_lonlat,
    to_metric,
)
from app.models.codes import Role
from app.processes import styles as st
from app.processes.data import DataInput, NetworkCosts, Units
from app.processes.registry import RegistryRef


@dataclass
class LayerOut:
    title: str
    description: str
    ids: list[str]
    geoms: np.ndarray | None
    columns: dict[str, tuple[str, Any]]  # name -> (PostgreSQL type, values: a list or a numpy array)
    unit_column: str | None = None  # the column with each row's unit (area or village), when the id is not it

    def __getstate__(self) -> dict[str, Any]:  # geometries as WKB: pickling shapely objects one by one is slow
        state = dict(self.__dict__)
        state["geoms"] = None if self.geoms is None else shapely.to_wkb(self.geoms)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if state["geoms"] is not None:
            self.geoms = np.asarray(shapely.from_wkb(state["geoms"]), dtype=object)


@dataclass
class Outcome:
    values: dict[str, Any]
    layers: dict[str, LayerOut] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputSpec:
    title: str
    description: str
    schema: dict[str, Any]
    layer: bool = False
    style: st.Style | None = None  # how the published layer is drawn (app.processes.styles)
    # a link to items of a collection: the value is {"path": "/collections/…/items", "params": {…}}, returned as a
    # link with this service's address
    link: bool = False


LAYER_SCHEMA = {"type": "object", "contentMediaType": "application/geo+json",
                "description": "Published as an OGC API - Features collection; returned as a link by default."}
NUMBER = {"type": "number"}
NUMBER_OR_NULL = {"type": ["number", "null"]}  # null where a statistic is undefined (no permutations: no p_sim)
PROVENANCE = OutputSpec("Provenance", "Inputs, parameters, library versions and seed of the run.", {"type": "object"})


class Strict(BaseModel):
    """Process inputs: unknown members are refused, and values are taken as their JSON type says (no "1" for 1,
    no true for 1), as the OpenAPI document declares them."""

    model_config = ConfigDict(extra="forbid", strict=True)


ANALYSIS_CRS_HELP = ("EPSG code of the metric CRS distances and areas are measured in; default: the CRS the data's "
                     "region declares, else the UTM zone of the data")


class Weights(Strict):
    """Spatial weights (docs/methodology.md#weights). Default: queen contiguity for polygons, 8 nearest neighbours
    for points."""

    type: Literal["queen", "rook", "knn", "distance"] | None = None
    k: int = Field(8, ge=1, le=100, description="Neighbours of knn weights")
    threshold_km: float | None = Field(None, gt=0, description="Band of distance weights (km)")

    def spec(self) -> WeightsSpec:
        return WeightsSpec(self.type, self.k, self.threshold_km)


class Inference(Strict):
    permutations: int = Field(999, ge=0, le=99_999, description="Random permutations for pseudo p-values")
    seed: int = Field(12345, ge=0, le=2**32 - 1, description="Seed of the permutations (reproducible results)")
    analysis_crs: int | None = Field(None, description=ANALYSIS_CRS_HELP)


NETWORK_COSTS = "network_costs"  # the key of the travel times in a job's data (cost "network")


class CostChoice(Strict):
    """How distances are measured (docs/methodology.md#road-networks): great-circle km (the default) or travel
    time in minutes on the region's current road network (imported with ``tpa import roads``)."""

    cost: Literal["straight", "network"] = Field(
        "straight", description="straight: great-circle km; network: travel time (minutes) on the region's road "
        "network — thresholds and catchments are then in minutes")
    mode: Literal["motor", "walk"] = Field("motor", description="Travel mode on the network")
    max_snap_m: float = Field(1000.0, gt=0, le=50_000, title="Maximum snap distance",
                              description="Farthest a point may be from a road it is snapped to (m; walked "
                              "off-road); farther points are unreachable and listed")

    @model_validator(mode="after")
    def _one_cost(self) -> CostChoice:
        if self.cost == "network" and getattr(self, "cost_matrix", None) is not None:
            raise ValueError("give either cost_matrix or cost 'network', not both")
        return self


def costs(demand: Units, supply: Units, matrix: list[list[float | None]] | None, data: dict[str, Units]
          ) -> tuple[np.ndarray, str]:
    """The demand × supply costs of a run and what they are: network minutes (computed for the job), a given
    matrix, or great-circle km."""
    from app.analysis.spatial import great_circle_km

    net = data.get(NETWORK_COSTS)
    if isinstance(net, NetworkCosts) and net.minutes is not None:
        if net.minutes.shape != (len(demand), len(supply)):
            raise AnalysisError("the network travel times do not match the inputs")
        summary = net.summary or {}
        return net.minutes, f"network minutes ({summary.get('mode', 'motor')})"
    if matrix is not None:
        if len(matrix) != len(demand) or any(len(row) != len(supply) for row in matrix):
            raise AnalysisError(f"cost_matrix must have {len(demand)} rows of {len(supply)} values "
                                "(demand × supply, in input order).")
        c = np.array([[np.nan if v is None else float(v) for v in row] for row in matrix], dtype=float) \
            if matrix else np.zeros((0, 0))
        if c.shape != (len(demand), len(supply)):
            raise AnalysisError(f"cost_matrix must have {len(demand)} rows of {len(supply)} values "
                                "(demand × supply, in input order).")
        if (np.nan_to_num(c) < 0).any():
            raise AnalysisError("cost_matrix has negative costs.")
        return c, "cost matrix"
    d = representative_lonlat(demand.need_geometry())
    s = representative_lonlat(supply.need_geometry()) if len(supply) else np.zeros((0, 2))
    return great_circle_km(d, s), "great-circle km"


def snap_columns(data: dict[str, Units], side: int, rows: np.ndarray | None = None) -> dict[str, tuple[str, Any]]:
    """The off-road distance of each feature of a layer to the road it was snapped to (``side`` 0: the origins,
    1: the destinations; ``rows``: which of them the layer's rows are), when the run was on the network."""
    net = data.get(NETWORK_COSTS)
    if not isinstance(net, NetworkCosts) or net.snap_m is None:
        return {}
    snap = np.asarray(net.snap_m[side], dtype=float)
    return {"snap_m": ("double precision", snap if rows is None else snap[np.asarray(rows, dtype=int)])}


def network_summary(data: dict[str, Units]) -> dict[str, Any] | None:
    """What a result says of the network it was computed on (None: it was not)."""
    net = data.get(NETWORK_COSTS)
    return net.summary if isinstance(net, NetworkCosts) else None


def metric_xy(units: Units, epsg: int | None) -> tuple[np.ndarray, np.ndarray, Any]:
    geoms = units.need_geometry()
    lonlat = representative_lonlat(geoms)
    crs = metric_crs(lonlat, epsg)
    return lonlat, to_metric(lonlat, crs), crs


def spatial_weights(units: Units, spec: Weights, epsg: int | None,
             metric: tuple[np.ndarray, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """Weights for the units; ``metric`` = (xy, crs) when the caller has projected them already."""
    geoms = units.need_geometry()
    xy, crs = metric if metric is not None else metric_xy(units, epsg)[1:]
    metric_geoms = geoms_to_metric(geoms, crs) if spec.type in (None, "queen", "rook") else geoms
    built = build_weights(metric_geoms, xy, spec.spec())
    return built.w, {"type": built.type, "k": spec.k if built.type == "knn" else None,
                     "threshold_km": spec.threshold_km, "islands_attached": built.islands_attached,
                     "mean_neighbours": round(built.mean_neighbours, 6), "analysis_crs": f"EPSG:{crs.to_epsg()}"}


def as_floats(a: Any) -> np.ndarray:
    """A float column of a result layer (NaN and ±inf are stored as null). Kept as an array: it travels back
    from the analysis process pickled, where a list of 25,000 Python floats costs a hundred times more."""
    return np.asarray(a, dtype=float)


class Process:
    id: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    version: ClassVar[str] = "1.0.0"
    keywords: ClassVar[tuple[str, ...]] = ()
    Inputs: ClassVar[type[BaseModel]]
    outputs: ClassVar[dict[str, OutputSpec]]
    data_inputs: ClassVar[tuple[str, ...]]
    context_data: ClassVar[tuple[str, ...]] = ()  # tables the service adds (e.g. the default cause table)
    # Sections of docs/methodology.md that define what the process computes (linked from its description)
    method: ClassVar[tuple[str, ...]] = ()
    # Inputs that run as they are on the demo region (the OpenAPI example, the README's bodies; tested)
    example: ClassVar[dict[str, Any]]
    example_summary: ClassVar[str]

    def run(self, inputs: Any, data: dict[str, Units], threads: int) -> Outcome:
        raise AnalysisError(f"The process {self.id} cannot run.")

    def data_values(self, inputs: Any) -> list[tuple[str, tuple[str | int, ...], Any]]:
        """The data inputs of a run: (name of the resolved data, path of the value in the inputs, value). The
        ``data_inputs`` by default; a process with a list of data inputs adds one entry per item."""
        return [(name, (name,), getattr(inputs, name, None)) for name in self.data_inputs]

    # cost "network": the inputs whose features are the origins and the destinations of the travel times
    network_between: ClassVar[tuple[str, str] | None] = None

    def network_points(self, inputs: Any, data: dict[str, Units]) -> tuple[Units, Units]:
        """The origins and destinations of the travel times (the features of ``network_between``)."""
        assert self.network_between is not None
        return data[self.network_between[0]], data[self.network_between[1]]

    # A process that works on the service's own tables (reads and writes them in one transaction) rather than on
    # resolved data: the job worker runs ``run_in_database`` itself, within the job's time limit, instead of
    # forking an analysis child; ``authorize`` is called when the job is submitted, before anything is recorded.
    in_database: ClassVar[bool] = False

    async def authorize(self, app: Any, inputs: Any, role: Role | None) -> None:
        return None

    async def run_in_database(self, job: DatabaseJob, inputs: Any) -> Outcome:
        raise AnalysisError(f"The process {self.id} does not run in the database.")


@dataclass
class DatabaseJob:
    """What a process working on the service's tables gets from the job worker."""

    app: Any
    run_id: Any  # uuid.UUID of the job
    role: Role | None
    actor: str | None
    # runs the process's pure ``run`` on ``data`` in the killable analysis child (time limit, dismissal)
    analyse: Callable[[dict[str, Any]], Awaitable[Outcome]]




HouseholdsInput = RegistryRef | DataInput
OBJECT = {"type": "object"}


def geoms_of(units: Units | None, keys: list[str], codes: list[str] | None = None) -> np.ndarray | None:
    """The geometries of the features whose id (or code, when ``codes`` gives each feature's) is each key; None
    unless every key has one."""
    if units is None or units.geoms is None:
        return None
    where = {g: i for i, g in enumerate(codes or units.ids)}
    found = [units.geoms[where[k]] if k in where else None for k in keys]
    return np.asarray(found, dtype=object) if all(g is not None for g in found) else None


def group_layer(title: str, description: str, units: Units, labels: list[str | None], groups: Units | None,
                 columns: dict[str, tuple[str, list[Any]]], keys: list[str]) -> LayerOut:
    """A layer with one feature per group key: the group's own geometry when known (administrative units),
    else the mean position of its members, else none."""
    geoms = geoms_of(groups, keys)
    if geoms is None and units.geoms is not None and len(keys):
        ll = representative_lonlat(units.geoms)
        lab = np.asarray(labels, dtype=object)
        geoms = np.asarray([shapely.Point(*ll[lab == k].mean(axis=0)) for k in keys], dtype=object)
    return LayerOut(title, description, keys, geoms, columns)


def of_types(projects: Units, types: list[str] | None, prop: str) -> Units:
    """The projects whose type (property ``prop``) is one of ``types``; all of them when ``types`` is None."""
    if types is None:
        return projects
    return projects.subset(np.array([t in types for t in projects.text(prop)], dtype=bool))


def group_labels(units: Units, prop: str | None) -> list[str]:
    if prop is None:
        return list(units.ids)
    vals = units.text(prop)
    if any(v is None for v in vals):
        i = next(i for i, v in enumerate(vals) if v is None)
        raise AnalysisError(f"{units.name}: feature {units.ids[i]!r} has no '{prop}'.")
    return [str(v) for v in vals]


def split_list(value: Any) -> list[str]:
    """Needs given as a list or a comma-separated text."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [s.strip() for s in str(value).strip("{}").split(",") if s.strip()]
