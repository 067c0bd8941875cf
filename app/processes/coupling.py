"""Whether living needs and production capacity are in balance (Stage 3): coupling coordination.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from app.analysis import coupling as cp
from app.analysis.spatial import (
    AnalysisError,
)
from app.processes import styles as st
from app.processes.base import (
    LAYER_SCHEMA,
    OBJECT,
    PROVENANCE,
    LayerOut,
    Outcome,
    OutputSpec,
    Process,
    Strict,
    as_floats,
    group_labels,
)
from app.processes.data import DataInput, Units


# --------------------------------------------------------------------------------- coupling-coordination
class IndicatorSpec(Strict):
    property: str
    direction: Literal["+", "-"] = Field("+", description="+ benefit, − cost indicator")
    weight: float | None = Field(None, ge=0, description="Weight when weighting = given")


class Subsystem(Strict):
    name: str = Field(min_length=1, max_length=50)
    indicators: list[IndicatorSpec] = Field(min_length=1)
    alpha: float | None = Field(None, ge=0, le=1, description="Contribution to T; default 1/n")


class CouplingInputs(Strict):
    units: DataInput
    subsystems: list[Subsystem] = Field(min_length=2, description="Two or more subsystems; the first two are "
                                        "living (U1) and production (U2) for the lag type")
    weighting: Literal["entropy", "given"] = "entropy"
    period_property: str | None = Field(None, description="Property with the period (e.g. year) of a row")
    unit_property: str | None = Field(None, description="Property identifying the unit across periods; default "
                                      "the feature id")
    normalise_over: Literal["pooled", "period"] = Field("pooled", description="Min–max and entropy over all "
                                                        "periods (comparable) or per period")
    lag_tolerance: float = Field(0.1, ge=0, le=1, description="|U1 − U2| up to this is synchronous (in standard "
                                 "deviations with the relative basis)")
    lag_basis: Literal["level", "relative"] = Field(
        "level", description="Lag type from U1 and U2 themselves (level), or from their standard scores among the "
        "units of the same normalisation block (relative: which subsystem stands further below its average)")

    @model_validator(mode="after")
    def _subsystems(self) -> CouplingInputs:
        alphas = [s.alpha for s in self.subsystems]
        if any(a is not None for a in alphas):
            if any(a is None for a in alphas):
                raise ValueError("give alpha for every subsystem or for none")
            if abs(sum(alphas) - 1.0) > 1e-9:  # type: ignore[arg-type]
                raise ValueError("the alphas must sum to 1")
        if self.weighting == "given":
            for s in self.subsystems:
                ws = [i.weight for i in s.indicators]
                if any(w is None for w in ws) or sum(ws) <= 0:  # type: ignore[misc]
                    raise ValueError(f"weighting 'given': every indicator of '{s.name}' needs a weight, not all 0")
        names = [s.name for s in self.subsystems]
        if len(set(names)) != len(names):
            raise ValueError("subsystem names must be unique")
        return self


class CouplingCoordination(Process):
    id = "coupling-coordination"
    method = ("entropy", "coupling", "coupling-bands", "lag-type")
    example_summary = "Living conditions against production capacity of the demo villages"
    example = {"units": {"href": "/collections/villages/items"},
               "subsystems": [{"name": "living",
                               "indicators": [{"property": "unsafe_water_households", "direction": "-"},
                                              {"property": "km_to_township", "direction": "-"},
                                              {"property": "licensed_doctors"}]},
                              {"name": "production",
                               "indicators": [{"property": "labour_force"},
                                              {"property": "arable_mu"},
                                              {"property": "collective_income"},
                                              {"property": "migrant_workers", "direction": "-"}]}]}
    title = "Coupling coordination of living needs and production capacity"
    description = ("Entropy (or given) weights per subsystem, U_i = Σ w_j x'_ij, the coupling C, development T and "
                   "coordination D = √(C·T) with their classes (ten D bands, four C bands, Chinese and English) and "
                   "the lag type; n subsystems and several periods.")
    keywords = ("coupling coordination", "耦合协调度", "entropy weights", "Stage 3")
    Inputs = CouplingInputs
    outputs = {
        "units": OutputSpec("Coupling per unit and period", "u1…un, c, t, d, classes and lag type", LAYER_SCHEMA,
                            layer=True, style=st.D_BANDS),
        "weights": OutputSpec("Weights", "Per subsystem and indicator: weight, entropy, divergence", OBJECT),
        "summary": OutputSpec("Summary", "Counts per D band and lag type, means per period", OBJECT),
        "provenance": PROVENANCE,
    }
    data_inputs = ("units",)

    def run(self, inputs: CouplingInputs, data: dict[str, Units], threads: int) -> Outcome:
        units = data["units"]
        if len(units) == 0:
            raise AnalysisError("units: no rows.")
        periods = group_labels(units, inputs.period_property) if inputs.period_property else ["all"] * len(units)
        unit_ids = group_labels(units, inputs.unit_property) if inputs.unit_property else list(units.ids)
        keys = [f"{u}:{p}" if inputs.period_property else u for u, p in zip(unit_ids, periods, strict=True)]
        if len(set(keys)) != len(keys):
            raise AnalysisError("units: a unit appears twice in one period.")
        blocks = ([np.arange(len(units))] if inputs.normalise_over == "pooled" else
                  [np.flatnonzero(np.array(periods) == p) for p in sorted(set(periods))])
        n = len(inputs.subsystems)
        u = np.zeros((len(units), n))
        weights: dict[str, Any] = {}
        for s_i, sub in enumerate(inputs.subsystems):
            x = np.column_stack([units.column(ind.property) for ind in sub.indicators])
            positive = np.array([ind.direction == "+" for ind in sub.indicators])
            wdesc: dict[str, Any] = {}
            for b_i, rows in enumerate(blocks):
                xn = cp.normalise(x[rows], positive)
                if inputs.weighting == "entropy":
                    ew = cp.entropy_weights(xn)
                    w, e, d, note = ew.weights, ew.entropy, ew.divergence, ew.note
                else:
                    given = np.array([ind.weight or 0.0 for ind in sub.indicators])
                    w, e, d, note = given / given.sum(), None, None, None
                u[rows, s_i] = xn @ w
                label = "pooled" if inputs.normalise_over == "pooled" else sorted(set(periods))[b_i]
                wdesc[label] = {"indicators": {ind.property: {
                    "direction": ind.direction, "weight": float(w[j]),
                    "entropy": None if e is None else float(e[j]),
                    "divergence": None if d is None else float(d[j])} for j, ind in enumerate(sub.indicators)},
                    **({"note": note} if note else {})}
            weights[sub.name] = wdesc
        alpha = np.array([s.alpha if s.alpha is not None else 1.0 / n for s in inputs.subsystems])
        c, t, d = cp.coupling(u, alpha)
        dcls = [cp.d_band(v) for v in d]
        ccls = [cp.c_band(v) for v in c]
        cols: dict[str, tuple[str, list[Any]]] = {
            "unit": ("text", unit_ids), "period": ("text", periods if inputs.period_property else [None] * len(u))}
        for s_i in range(n):
            cols[f"u{s_i + 1}"] = ("double precision", as_floats(u[:, s_i]))
        cols.update({
            "c": ("double precision", as_floats(c)), "t": ("double precision", as_floats(t)),
            "d": ("double precision", as_floats(d)), "d_class": ("integer", dcls),
            "d_band_zh": ("text", [cp.D_BANDS[k - 1][0] for k in dcls]),
            "d_band_en": ("text", [cp.D_BANDS[k - 1][1] for k in dcls]),
            "c_class": ("integer", ccls),
            "c_band_zh": ("text", [cp.C_BANDS[k - 1][0] for k in ccls]),
            "c_band_en": ("text", [cp.C_BANDS[k - 1][1] for k in ccls]),
        })
        lu = cp.standard_scores(u[:, :2], blocks) if inputs.lag_basis == "relative" else u[:, :2]
        lag = [cp.lag_type(a, b, inputs.lag_tolerance) for a, b in zip(lu[:, 0], lu[:, 1], strict=True)]
        cols["lag_type"] = ("text", lag)
        layer = LayerOut("Coupling coordination", "U per subsystem, C, T, D, bands and lag type", keys, units.geoms,
                         cols, unit_column="unit")
        per_period = {}
        for p in sorted(set(periods)):
            m = np.array(periods) == p
            per_period[p] = {"units": int(m.sum()), "mean_d": float(d[m].mean()), "mean_c": float(c[m].mean()),
                             "mean_t": float(t[m].mean()),
                             **{f"mean_u{k + 1}": float(u[m, k].mean()) for k in range(n)}}
        summary = {
            "subsystems": [s.name for s in inputs.subsystems], "alpha": [float(a) for a in alpha],
            "d_bands": {f"{k} {cp.D_BANDS[k - 1][1]}": dcls.count(k) for k in range(1, 11) if dcls.count(k)},
            "lag_types": {k: lag.count(k) for k in cp.LAG_TYPES if lag.count(k)},
            "periods": per_period,
        }
        return Outcome({"weights": weights, "summary": summary}, {"units": layer})




COUPLING: tuple[Process, ...] = (CouplingCoordination(),)
