"""Poverty measurement: the multidimensional poverty index (Alkire–Foster) from indicators or the registry.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from app.analysis import mpi as af
from app.analysis.spatial import (
    AnalysisError,
)
from app.models.codes import SOLID_FUELS
from app.processes import styles as st
from app.processes.base import (
    LAYER_SCHEMA,
    OBJECT,
    PROVENANCE,
    HouseholdsInput,
    Outcome,
    OutputSpec,
    Process,
    Strict,
    group_labels,
    group_layer,
)
from app.processes.data import Units


# --------------------------------------------------------------------------------- mpi
class MPIIndicatorIn(Strict):
    code: str = Field(min_length=1, max_length=50)
    dimension: str = Field(min_length=1, max_length=50)
    weight: float = Field(gt=0, le=1)
    property: str | None = Field(None, description="Property with the 0/1 deprivation (tables); default = code")


class MPIInputs(Strict):
    households: HouseholdsInput = Field(description="The registry of a region, or households as a table or "
                                        "features with one 0/1 column per indicator and a size")
    indicators: list[MPIIndicatorIn] | None = Field(None, description="Default: the global MPI (10 indicators)")
    k: float = Field(1 / 3, gt=0, le=1, description="Poverty cut-off of the deprivation score")
    reweight_missing: bool = Field(True, description="An indicator without any data passes its weight to the "
                                   "others of its dimension")
    missing: Literal["exclude", "not_deprived"] = Field("exclude", description="A household lacking an indicator "
                                                        "value: left out, or counted as not deprived")
    group_by: str = Field("village_code", description="Property grouping households into admin units")
    size_property: str = "size"
    vulnerable_from: float = Field(0.2, ge=0, le=1)
    severe_from: float = Field(0.5, ge=0, le=1)
    sanitation_deprived: list[str] = Field(["dry", "none"], description="Registry toilets counted as unimproved")

    @model_validator(mode="after")
    def spatial_weights(self) -> MPIInputs:
        if self.indicators is not None:
            if not self.indicators:
                raise ValueError("give at least one indicator")
            if abs(sum(i.weight for i in self.indicators) - 1.0) > 1e-6:
                raise ValueError("indicator weights must sum to 1")
            if len({i.code for i in self.indicators}) != len(self.indicators):
                raise ValueError("indicator codes must be unique")
        return self


def registry_deprivations(props: list[dict[str, Any]], poverty_line: float, sanitation: set[str]
                          ) -> dict[str, list[float | None]]:
    """The global MPI indicators from registry fields (docs/methodology.md#mpi-registry); None = no data."""

    def b(v: Any) -> float | None:
        return None if v is None else float(bool(v))

    out: dict[str, list[float | None]] = {k: [] for k in (
        "nutrition", "years_of_schooling", "school_attendance", "cooking_fuel", "sanitation", "drinking_water",
        "electricity", "housing")}
    for p in props:
        inc = p.get("net_income_pc")
        out["nutrition"].append(float(bool(p.get("food_insecure")) or (inc is not None and inc < poverty_line)))
        y = p.get("max_school_years")
        out["years_of_schooling"].append(None if y is None else float(y < 6))
        out["school_attendance"].append(float((p.get("out_of_school_children") or 0) > 0))
        fuel = p.get("cooking_fuel")
        out["cooking_fuel"].append(None if fuel is None else float(fuel in SOLID_FUELS))
        toilet = p.get("toilet")
        out["sanitation"].append(None if toilet is None else float(toilet in sanitation))
        ws = p.get("water_safe")
        out["drinking_water"].append(None if ws is None else float((not ws) or bool(p.get("water_difficulty"))))
        el = p.get("electricity")
        out["electricity"].append(None if el is None else b(not el))
        g = p.get("house_safety_grade")
        out["housing"].append(None if g is None else float(g in ("C", "D")))
    return out


class MultidimensionalPoverty(Process):
    id = "mpi"
    method = ("mpi", "mpi-registry")
    example_summary = "The global MPI per county of the demo registry (analyst key)"
    example = {"households": {"region": "tieling-demo"}, "group_by": "county_code"}
    title = "Multidimensional Poverty Index (Alkire–Foster)"
    description = ("Alkire–Foster with the global MPI's dimensions, indicators and weights by default (configurable; "
                   "k = 1/3 applied as c ≥ k − 1e-9): per admin unit and overall H, A, MPI, vulnerable and severe "
                   "shares, censored headcounts and indicator contributions.")
    keywords = ("MPI", "Alkire-Foster", "multidimensional poverty")
    Inputs = MPIInputs
    outputs = {
        "units": OutputSpec("MPI per admin unit", "H, A, MPI, vulnerable, severe, censored headcounts, "
                            "contributions", LAYER_SCHEMA, layer=True, style=st.graduated("mpi", "MPI (H × A)",
                                                                                          st.YLORRD)),
        "overall": OutputSpec("Overall", "H, A, MPI, vulnerable, severe, censored headcounts, contributions", OBJECT),
        "weights": OutputSpec("Weights used", "Per indicator after reweighting, with notes", OBJECT),
        "provenance": PROVENANCE,
    }
    data_inputs = ("households",)

    def run(self, inputs: MPIInputs, data: dict[str, Units], threads: int) -> Outcome:
        hh = data["households"]
        spec = (tuple(af.Indicator(i.code, i.dimension, i.weight) for i in inputs.indicators)
                if inputs.indicators is not None else af.GLOBAL_MPI)
        props = {i.code: (i.property or i.code) for i in inputs.indicators or ()}
        if "region" in data:  # the registry: derive the indicators from its fields
            raw = registry_deprivations(hh.props, float(data["region"].props[0]["poverty_line"]),
                                        set(inputs.sanitation_deprived))
            columns = {ind.code: raw.get(props.get(ind.code, ind.code), [None] * len(hh)) for ind in spec}
        else:
            columns = {ind.code: [_dep(p.get(props.get(ind.code, ind.code)), ind.code, hh.ids[i])
                                  for i, p in enumerate(hh.props)] for ind in spec}
        available = {c for c, v in columns.items() if any(x is not None for x in v)}
        if inputs.reweight_missing:
            wmap, notes = af.reweight(spec, available)
        else:
            missing = [i.code for i in spec if i.code not in available]
            if missing:
                raise AnalysisError(f"No data for the indicators {', '.join(missing)}; allow reweight_missing.")
            wmap, notes = {i.code: i.weight for i in spec}, []
        codes = [i.code for i in spec if i.code in wmap]
        g = np.array([[np.nan if v is None else v for v in columns[c]] for c in codes], dtype=float).T.reshape(
            len(hh), len(codes))
        gaps = np.isnan(g).any(axis=1)
        if inputs.missing == "exclude":
            keep = ~gaps
        else:
            keep = np.ones(len(hh), dtype=bool)
            g = np.nan_to_num(g, nan=0.0)
        size = hh.column(inputs.size_property)
        labels = group_labels(hh, inputs.group_by)
        kept = np.flatnonzero(keep)
        w = np.array([wmap[c] for c in codes])
        r = af.alkire_foster(g[kept], w, size[kept], inputs.k, [labels[i] for i in kept], codes,
                             inputs.vulnerable_from, inputs.severe_from)
        keys = sorted(r.groups)
        cols: dict[str, tuple[str, list[Any]]] = {}
        for name in ("households", "persons", "poor_persons", "H", "A", "MPI", "vulnerable", "severe"):
            pg = "integer" if name == "households" else "double precision"
            cols[name.lower()] = (pg, [r.groups[k][name] for k in keys])
        for c in codes:
            cols[f"ch_{c}"] = ("double precision", [r.groups[k]["censored_headcount"][c] for k in keys])  # type: ignore[index]
        for c in codes:
            cols[f"contrib_{c}"] = ("double precision", [r.groups[k]["contribution"][c] for k in keys])  # type: ignore[index]
        sub = hh.subset(keep)
        layer = group_layer("Multidimensional poverty", f"Alkire–Foster MPI per {inputs.group_by}", sub,
                             [labels[i] for i in kept], data.get("groups"), cols, keys)
        return Outcome({
            "overall": {**r.overall, "k": inputs.k, "households_excluded_missing": int((~keep).sum())},
            "weights": {"weights": wmap, "notes": notes, "k": inputs.k},
        }, {"units": layer})


def _dep(v: Any, code: str, fid: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float) and v in (0, 1):
        return float(v)
    if isinstance(v, str) and v.strip().lower() in ("0", "1", "true", "false"):
        return float(v.strip().lower() in ("1", "true"))
    raise AnalysisError(f"households: {fid!r} has {code} = {v!r}; a deprivation is 0 or 1 (or null).")




POVERTY: tuple[Process, ...] = (MultidimensionalPoverty(),)
